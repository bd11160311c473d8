import ConntrackCore

/// Decodes frames of one link type into `DecodedPacket`s, in place over the
/// capture buffer: every read is bounds-checked against the captured length, and
/// nothing is allocated per frame.
public struct PacketDecoder: Sendable {
    public let linkType: Int32

    public init(linkType: Int32) { self.linkType = linkType }

    /// Decodes one frame. `originalLength` is the length on the wire (pcap `len`);
    /// when it exceeds the captured bytes the frame is decoded as far as it goes.
    public func decode(_ frame: UnsafeRawBufferPointer, originalLength: Int? = nil) -> Result<DecodedPacket, SkipReason> {
        var p = DecodedPacket()
        if let skip = decode(frame, originalLength: originalLength, into: &p) { return .failure(skip) }
        return .success(p)
    }

    /// Decodes one frame into `p` (reused across frames: the hot path copies no packet
    /// structs). Returns why the frame was skipped, or nil when `p` holds the packet.
    public func decode(_ frame: UnsafeRawBufferPointer, originalLength: Int? = nil, into p: inout DecodedPacket) -> SkipReason? {
        p = DecodedPacket()
        var r = Reader(frame)
        let etherType: UInt16
        switch LinkType(rawValue: linkType) {
        case .ethernet?:
            guard r.count >= 14 else { return .truncatedLinkHeader }
            var type = r.be16(12)
            var off = 14
            // 802.1ad (0x88a8), 802.1Q (0x8100) and the old QinQ 0x9100 tags, outermost first.
            while type == 0x8100 || type == 0x88a8 || type == 0x9100 {
                guard r.count >= off + 4 else { return .truncatedLinkHeader }
                let vid = r.be16(off) & 0x0fff
                if p.link.vlanDepth == 0 { p.link.outerVLAN = vid } else if p.link.vlanDepth == 1 { p.link.innerVLAN = vid }
                p.link.vlanDepth &+= 1
                type = r.be16(off + 2)
                off += 4
            }
            etherType = type
            r.advance(off)
        case .linuxSLL?:
            guard r.count >= 16 else { return .truncatedLinkHeader }
            p.link.packetType = r.be16(0)
            etherType = r.be16(14)
            r.advance(16)
        case .linuxSLL2?:
            guard r.count >= 20 else { return .truncatedLinkHeader }
            etherType = r.be16(0)
            p.link.interfaceIndex = r.be32(4)
            p.link.packetType = UInt16(r.u8(10))
            r.advance(20)
        case .raw?:
            guard r.count >= 1 else { return .truncatedIPHeader }
            etherType = r.u8(0) >> 4 == 6 ? 0x86dd : 0x0800
        case .ipv4?: etherType = 0x0800
        case .ipv6?: etherType = 0x86dd
        case .null?, .loop?:
            guard r.count >= 4 else { return .truncatedLinkHeader }
            // NULL stores the AF in host order of the capturing machine, LOOP in network order.
            let raw = r.be32(0)
            let family = linkType == LinkType.loop.rawValue ? raw : (raw > 0xffff ? raw.byteSwapped : raw)
            switch family {
            case 2: etherType = 0x0800
            case 10, 24, 28, 30: etherType = 0x86dd    // AF_INET6 on Linux, the BSDs and macOS
            default: return .notIP
            }
            r.advance(4)
        case nil:
            return .unknownLinkType
        }
        let wireTail = (originalLength ?? frame.count) - frame.count  // bytes the capture cut off
        switch etherType {
        case 0x0800: return decodeIPv4(r, into: &p, cutOff: wireTail)
        case 0x86dd: return decodeIPv6(r, into: &p, cutOff: wireTail)
        default: return .notIP
        }
    }

    func decodeIPv4(_ r: Reader, into p: inout DecodedPacket, cutOff: Int) -> SkipReason? {
        guard r.count >= 20 else { return .truncatedIPHeader }
        let vihl = r.u8(0)
        guard vihl >> 4 == 4 else { return .badIPVersion }
        let ihl = Int(vihl & 0x0f) * 4
        guard ihl >= 20 else { return .badIPHeaderLength }
        guard r.count >= ihl else { return .truncatedIPHeader }
        let total = Int(r.be16(2))
        guard total >= ihl else { return .ipLengthTooShort }
        if total > r.count {
            // Either the snaplen cut the frame (the wire length covers it) or the header lies.
            guard total <= r.count + max(cutOff, 0) else { return .ipLengthBeyondFrame }
        }
        p.family = .ipv4
        p.networkOffset = r.base
        p.networkLength = total
        p.ttl = r.u8(8)
        p.ipChecksumValid = Checksum.fold(ihl == 20 ? r.headerSum20() : Checksum.sum(r.slice(0, ihl))) == 0xffff
        p.source = .v4(r.be32(12))
        p.destination = .v4(r.be32(16))
        let fragField = r.be16(6)
        let offset = Int(fragField & 0x1fff) * 8
        let more = fragField & 0x2000 != 0
        if offset != 0 || more {
            p.fragment = FragmentInfo(identification: UInt32(r.be16(4)), offset: offset, moreFragments: more)
        }
        p.l4proto = r.u8(9)
        let end = min(total, r.count)
        if offset != 0 { p.transportOffset = r.base + ihl; p.payloadOffset = r.base + ihl; p.payloadLength = end - ihl; return nil }
        return decodeTransport(r.sub(ihl, end), into: &p)
    }

    func decodeIPv6(_ r: Reader, into p: inout DecodedPacket, cutOff: Int) -> SkipReason? {
        guard r.count >= 40 else { return .truncatedIPHeader }
        guard r.u8(0) >> 4 == 6 else { return .badIPVersion }
        let payloadLength = Int(r.be16(4))
        let total = 40 + payloadLength
        if total > r.count {
            guard total <= r.count + max(cutOff, 0) else { return .ipLengthBeyondFrame }
        }
        p.family = .ipv6
        p.networkOffset = r.base
        p.networkLength = total
        p.ttl = r.u8(7)
        p.source = .v6(r.be64(8), r.be64(16))
        p.destination = .v6(r.be64(24), r.be64(32))
        var next = r.u8(6)
        var off = 40
        let end = min(total, r.count)
        // Walk the extension headers the way the kernel's ipv6_skip_exthdr does.
        var hops = 0
        while hops < 16 {
            hops += 1
            switch next {
            case 0, 43, 60:   // hop-by-hop, routing, destination options
                guard off + 8 <= end else { return .truncatedExtensionHeader }
                let len = (Int(r.u8(off + 1)) + 1) * 8
                guard off + len <= end else { return .truncatedExtensionHeader }
                next = r.u8(off)
                off += len
                continue
            case 44:          // fragment
                guard off + 8 <= end else { return .truncatedExtensionHeader }
                let field = r.be16(off + 2)
                p.fragment = FragmentInfo(identification: r.be32(off + 4), offset: Int(field & 0xfff8),
                                          moreFragments: field & 1 != 0)
                p.fragmentHeaderOffset = r.base + off
                next = r.u8(off)
                off += 8
                if field & 0xfff8 != 0 {
                    p.l4proto = next; p.transportOffset = r.base + off
                    p.payloadOffset = r.base + off; p.payloadLength = end - off
                    return nil
                }
                continue
            case 51:          // AH: length in 4-byte units, minus 2
                p.sawAH = true
                guard off + 8 <= end else { return .truncatedExtensionHeader }
                let len = (Int(r.u8(off + 1)) + 2) * 4
                guard off + len <= end else { return .truncatedExtensionHeader }
                next = r.u8(off)
                off += len
                continue
            case 50:          // ESP: nothing after it can be read
                p.sawESP = true
            default:
                break
            }
            break
        }
        p.l4proto = next
        return decodeTransport(r.sub(off, end), into: &p)
    }

    /// L4 headers; `r` covers the IP payload as captured.
    func decodeTransport(_ r: Reader, into p: inout DecodedPacket) -> SkipReason? {
        p.transportOffset = r.base
        var headerLength = 0
        switch p.l4proto {
        case 6:
            guard r.count >= 20 else { return .truncatedTransportHeader }
            var t = TCPHeader()
            p.sourcePort = r.be16(0); p.destinationPort = r.be16(2)
            t.sequence = r.be32(4); t.acknowledgement = r.be32(8)
            let doff = Int(r.u8(12) >> 4) * 4
            guard doff >= 20 else { return .badTCPHeaderLength }
            guard doff <= r.count else { return .truncatedTransportHeader }
            t.headerLength = doff
            t.flags = r.u8(13)
            t.window = r.be16(14)
            parseTCPOptions(r.sub(20, doff), into: &t)
            p.tcp = t
            headerLength = doff
        case 17, 136:
            guard r.count >= 8 else { return .truncatedTransportHeader }
            p.sourcePort = r.be16(0); p.destinationPort = r.be16(2)
            headerLength = 8
        case 132:
            guard r.count >= 12 else { return .truncatedTransportHeader }
            p.sourcePort = r.be16(0); p.destinationPort = r.be16(2)
            p.sctpVerificationTag = r.be32(4)
            if r.count >= 13 { p.sctpFirstChunkType = r.u8(12) }
            headerLength = 12
        case 33:
            guard r.count >= 12 else { return .truncatedTransportHeader }
            p.sourcePort = r.be16(0); p.destinationPort = r.be16(2)
            p.dccpType = (r.u8(8) >> 1) & 0x0f
            headerLength = Int(r.u8(4)) * 4
            guard headerLength >= 12, headerLength <= r.count else { return .truncatedTransportHeader }
        case 47:
            guard r.count >= 4 else { return .truncatedTransportHeader }
            let flags = r.be16(0)
            p.greVersion = UInt8(flags & 7)
            var off = 4
            if flags & 0x8000 != 0 { off += 4 }            // checksum + reserved
            if flags & 0x2000 != 0 || p.greVersion == 1 {   // key (v1: payload length + call id)
                guard r.count >= off + 4 else { return .truncatedTransportHeader }
                p.greKey = p.greVersion == 1 ? UInt32(r.be16(off + 2)) : r.be32(off)
                off += 4
            }
            if flags & 0x1000 != 0 { off += 4 }            // sequence
            if p.greVersion == 1 && flags & 0x0080 != 0 { off += 4 }  // acknowledgement (v1)
            headerLength = min(off, r.count)
        case 1, 58:
            guard r.count >= 8 else { return .truncatedTransportHeader }
            p.icmpType = r.u8(0); p.icmpCode = r.u8(1); p.icmpID = r.be16(4)
            headerLength = 8
            if ICMPErrors.isError(type: p.icmpType, v6: p.l4proto == 58) {
                p.inner = decodeInner(r.sub(8, r.count), v6: p.l4proto == 58)
            }
        default:
            headerLength = 0
        }
        p.hasTransport = true
        p.payloadOffset = r.base + headerLength
        p.payloadLength = r.count - headerLength
        return nil
    }

    func parseTCPOptions(_ r: Reader, into t: inout TCPHeader) {
        var i = 0
        while i < r.count {
            let kind = r.u8(i)
            if kind == 0 { return }
            if kind == 1 { i += 1; continue }
            guard i + 1 < r.count else { return }
            let len = Int(r.u8(i + 1))
            guard len >= 2, i + len <= r.count else { return }
            switch (kind, len) {
            case (2, 4): t.mss = r.be16(i + 2)
            case (3, 3): t.windowScale = r.u8(i + 2)
            case (4, 2): t.sackPermitted = true
            case (5, _) where (len - 2) % 8 == 0:
                t.sackBlocks = UInt8((len - 2) / 8)
                for b in 0..<Int(t.sackBlocks) {
                    let right = r.be32(i + 2 + b * 8 + 4)
                    if let h = t.sackHighestRightEdge { if Int32(bitPattern: right &- h) > 0 { t.sackHighestRightEdge = right } }
                    else { t.sackHighestRightEdge = right }
                }
            case (8, 10): t.timestampValue = r.be32(i + 2); t.timestampEcho = r.be32(i + 6)
            default: break
            }
            i += len
        }
    }

    /// The IP header (and L4 start) an ICMP error quotes.
    func decodeInner(_ r: Reader, v6: Bool) -> InnerHeader? {
        var proto: UInt8, off: Int, src: IPAddress, dst: IPAddress
        if v6 {
            guard r.count >= 40, r.u8(0) >> 4 == 6 else { return nil }
            src = .v6(r.be64(8), r.be64(16)); dst = .v6(r.be64(24), r.be64(32))
            proto = r.u8(6); off = 40
            var hops = 0
            while [0, 43, 60].contains(proto) && hops < 8 {
                guard off + 8 <= r.count else { break }
                proto = r.u8(off); off += (Int(r.u8(off + 1)) + 1) * 8; hops += 1
            }
        } else {
            guard r.count >= 20, r.u8(0) >> 4 == 4 else { return nil }
            let ihl = Int(r.u8(0) & 0x0f) * 4
            guard ihl >= 20, r.count >= ihl else { return nil }
            src = .v4(r.be32(12)); dst = .v4(r.be32(16))
            proto = r.u8(9); off = ihl
        }
        var h = InnerHeader(source: src, destination: dst, l4proto: proto)
        switch proto {
        case 6, 17, 136, 132, 33:
            if off + 4 <= r.count { h.sourcePort = r.be16(off); h.destinationPort = r.be16(off + 2); h.hasTransport = true }
        case 1, 58:
            if off + 8 <= r.count { h.icmpType = r.u8(off); h.icmpCode = r.u8(off + 1); h.icmpID = r.be16(off + 4); h.hasTransport = true }
        default: break
        }
        return h
    }
}

/// ICMP types that carry a quoted packet (errors), as nf_conntrack_proto_icmp*.c treats them.
public enum ICMPErrors {
    public static func isError(type: UInt8, v6: Bool) -> Bool {
        v6 ? type < 128 : [3, 4, 5, 11, 12].contains(type)
    }
}

/// A bounds-checked view of part of a frame. Callers check `count` before reading;
/// every accessor also checks, returning 0 past the end, so a mistake cannot read out of bounds.
struct Reader {
    let buffer: UnsafeRawBufferPointer
    /// Offset of this view in the original frame.
    let base: Int
    let count: Int

    init(_ b: UnsafeRawBufferPointer) { buffer = b; base = 0; count = b.count }
    init(buffer: UnsafeRawBufferPointer, base: Int, count: Int) { self.buffer = buffer; self.base = base; self.count = count }

    mutating func advance(_ n: Int) { self = Reader(buffer: buffer, base: base + n, count: max(0, count - n)) }

    func sub(_ from: Int, _ to: Int) -> Reader {
        let lo = min(max(0, from), count), hi = min(max(lo, to), count)
        return Reader(buffer: buffer, base: base + lo, count: hi - lo)
    }

    func slice(_ from: Int, _ to: Int) -> UnsafeRawBufferPointer {
        let s = sub(from, to)
        return UnsafeRawBufferPointer(rebasing: buffer[s.base..<(s.base + s.count)])
    }

    /// The one's-complement sum of a 20-byte IPv4 header (the common case, no options).
    @inline(__always) func headerSum20() -> UInt64 {
        guard count >= 20 else { return 0 }
        var s: UInt64 = 0
        for k in stride(from: 0, to: 20, by: 4) {
            let w = UInt64(UInt32(bigEndian: buffer.loadUnaligned(fromByteOffset: base + k, as: UInt32.self)))
            s &+= (w >> 16) + (w & 0xffff)
        }
        return s
    }

    @inline(__always) func u8(_ o: Int) -> UInt8 { o >= 0 && o < count ? buffer[base + o] : 0 }
    @inline(__always) func be16(_ o: Int) -> UInt16 {
        o >= 0 && o + 2 <= count ? UInt16(bigEndian: buffer.loadUnaligned(fromByteOffset: base + o, as: UInt16.self)) : 0
    }
    @inline(__always) func be32(_ o: Int) -> UInt32 {
        o >= 0 && o + 4 <= count ? UInt32(bigEndian: buffer.loadUnaligned(fromByteOffset: base + o, as: UInt32.self)) : 0
    }
    @inline(__always) func be64(_ o: Int) -> UInt64 {
        o >= 0 && o + 8 <= count ? UInt64(bigEndian: buffer.loadUnaligned(fromByteOffset: base + o, as: UInt64.self)) : 0
    }
}

/// The Internet checksum (RFC 1071), for IPv4 headers and L4 verification.
public enum Checksum {
    /// One's-complement sum of 16-bit big-endian words (odd byte padded with zero), unfolded.
    public static func sum(_ b: UnsafeRawBufferPointer, initial: UInt64 = 0) -> UInt64 {
#if _endian(little)
        // Sum native (little-endian) 32-bit halves: the one's-complement sum does not depend
        // on byte order except for a final swap, and 2^16 ≡ 1 (mod 2^16 − 1) lets wide words
        // be folded at the end.
        var acc: UInt64 = 0
        var i = 0
        let n = b.count
        while i + 8 <= n {
            let w = b.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            acc &+= (w & 0xffff_ffff) &+ (w >> 32)
            i += 8
        }
        if i + 4 <= n { acc &+= UInt64(b.loadUnaligned(fromByteOffset: i, as: UInt32.self)); i += 4 }
        if i + 2 <= n { acc &+= UInt64(b.loadUnaligned(fromByteOffset: i, as: UInt16.self)); i += 2 }
        if i < n { acc &+= UInt64(b[i]) }
        return UInt64(fold(acc).byteSwapped) &+ initial
#else
        var s = initial
        var i = 0
        while i + 2 <= b.count { s &+= UInt64(b[i]) << 8 | UInt64(b[i + 1]); i += 2 }
        if i < b.count { s &+= UInt64(b[i]) << 8 }
        return s
#endif
    }

    public static func fold(_ s: UInt64) -> UInt16 {
        var v = s
        while v >> 16 != 0 { v = (v & 0xffff) + (v >> 16) }
        return UInt16(v)
    }

    /// Verifies the TCP/UDP/ICMPv6 checksum of a complete, unfragmented packet in `frame`,
    /// as the kernel does at PRE_ROUTING with nf_conntrack_checksum on. nil when it cannot
    /// be checked (truncated capture, fragment, protocol without one, UDP checksum 0 on IPv4).
    public static func verifyTransport(_ p: DecodedPacket, in frame: UnsafeRawBufferPointer) -> Bool? {
        guard p.fragment == nil, p.hasTransport else { return nil }
        let l4Length = p.networkOffset + p.networkLength - p.transportOffset
        guard l4Length >= 0, p.transportOffset + l4Length <= frame.count else { return nil }
        let seg = UnsafeRawBufferPointer(rebasing: frame[p.transportOffset..<(p.transportOffset + l4Length)])
        switch p.l4proto {
        case 6, 17, 136, 58: break
        case 1: return fold(sum(seg)) == 0xffff
        default: return nil
        }
        if p.l4proto == 17, p.family == .ipv4, seg.count >= 8, seg[6] == 0, seg[7] == 0 { return nil }
        var pseudo: UInt64 = 0
        let addrs = UnsafeRawBufferPointer(rebasing: frame[(p.networkOffset + (p.family == .ipv4 ? 12 : 8))..<(p.networkOffset + (p.family == .ipv4 ? 20 : 40))])
        pseudo = sum(addrs)
        pseudo &+= UInt64(p.l4proto) + UInt64(l4Length)
        return fold(sum(seg, initial: pseudo)) == 0xffff
    }
}
