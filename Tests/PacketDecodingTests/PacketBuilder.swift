import Foundation

/// Builds exact frames for tests: link headers, IPv4/IPv6 with correct checksums,
/// TCP with options, UDP, ICMP errors quoting a packet, and pcap files around them.
enum PacketBuilder {
    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }

    static func checksum(_ b: [UInt8]) -> UInt16 {
        var s: UInt32 = 0
        var i = 0
        while i + 1 < b.count { s += UInt32(b[i]) << 8 | UInt32(b[i + 1]); i += 2 }
        if i < b.count { s += UInt32(b[i]) << 8 }
        while s >> 16 != 0 { s = (s & 0xffff) + (s >> 16) }
        return ~UInt16(s)
    }

    static func v4(_ s: String) -> [UInt8] { s.split(separator: ".").map { UInt8($0)! } }
    static func v6(_ s: String) -> [UInt8] {
        var a = in6_addr()
        _ = inet_pton(AF_INET6, s, &a)
        return withUnsafeBytes(of: a) { Array($0) }
    }

    // MARK: Transport

    struct TCPOptions {
        var mss: UInt16? = nil
        var windowScale: UInt8? = nil
        var sackPermitted = false
        var timestamps: (UInt32, UInt32)? = nil
        var sack: [(UInt32, UInt32)] = []
    }

    static func tcp(sport: UInt16, dport: UInt16, seq: UInt32 = 1000, ack: UInt32 = 0, flags: UInt8 = 0x02,
                    window: UInt16 = 65535, options: TCPOptions = TCPOptions(), payload: [UInt8] = []) -> [UInt8] {
        var opts: [UInt8] = []
        if let m = options.mss { opts += [2, 4] + be16(m) }
        if options.sackPermitted { opts += [4, 2] }
        if let (v, e) = options.timestamps { opts += [8, 10] + be32(v) + be32(e) }
        if let w = options.windowScale { opts += [1, 3, 3, w] }
        if !options.sack.isEmpty {
            opts += [1, 1, 5, UInt8(2 + 8 * options.sack.count)]
            for (l, r) in options.sack { opts += be32(l) + be32(r) }
        }
        while opts.count % 4 != 0 { opts.append(0) }
        let doff = UInt8((20 + opts.count) / 4)
        return be16(sport) + be16(dport) + be32(seq) + be32(ack) + [doff << 4, flags] + be16(window) + [0, 0, 0, 0] + opts + payload
    }

    static func udp(sport: UInt16, dport: UInt16, payload: [UInt8] = []) -> [UInt8] {
        be16(sport) + be16(dport) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
    }

    static func icmp(type: UInt8, code: UInt8, id: UInt16 = 0, sequence: UInt16 = 0, payload: [UInt8] = []) -> [UInt8] {
        var m = [type, code, 0, 0] + be16(id) + be16(sequence) + payload
        let c = checksum(m)
        m[2] = UInt8(c >> 8); m[3] = UInt8(c & 0xff)
        return m
    }

    /// Fills in the TCP/UDP checksum of `segment` (at `offset` 16 for TCP, 6 for UDP).
    static func withL4Checksum(_ segment: [UInt8], proto: UInt8, src: [UInt8], dst: [UInt8]) -> [UInt8] {
        let at = proto == 6 ? 16 : proto == 58 ? 2 : 6
        guard segment.count >= at + 2 else { return segment }   // too short to carry one (robustness tests)
        var seg = segment
        seg[at] = 0; seg[at + 1] = 0
        let pseudo = src + dst + (src.count == 4 ? [0, proto] + be16(UInt16(seg.count)) : be32(UInt32(seg.count)) + [0, 0, 0, proto])
        let c = checksum(pseudo + seg)
        seg[at] = UInt8(c >> 8); seg[at + 1] = UInt8(c & 0xff)
        return seg
    }

    // MARK: Network

    static func ipv4(src: String, dst: String, proto: UInt8, payload: [UInt8], id: UInt16 = 1, flagsFragment: UInt16 = 0x4000,
                     ttl: UInt8 = 64, options: [UInt8] = [], totalLength: UInt16? = nil, checksumL4: Bool = true) -> [UInt8] {
        let ihl = UInt8((20 + options.count) / 4)
        let s = v4(src), d = v4(dst)
        let body = checksumL4 && (proto == 6 || proto == 17) && flagsFragment & 0x1fff == 0 && flagsFragment & 0x2000 == 0
            ? withL4Checksum(payload, proto: proto, src: s, dst: d) : payload
        var h = [0x40 | ihl, 0] + be16(totalLength ?? UInt16(20 + options.count + body.count)) + be16(id) + be16(flagsFragment)
            + [ttl, proto, 0, 0] + s + d + options
        let c = checksum(h)
        h[10] = UInt8(c >> 8); h[11] = UInt8(c & 0xff)
        return h + body
    }

    /// IPv6 with optional extension headers given as (type, bytes) pairs in order.
    static func ipv6(src: String, dst: String, proto: UInt8, payload: [UInt8], extensions: [(UInt8, [UInt8])] = [],
                     hopLimit: UInt8 = 64) -> [UInt8] {
        let s = v6(src), d = v6(dst)
        var chain: [UInt8] = []
        var firstNext = proto
        if !extensions.isEmpty {
            firstNext = extensions[0].0
            for (i, (_, bytes)) in extensions.enumerated() {
                let next = i + 1 < extensions.count ? extensions[i + 1].0 : proto
                var b = bytes
                b[0] = next
                chain += b
            }
        }
        let body = (proto == 6 || proto == 17 || proto == 58) && !extensions.contains(where: { $0.0 == 44 })
            ? withL4Checksum(payload, proto: proto, src: s, dst: d) : payload
        return [0x60, 0, 0, 0] + be16(UInt16(chain.count + body.count)) + [firstNext, hopLimit] + s + d + chain + body
    }

    /// An IPv6 fragment header (next header filled in by `ipv6`).
    static func fragmentHeader(offset: Int, more: Bool, id: UInt32) -> (UInt8, [UInt8]) {
        (44, [0, 0] + be16(UInt16(offset) & 0xfff8 | (more ? 1 : 0)) + be32(id))
    }

    static func hopByHop() -> (UInt8, [UInt8]) { (0, [0, 0, 1, 4, 0, 0, 0, 0]) }   // PadN

    // MARK: Link

    static func ethernet(_ ip: [UInt8], vlans: [(UInt16, UInt16)] = []) -> [UInt8] {
        var f: [UInt8] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]
        for (tpid, vid) in vlans { f += be16(tpid) + be16(vid) }
        f += be16(ip.first.map { $0 >> 4 == 6 ? 0x86dd : 0x0800 } ?? 0x0800)
        return f + ip
    }

    static func sll(_ ip: [UInt8], packetType: UInt16) -> [UInt8] {
        be16(packetType) + be16(1) + be16(6) + [2, 0, 0, 0, 0, 1, 0, 0] + be16(ip.first! >> 4 == 6 ? 0x86dd : 0x0800) + ip
    }

    static func sll2(_ ip: [UInt8], packetType: UInt8, interfaceIndex: UInt32) -> [UInt8] {
        be16(ip.first! >> 4 == 6 ? 0x86dd : 0x0800) + [0, 0] + be32(interfaceIndex) + be16(1) + [packetType, 6]
            + [2, 0, 0, 0, 0, 1, 0, 0] + ip
    }

    static func null(_ ip: [UInt8]) -> [UInt8] {
        let af: UInt32 = ip.first! >> 4 == 6 ? 10 : 2
        return withUnsafeBytes(of: af.littleEndian) { Array($0) } + ip
    }

    static func loop(_ ip: [UInt8]) -> [UInt8] { be32(ip.first! >> 4 == 6 ? 10 : 2) + ip }

    // MARK: Files

    /// A classic pcap file with nanosecond timestamps.
    static func pcap(linkType: UInt32, frames: [(ns: UInt64, bytes: [UInt8], wireLength: Int?)], snaplen: UInt32 = 262144) -> [UInt8] {
        func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        func le16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        var out = le32(0xa1b2_3c4d) + le16(2) + le16(4) + le32(0) + le32(0) + le32(snaplen) + le32(linkType)
        for f in frames {
            out += le32(UInt32(f.ns / 1_000_000_000)) + le32(UInt32(f.ns % 1_000_000_000))
            out += le32(UInt32(f.bytes.count)) + le32(UInt32(f.wireLength ?? f.bytes.count)) + f.bytes
        }
        return out
    }
}
