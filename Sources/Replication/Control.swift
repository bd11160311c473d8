import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The daemons' control socket: a UNIX stream socket, one command line in, the answer out,
/// then the connection closes. The answer's first line is `ok` or `error: …`.
public final class ControlServer: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    let fd: Int32
    let path: String
    let handle: @Sendable (String) -> String
    private let lock = NSLock()
    private var stopped = false

    public init(path: String, handle: @escaping @Sendable (String) -> String) throws {
        self.path = path
        self.handle = handle
        guard path.utf8.count < 108 else { throw Failure(description: "control socket path over 107 bytes") }
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sa.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0, listen(fd, 8) == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "bind \(path): \(e)")
        }
        chmod(path, 0o600)
    }

    public func start() {
        Thread { [self] in
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { if errno == EINTR { continue }; return }
                var tv = timeval(tv_sec: 2, tv_usec: 0)
                setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                var line: [UInt8] = []
                var byte: UInt8 = 0
                while line.count < 1024, recv(c, &byte, 1, 0) == 1, byte != 10 { line.append(byte) }
                let answer = Array((handle(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespaces)) + "\n").utf8)
                var sent = 0
                while sent < answer.count {
                    let n = answer[sent...].withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if n <= 0 { break }
                    sent += n
                }
                close(c)
            }
        }.start()
    }

    public func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        unlink(path)
    }

    /// Sends one command to a daemon's control socket and returns its answer.
    public static func ask(_ path: String, _ command: String) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        guard path.utf8.count < 108 else { throw Failure(description: "control socket path over 107 bytes") }
        withUnsafeMutableBytes(of: &sa.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else { throw Failure(description: "cannot reach the daemon at \(path): \(String(cString: strerror(errno)))") }
        let req = Array((command + "\n").utf8)
        _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }
}
