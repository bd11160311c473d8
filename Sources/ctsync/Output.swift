#if canImport(Glibc)
import Glibc
#endif

/// Buffered writes to a file descriptor in large chunks (one write(2) per ~256 KiB).
final class OutputSink {
    let fd: Int32
    var bytes: [UInt8] = []
    let threshold: Int

    init(fd: Int32 = 1, threshold: Int = 256 * 1024) {
        self.fd = fd
        self.threshold = threshold
        bytes.reserveCapacity(threshold + 8192)
    }

    @inline(__always) func lineDone() {
        bytes.append(10)
        if bytes.count >= threshold { flush() }
    }

    func write(_ s: String) {
        bytes.append(string: s)
        if bytes.count >= threshold { flush() }
    }

    func flush() {
        var off = 0
        bytes.withUnsafeBytes { p in
            while off < p.count {
                let n = Glibc.write(fd, p.baseAddress! + off, p.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    // A closed pipe (e.g. `| head`) ends the program quietly, as conntrack does.
                    if errno == EPIPE { exit(0) }
                    return
                }
                off += n
            }
        }
        bytes.removeAll(keepingCapacity: true)
    }
}

import ConntrackCore

/// A one-line message on stderr.
func printError(_ s: String) {
    let line = s.hasSuffix("\n") ? s : s + "\n"
    _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
}
