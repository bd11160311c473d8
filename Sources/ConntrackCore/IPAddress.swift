/// An IPv4 or IPv6 address, stored by value (no allocation).
///
/// Text forms follow glibc's `inet_ntoa`/`inet_ntop`, because conntrack(8) prints
/// addresses with them and our text output must be byte-identical.
public enum IPAddress: Hashable, Sendable, Comparable {
    /// Host-order IPv4 address (192.0.2.1 is 0xC0000201).
    case v4(UInt32)
    /// IPv6 address as two host-order halves (high = first 8 bytes).
    case v6(UInt64, UInt64)

    public var family: AddressFamily { if case .v4 = self { return .ipv4 } else { return .ipv6 } }

    /// The 4 or 16 bytes in network order.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a):
            return [UInt8(a >> 24), UInt8(truncatingIfNeeded: a >> 16), UInt8(truncatingIfNeeded: a >> 8), UInt8(truncatingIfNeeded: a)]
        case .v6(let hi, let lo):
            var out = [UInt8](repeating: 0, count: 16)
            for i in 0..<8 {
                out[i] = UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64(i)))
                out[8 + i] = UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64(i)))
            }
            return out
        }
    }

    /// Builds an address from 4 or 16 network-order bytes; nil for any other length.
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        if bytes.count == 4 {
            var v: UInt32 = 0
            for b in bytes { v = v << 8 | UInt32(b) }
            self = .v4(v)
        } else if bytes.count == 16 {
            var hi: UInt64 = 0, lo: UInt64 = 0
            for (i, b) in bytes.enumerated() {
                if i < 8 { hi = hi << 8 | UInt64(b) } else { lo = lo << 8 | UInt64(b) }
            }
            self = .v6(hi, lo)
        } else {
            return nil
        }
    }

    /// Parses dotted-quad IPv4 or any RFC 4291 IPv6 text form (with embedded IPv4).
    public init?(_ text: some StringProtocol) {
        if text.utf8.contains(58) {
            guard let v = IPAddress.parseV6(Array(text.utf8)) else { return nil }
            self = v
        } else {
            guard let v = IPAddress.parseV4(text.utf8) else { return nil }
            self = .v4(v)
        }
    }

    static func parseV4<C: Collection>(_ s: C) -> UInt32? where C.Element == UInt8 {
        var value: UInt32 = 0, parts = 0
        var cur: UInt32 = 0, digits = 0
        for c in s {
            if c == UInt8(ascii: ".") {
                guard digits > 0, parts < 3 else { return nil }
                value = value << 8 | cur; parts += 1; cur = 0; digits = 0
            } else if c >= 48 && c <= 57 {
                cur = cur * 10 + UInt32(c - 48); digits += 1
                guard digits <= 3, cur <= 255 else { return nil }
            } else { return nil }
        }
        guard digits > 0, parts == 3 else { return nil }
        return value << 8 | cur
    }

    static func parseV6(_ s: [UInt8]) -> IPAddress? {
        // At most one "::"; each side is colon-separated groups, the last may be IPv4.
        func groups(_ part: ArraySlice<UInt8>, allowV4: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            let fields = part.split(separator: 58, omittingEmptySubsequences: false)
            for (n, f) in fields.enumerated() {
                if f.contains(46) {
                    guard allowV4, n == fields.count - 1, let v4 = parseV4(f) else { return nil }
                    out += [UInt16(v4 >> 16), UInt16(v4 & 0xffff)]
                    continue
                }
                guard !f.isEmpty, f.count <= 4 else { return nil }
                var v: UInt16 = 0
                for c in f {
                    guard let d = hexValue(c) else { return nil }
                    v = v << 4 | UInt16(d)
                }
                out.append(v)
            }
            return out
        }
        var split: Int? = nil
        var k = 0
        while k + 1 < s.count {
            if s[k] == 58 && s[k + 1] == 58 {
                guard split == nil else { return nil }
                split = k
                k += 2
            } else { k += 1 }
        }
        if let at = split {
            guard let head = groups(s[..<at], allowV4: false),
                  let tail = groups(s[(at + 2)...], allowV4: true),
                  head.count + tail.count <= 7 else { return nil }
            return fromWords(head + [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail)
        }
        guard let all = groups(s[...], allowV4: true), all.count == 8 else { return nil }
        return fromWords(all)
    }

    static func fromWords(_ w: [UInt16]) -> IPAddress {
        var hi: UInt64 = 0, lo: UInt64 = 0
        for k in 0..<4 { hi = hi << 16 | UInt64(w[k]) }
        for k in 4..<8 { lo = lo << 16 | UInt64(w[k]) }
        return .v6(hi, lo)
    }

    var words: [UInt16] {
        guard case .v6(let hi, let lo) = self else { return [] }
        return (0..<4).map { UInt16(truncatingIfNeeded: hi >> (48 - 16 * UInt64($0))) }
            + (0..<4).map { UInt16(truncatingIfNeeded: lo >> (48 - 16 * UInt64($0))) }
    }

    /// Appends the glibc text form to `out`.
    public func write(to out: inout [UInt8]) {
        switch self {
        case .v4(let a):
            writeV4(a, to: &out)
        case .v6:
            let w = words
            // Longest run of zero words, at least 2 long (glibc rule), first wins ties.
            var bestBase = -1, bestLen = 0, curBase = -1, curLen = 0
            for k in 0..<8 {
                if w[k] == 0 {
                    if curBase < 0 { curBase = k; curLen = 1 } else { curLen += 1 }
                } else if curBase >= 0 {
                    if curLen > bestLen { bestBase = curBase; bestLen = curLen }
                    curBase = -1
                }
            }
            if curBase >= 0 && curLen > bestLen { bestBase = curBase; bestLen = curLen }
            if bestLen < 2 { bestBase = -1 }
            var k = 0
            while k < 8 {
                if k == bestBase {
                    out.append(58)
                    k += bestLen
                    if k == 8 { out.append(58) }
                    continue
                }
                if k != 0 { out.append(58) }
                // Embedded IPv4: ::a.b.c.d and ::ffff:a.b.c.d
                if k == 6 && bestBase == 0 && (bestLen == 6 || (bestLen == 5 && w[5] == 0xffff)) {
                    writeV4(UInt32(w[6]) << 16 | UInt32(w[7]), to: &out)
                    return
                }
                writeHex16(w[k], to: &out)
                k += 1
            }
        }
    }

    public var description: String {
        var b: [UInt8] = []
        write(to: &b)
        return String(decoding: b, as: UTF8.self)
    }
}

extension IPAddress: CustomStringConvertible {}

public enum AddressFamily: UInt8, Sendable, Hashable, CaseIterable {
    case ipv4 = 2
    case ipv6 = 10

    public var name: String { self == .ipv4 ? "ipv4" : "ipv6" }

    public init?(name: String) {
        switch name.lowercased() {
        case "ipv4", "inet": self = .ipv4
        case "ipv6", "inet6": self = .ipv6
        default: return nil
        }
    }
}

/// An address with a prefix length, for `-s 192.0.2.0/24` style filters.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var prefixLength: Int

    public init(address: IPAddress, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `ADDR` or `ADDR/LEN`; nil when the length is out of range for the family.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let a = IPAddress(parts[0]) else { return nil }
        let maxLen = a.family == .ipv4 ? 32 : 128
        var len = maxLen
        if parts.count == 2 {
            guard let l = Int(parts[1]), l >= 0, l <= maxLen else { return nil }
            len = l
        }
        self.address = a
        self.prefixLength = len
    }

    public func contains(_ other: IPAddress) -> Bool {
        switch (address, other) {
        case (.v4(let n), .v4(let a)):
            if prefixLength == 0 { return true }
            let mask: UInt32 = prefixLength >= 32 ? ~0 : ~(UInt32.max >> UInt32(prefixLength))
            return n & mask == a & mask
        case (.v6(let nh, let nl), .v6(let ah, let al)):
            let hiBits = min(prefixLength, 64), loBits = max(prefixLength - 64, 0)
            let hm: UInt64 = hiBits == 0 ? 0 : (hiBits >= 64 ? ~0 : ~(UInt64.max >> UInt64(hiBits)))
            let lm: UInt64 = loBits == 0 ? 0 : (loBits >= 64 ? ~0 : ~(UInt64.max >> UInt64(loBits)))
            return nh & hm == ah & hm && nl & lm == al & lm
        default:
            return false
        }
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

@inline(__always)
func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case 48...57: return c - 48
    case 97...102: return c - 87
    case 65...70: return c - 55
    default: return nil
    }
}

private let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

@inline(__always)
func writeHex16(_ v: UInt16, to out: inout [UInt8]) {
    var started = false
    for shift in stride(from: 12, through: 0, by: -4) {
        let d = Int((v >> UInt16(shift)) & 0xf)
        if d != 0 || started || shift == 0 {
            out.append(hexDigits[d]); started = true
        }
    }
}

@inline(__always)
func writeV4(_ a: UInt32, to out: inout [UInt8]) {
    writeDecimal(UInt64(a >> 24), to: &out); out.append(46)
    writeDecimal(UInt64((a >> 16) & 0xff), to: &out); out.append(46)
    writeDecimal(UInt64((a >> 8) & 0xff), to: &out); out.append(46)
    writeDecimal(UInt64(a & 0xff), to: &out)
}

/// Appends the decimal digits of `v` without allocating.
@inline(__always)
public func writeDecimal(_ v: UInt64, to out: inout [UInt8]) {
    if v < 10 { out.append(UInt8(48 + v)); return }
    var tmp: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
              UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    var n = v, i = 0
    withUnsafeMutableBytes(of: &tmp) { p in
        while n > 0 { p[i] = UInt8(48 + n % 10); n /= 10; i += 1 }
        while i > 0 { i -= 1; out.append(p[i]) }
    }
}

@inline(__always)
public func writeSignedDecimal(_ v: Int64, to out: inout [UInt8]) {
    if v < 0 { out.append(45); writeDecimal(UInt64(bitPattern: 0 &- v), to: &out) } else { writeDecimal(UInt64(v), to: &out) }
}

@inline(__always)
public func writeHex(_ v: UInt64, to out: inout [UInt8]) {
    if v == 0 { out.append(48); return }
    var started = false
    for shift in stride(from: 60, through: 0, by: -4) {
        let d = Int((v >> UInt64(shift)) & 0xf)
        if d != 0 || started { out.append(hexDigits[d]); started = true }
    }
}

extension Array where Element == UInt8 {
    /// Appends a static ASCII string without creating a String.
    @inline(__always)
    public mutating func append(ascii s: StaticString) {
        s.withUTF8Buffer { self.append(contentsOf: $0) }
    }

    @inline(__always)
    public mutating func append(string s: String) {
        var s = s
        s.withUTF8 { self.append(contentsOf: $0) }
    }
}
