import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.0 server for Prometheus scrapes: `GET /metrics` returns the text the
/// closure renders; anything else is 404 (or 400 when it is not an HTTP request line).
/// One thread, one request per connection, bounded reads and a receive timeout, so a
/// slow or hostile client cannot hold it.
final class MetricsServer: @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let fd: Int32
    let render: @Sendable () -> String
    private var thread: Thread?
    private let stopped = NSLock()
    private var isStopped = false

    /// ADDR:PORT with an IPv4 address, or [IPv6]:PORT; nil when malformed.
    static func parse(_ s: String) -> (family: Int32, address: [UInt8], port: UInt16)? {
        let host: Substring, port: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]"), s[s.index(after: close)...].hasPrefix(":") else { return nil }
            host = s[s.index(after: s.startIndex)..<close]
            port = s[s.index(close, offsetBy: 2)...]
        } else {
            guard let colon = s.lastIndex(of: ":") else { return nil }
            host = s[..<colon]
            port = s[s.index(after: colon)...]
        }
        guard let p = UInt16(port), p > 0 else { return nil }
        var a4 = in_addr(), a6 = in6_addr()
        if inet_pton(AF_INET, String(host), &a4) == 1 { return (AF_INET, withUnsafeBytes(of: a4) { Array($0) }, p) }
        if inet_pton(AF_INET6, String(host), &a6) == 1 { return (AF_INET6, withUnsafeBytes(of: a6) { Array($0) }, p) }
        return nil
    }

    init(address: String, render: @escaping @Sendable () -> String) throws {
        guard let (family, addr, port) = MetricsServer.parse(address) else { throw Failure(description: "not ADDR:PORT") }
        self.render = render
        fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc: Int32
        if family == AF_INET {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sa.sin_addr) { $0.copyBytes(from: addr) }
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        } else {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sa.sin6_addr) { $0.copyBytes(from: addr) }
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
        guard rc == 0, listen(fd, 16) == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "bind/listen: \(e)")
        }
    }

    func start() {
        let t = Thread { [self] in serve() }
        thread = t
        t.start()
    }

    func stop() {
        stopped.lock(); isStopped = true; stopped.unlock()
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private var stopping: Bool { stopped.lock(); defer { stopped.unlock() }; return isStopped }

    private func serve() {
        while !stopping {
            let c = accept(fd, nil, nil)
            if c < 0 {
                if errno == EINTR { continue }
                return
            }
            answer(c)
            close(c)
        }
    }

    private func answer(_ c: Int32) {
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 2048)
        while request.count < 8192 {
            let n = chunk.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            request += chunk[0..<n]
            if request.count >= 4, request.suffix(4) == [13, 10, 13, 10] { break }
            if let line = request.firstIndex(of: 10), !request[..<line].starts(with: Array("GET ".utf8)) { break }
        }
        let firstLine = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = firstLine.split(separator: " ")
        let status: String, body: String
        if parts.count >= 2, parts[0] == "GET" {
            if parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?") {
                status = "200 OK"; body = render()
            } else {
                status = "404 Not Found"; body = "only /metrics is served\n"
            }
        } else {
            status = "400 Bad Request"; body = "GET /metrics\n"
        }
        let type = status.hasPrefix("200") ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8"
        let response = Array("HTTP/1.0 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8)
        var sent = 0
        while sent < response.count {
            let n = response[sent...].withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }
}
