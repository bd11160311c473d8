import ConntrackCore

/// The FTP helper's per-connection memory (`struct nf_ct_ftp_master`): up to two sequence
/// numbers per direction where a line starts (right after a `\n`).
public struct FTPState: Sendable, Equatable {
    var lineStarts: [[UInt32]] = [[], []]
    public init() {}
}

/// The FTP helper (nf_conntrack_ftp.c; semantics 11.2), its commands as a data table.
public enum FTPHelper {
    /// What a parsed command announced: the address (nil = the control connection's) and port.
    public struct Command: Equatable, Sendable {
        public var address: IPAddress?
        public var port: UInt16
    }

    enum Parser { case rfc959, eprt, rfc1123, epsv }

    struct Pattern {
        var keyword: [UInt8]
        /// Skip to just after this character before the numbers (nil: start right after the keyword).
        var skip: UInt8?
        var terminator: UInt8
        var parser: Parser
    }

    /// Per direction (0 = client commands, 1 = server replies), tried in order.
    static let patterns: [[Pattern]] = [
        [Pattern(keyword: Array("PORT".utf8), skip: UInt8(ascii: " "), terminator: UInt8(ascii: "\r"), parser: .rfc959),
         Pattern(keyword: Array("EPRT".utf8), skip: UInt8(ascii: " "), terminator: UInt8(ascii: "\r"), parser: .eprt)],
        [Pattern(keyword: Array("227 ".utf8), skip: nil, terminator: 0, parser: .rfc1123),
         Pattern(keyword: Array("229 ".utf8), skip: UInt8(ascii: "("), terminator: UInt8(ascii: ")"), parser: .epsv)],
    ]

    public enum Outcome: Equatable, Sendable {
        case none
        case command(Command)
        /// A keyword (or a prefix of one) whose argument does not parse: the helper drops the packet.
        case partial
    }

    /// Parses one segment's payload sent in direction `dir` (semantics 11.2, find_pattern).
    public static func parse(_ data: UnsafeRawBufferPointer, dir: Int, family: AddressFamily) -> Outcome {
        for p in patterns[dir] {
            let plen = p.keyword.count
            if data.count <= plen {
                if data.count > 0, caseInsensitiveEqual(data, 0, p.keyword, data.count) { return .partial }
                continue
            }
            guard caseInsensitiveEqual(data, 0, p.keyword, plen) else { continue }
            var i = plen
            if let skip = p.skip {
                while data[i] != skip {
                    if i == data.count - 1 { return .partial }
                    i += 1
                }
                i += 1
            }
            let rest = UnsafeRawBufferPointer(rebasing: data[i...])
            let cmd: Command?
            switch p.parser {
            case .rfc959: cmd = rfc959(rest, terminator: p.terminator)
            case .rfc1123:
                guard let d = rest.firstIndex(where: { $0 >= 48 && $0 <= 57 }) else { return .partial }
                cmd = rfc959(UnsafeRawBufferPointer(rebasing: rest[d...]), terminator: 0)
            case .eprt: cmd = eprt(rest, family: family)
            case .epsv: cmd = epsv(rest)
            }
            guard let cmd else { return .partial }
            return .command(cmd)
        }
        return .none
    }

    static func caseInsensitiveEqual(_ d: UnsafeRawBufferPointer, _ at: Int, _ k: [UInt8], _ n: Int) -> Bool {
        for j in 0..<n {
            var c = d[at + j]
            if c >= 97 && c <= 122 { c -= 32 }
            if c != k[j] { return false }
        }
        return true
    }

    /// `try_number`: `count` decimal numbers separated by `sep`, ended by `term` (0: any other character).
    static func numbers(_ d: UnsafeRawBufferPointer, count: Int, sep: UInt8, term: UInt8) -> ([UInt32], Int)? {
        var a = [UInt32](repeating: 0, count: count)
        var i = 0
        var len = 0
        while len < d.count && i < count {
            let c = d[len]
            if c >= 48 && c <= 57 {
                a[i] = a[i] &* 10 &+ UInt32(c - 48)
            } else if c == sep {
                i += 1
            } else {
                if (c == term || term == 0) && i == count - 1 { return (a, len) }
                return nil
            }
            len += 1
        }
        return nil
    }

    static func rfc959(_ d: UnsafeRawBufferPointer, terminator: UInt8) -> Command? {
        guard let (a, _) = numbers(d, count: 6, sep: UInt8(ascii: ","), term: terminator) else { return nil }
        let ip = (a[0] << 24) | (a[1] << 16) | (a[2] << 8) | a[3]
        return Command(address: .v4(ip), port: UInt16(truncatingIfNeeded: (a[4] << 8) | a[5]))
    }

    static func port(_ d: UnsafeRawBufferPointer, from start: Int, delimiter: UInt8) -> UInt16? {
        var p: UInt16 = 0
        var i = start
        while i < d.count {
            let c = d[i]
            if c == delimiter { return p == 0 ? nil : p }
            guard c >= 48 && c <= 57 else { return nil }
            p = p &* 10 &+ UInt16(c - 48)
            i += 1
        }
        return nil
    }

    static func validDelimiter(_ c: UInt8) -> Bool { !(c >= 48 && c <= 57) && c >= 33 && c <= 126 }

    static func eprt(_ d: UnsafeRawBufferPointer, family: AddressFamily) -> Command? {
        guard d.count > 3 else { return nil }
        let delim = d[0]
        guard validDelimiter(delim), d[2] == delim else { return nil }
        guard d[1] == (family == .ipv4 ? UInt8(ascii: "1") : UInt8(ascii: "2")) else { return nil }
        let body = UnsafeRawBufferPointer(rebasing: d[3...])
        let address: IPAddress
        let length: Int
        if family == .ipv4 {
            guard let (a, n) = numbers(body, count: 4, sep: UInt8(ascii: "."), term: delim) else { return nil }
            address = .v4((a[0] << 24) | (a[1] << 16) | (a[2] << 8) | a[3])
            length = n
        } else {
            guard let end = body.firstIndex(of: delim),
                  let a = IPAddress(String(decoding: body[..<end], as: UTF8.self)), a.family == .ipv6 else { return nil }
            address = a
            length = end
        }
        guard let p = port(d, from: 3 + length + 1, delimiter: delim) else { return nil }
        return Command(address: address, port: p)
    }

    static func epsv(_ d: UnsafeRawBufferPointer) -> Command? {
        guard d.count > 3 else { return nil }
        let delim = d[0]
        guard validDelimiter(delim), d[1] == delim, d[2] == delim else { return nil }
        guard let p = port(d, from: 3, delimiter: delim) else { return nil }
        return Command(address: nil, port: p)
    }

    /// Whether `seq` starts a line we know of (`find_nl_seq`).
    static func startsLine(_ seq: UInt32, _ s: FTPState, dir: Int) -> Bool { s.lineStarts[dir].contains(seq) }

    /// `update_nl_seq`: remember up to two line starts, replacing the oldest by a later one.
    static func rememberLineStart(_ seq: UInt32, _ s: inout FTPState, dir: Int) {
        if s.lineStarts[dir].contains(seq) { return }
        if s.lineStarts[dir].count < 2 { s.lineStarts[dir].append(seq); return }
        let oldest = TCPTracker.before(s.lineStarts[dir][0], s.lineStarts[dir][1]) ? 0 : 1
        if TCPTracker.after(seq, s.lineStarts[dir][oldest]) { s.lineStarts[dir][oldest] = seq }
    }
}
