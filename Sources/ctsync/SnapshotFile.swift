import ConntrackCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads JSON-lines files (snapshots, `dump -o json` output) a block at a time: memory
/// stays at one block plus the entries, whatever the file's size.
enum JSONLinesFile {
    struct ReadError: Error, CustomStringConvertible {
        var description: String
    }

    /// Calls `line` with each line's bytes (without the newline) and its 1-based number.
    /// `path` "-" is standard input.
    static func forEachLine(_ path: String, _ line: (UnsafeBufferPointer<UInt8>, Int) throws -> Void) throws {
        let fd = path == "-" ? 0 : open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ReadError(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { if fd != 0 { close(fd) } }
        let blockSize = 1 << 20
        var buffer = [UInt8](repeating: 0, count: blockSize)
        var filled = 0
        var number = 0
        while true {
            if filled == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }  // a line longer than a block
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ReadError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            let end = filled + n
            var consumed = 0
            try buffer.withUnsafeBufferPointer { p in
                var start = 0
                var from = filled
                let base = p.baseAddress!
                while from < end, let nl = memchr(base + from, 10, end - from) {
                    let i = base.distance(to: nl.assumingMemoryBound(to: UInt8.self))
                    number += 1
                    try line(UnsafeBufferPointer(rebasing: p[start..<i]), number)
                    start = i + 1
                    from = i + 1
                }
                if n == 0 && start < end {                 // last line without a newline
                    number += 1
                    try line(UnsafeBufferPointer(rebasing: p[start..<end]), number)
                    start = end
                }
                consumed = start
            }
            if n == 0 { return }
            if consumed > 0 {
                buffer.withUnsafeMutableBytes { b in
                    if end > consumed { memmove(b.baseAddress!, b.baseAddress! + consumed, end - consumed) }
                }
            }
            filled = end - consumed
        }
    }

    /// The file's size, for reserving capacity (0 when unknown).
    static func size(_ path: String) -> Int {
        var st = stat()
        return path != "-" && stat(path, &st) == 0 ? Int(st.st_size) : 0
    }
}

/// A snapshot file read whole: header (when present), entries and expectations.
struct SnapshotContents {
    var header: SnapshotHeader?
    var entries: [ConntrackEntry] = []
    var expectations: [Expectation] = []

    struct LineError: Error, CustomStringConvertible {
        var file: String, line: Int, message: String
        var description: String { "\(file):\(line): \(message)" }
    }

    /// Reads `path`; the first bad line throws (naming file and line), so callers can
    /// refuse the whole file before changing anything.
    static func read(_ path: String) throws -> SnapshotContents {
        var c = SnapshotContents()
        c.entries.reserveCapacity(JSONLinesFile.size(path) / 300)
        let expectationPrefix = Array(#"{"v":1,"kind":"expectation""#.utf8)
        let gapPrefix = Array(#"{"v":1,"gap""#.utf8)
        try JSONLinesFile.forEachLine(path) { bytes, n in
            if bytes.isEmpty || bytes.allSatisfy({ $0 == 32 || $0 == 13 }) { return }
            do {
                if bytes.starts(with: expectationPrefix) {
                    c.expectations.append(try ConntrackJSON.decodeExpectation(line: String(decoding: bytes, as: UTF8.self)))
                    return
                }
                if bytes.starts(with: gapPrefix) { return }
                if n == 1, let h = SnapshotHeader(line: Substring(String(decoding: bytes, as: UTF8.self))) {
                    c.header = h
                    return
                }
                c.entries.append(try ConntrackJSON.decode(bytes: bytes).0)
            } catch {
                throw LineError(file: path, line: n, message: "\(error)")
            }
        }
        return c
    }
}
