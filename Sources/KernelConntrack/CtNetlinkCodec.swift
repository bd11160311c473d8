import ConntrackCore

/// ctnetlink attribute numbers (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
enum CTA {
    static let tupleOrig: UInt16 = 1, tupleReply: UInt16 = 2, status: UInt16 = 3, protoinfo: UInt16 = 4
    static let help: UInt16 = 5, natSrc: UInt16 = 6, timeout: UInt16 = 7, mark: UInt16 = 8
    static let countersOrig: UInt16 = 9, countersReply: UInt16 = 10, use: UInt16 = 11, id: UInt16 = 12
    static let natDst: UInt16 = 13, tupleMaster: UInt16 = 14, seqAdjOrig: UInt16 = 15, seqAdjReply: UInt16 = 16
    static let secmark: UInt16 = 17, zone: UInt16 = 18, secctx: UInt16 = 19, timestamp: UInt16 = 20
    static let markMask: UInt16 = 21, labels: UInt16 = 22, labelsMask: UInt16 = 23, synproxy: UInt16 = 24
    static let filter: UInt16 = 25, statusMask: UInt16 = 26, timestampEvent: UInt16 = 27

    enum Tuple { static let ip: UInt16 = 1, proto: UInt16 = 2, zone: UInt16 = 3 }
    enum IP { static let v4src: UInt16 = 1, v4dst: UInt16 = 2, v6src: UInt16 = 3, v6dst: UInt16 = 4 }
    enum Proto {
        static let num: UInt16 = 1, srcPort: UInt16 = 2, dstPort: UInt16 = 3
        static let icmpID: UInt16 = 4, icmpType: UInt16 = 5, icmpCode: UInt16 = 6
        static let icmpv6ID: UInt16 = 7, icmpv6Type: UInt16 = 8, icmpv6Code: UInt16 = 9
    }
    enum ProtoInfo { static let tcp: UInt16 = 1, dccp: UInt16 = 2, sctp: UInt16 = 3 }
    enum TCP { static let state: UInt16 = 1, wscaleOrig: UInt16 = 2, wscaleReply: UInt16 = 3, flagsOrig: UInt16 = 4, flagsReply: UInt16 = 5 }
    enum DCCP { static let state: UInt16 = 1, role: UInt16 = 2, handshakeSeq: UInt16 = 3 }
    enum SCTP { static let state: UInt16 = 1, vtagOrig: UInt16 = 2, vtagReply: UInt16 = 3 }
    enum Counters { static let packets: UInt16 = 1, bytes: UInt16 = 2, packets32: UInt16 = 3, bytes32: UInt16 = 4 }
    enum Help { static let name: UInt16 = 1 }
    enum Timestamp { static let start: UInt16 = 1, stop: UInt16 = 2 }
    enum SeqAdj { static let pos: UInt16 = 1, before: UInt16 = 2, after: UInt16 = 3 }
    enum Synproxy { static let isn: UInt16 = 1, its: UInt16 = 2, tsoff: UInt16 = 3 }
    enum NAT { static let v4min: UInt16 = 1, v4max: UInt16 = 2, proto: UInt16 = 3, v6min: UInt16 = 4, v6max: UInt16 = 5 }
    enum ProtoNAT { static let portMin: UInt16 = 1, portMax: UInt16 = 2 }
    enum Expect {
        static let master: UInt16 = 1, tuple: UInt16 = 2, mask: UInt16 = 3, timeout: UInt16 = 4, id: UInt16 = 5
        static let helpName: UInt16 = 6, zone: UInt16 = 7, flags: UInt16 = 8, expClass: UInt16 = 9, nat: UInt16 = 10, fn: UInt16 = 11
    }
    enum ExpectNAT { static let dir: UInt16 = 1, tuple: UInt16 = 2 }
}

/// Decodes ctnetlink messages into ConntrackCore values. Pure: works on bytes
/// only, so it is unit-tested without a kernel; never reads past a bound.
public enum CtNetlinkCodec {
    /// Where the value of the top-level CTA_TIMEOUT attribute (u32, big-endian) starts in
    /// an entry's attributes; nil when there is none (or the attributes are malformed before it).
    public static func timeoutOffset(in attributes: UnsafeRawBufferPointer) -> Int? {
        var it = AttributeIterator(attributes)
        while let (type, p) = it.next() {
            if type == CTA.timeout && p.count == 4, let a = p.baseAddress, let b = attributes.baseAddress { return a - b }
        }
        return nil
    }

    /// What identifies an entry (its original tuple and zone) and where its timeout value is,
    /// read without decoding the rest: for telling whether an entry came again unchanged.
    public static func keyFields(in attributes: UnsafeRawBufferPointer) throws -> (original: Tuple, zone: UInt16?, timeoutOffset: Int?) {
        var original: Tuple?, zone: UInt16?, timeoutAt: Int?
        var it = AttributeIterator(attributes)
        while let (type, p) = it.next() {
            switch type {
            case CTA.tupleOrig: original = try decodeTuple(p)
            case CTA.zone: zone = p.be16()
            case CTA.timeout where p.count == 4:
                if let a = p.baseAddress, let b = attributes.baseAddress { timeoutAt = a - b }
            default: break
            }
        }
        guard !it.malformed, let original else { throw ConntrackError(.malformed("entry without an original tuple"), operation: "decode entry") }
        return (original, zone, timeoutAt)
    }

    /// Decodes the attributes of one conntrack message (after the nfgenmsg header).
    public static func decodeEntry(family: UInt8, attributes: UnsafeRawBufferPointer) throws -> ConntrackEntry {
        var orig: Tuple?, reply: Tuple?
        var e = ConntrackEntry(original: placeholder, reply: placeholder)
        var it = AttributeIterator(attributes)
        while let (type, p) = it.next() {
            switch type {
            case CTA.tupleOrig: orig = try decodeTuple(p)
            case CTA.tupleReply: reply = try decodeTuple(p)
            case CTA.status: e.status = p.be32().map(Status.init(rawValue:))
            case CTA.timeout: e.timeout = p.be32()
            case CTA.mark: e.mark = p.be32()
            case CTA.secmark: e.secmark = p.be32()
            case CTA.zone: e.zone = p.be16()
            case CTA.use: e.use = p.be32()
            case CTA.id: e.id = p.be32()
            case CTA.protoinfo: e.protoInfo = try decodeProtoInfo(p)
            case CTA.countersOrig: e.countersOriginal = decodeCounters(p)
            case CTA.countersReply: e.countersReply = decodeCounters(p)
            case CTA.timestamp:
                var t = AttributeIterator(p)
                while let (tt, tp) = t.next() {
                    if tt == CTA.Timestamp.start { e.timestampStart = tp.be64() }
                    if tt == CTA.Timestamp.stop { e.timestampStop = tp.be64() }
                }
            case CTA.help:
                var h = AttributeIterator(p)
                while let (ht, hp) = h.next() { if ht == CTA.Help.name { e.helper = hp.cString() } }
            case CTA.labels: e.labels = Labels(wireBytes: p)
            case CTA.tupleMaster: e.master = try decodeTuple(p)
            case CTA.secctx:
                var s = AttributeIterator(p)
                while let (st, sp) = s.next() { if st == 1 { e.secctx = sp.cString() } }
            case CTA.seqAdjOrig: e.seqAdjOriginal = decodeSeqAdj(p)
            case CTA.seqAdjReply: e.seqAdjReply = decodeSeqAdj(p)
            case CTA.synproxy:
                var s = AttributeIterator(p)
                var isn: UInt32 = 0, its: UInt32 = 0, ts: UInt32 = 0
                while let (st, sp) = s.next() {
                    switch st {
                    case CTA.Synproxy.isn: isn = sp.be32() ?? 0
                    case CTA.Synproxy.its: its = sp.be32() ?? 0
                    case CTA.Synproxy.tsoff: ts = sp.be32() ?? 0
                    default: break
                    }
                }
                e.synproxy = Synproxy(isn: isn, its: its, tsoff: ts)
            default: break
            }
        }
        if it.malformed { throw ConntrackError(.malformed("attribute length past the message"), operation: "decode entry") }
        guard let o = orig else { throw ConntrackError(.malformed("entry without an original tuple"), operation: "decode entry") }
        e.original = o
        e.reply = reply ?? o.inverted()
        return e
    }

    static let placeholder = Tuple(source: .v4(0), destination: .v4(0), l4proto: 0)

    public static func decodeTuple(_ p: UnsafeRawBufferPointer) throws -> Tuple {
        var t = placeholder
        var haveIP = false
        var it = AttributeIterator(p)
        while let (type, a) = it.next() {
            switch type {
            case CTA.Tuple.ip:
                var src: IPAddress?, dst: IPAddress?
                var ip = AttributeIterator(a)
                while let (it2, ap) = ip.next() {
                    switch it2 {
                    case CTA.IP.v4src where ap.count == 4: src = IPAddress(bytes: ap)
                    case CTA.IP.v4dst where ap.count == 4: dst = IPAddress(bytes: ap)
                    case CTA.IP.v6src where ap.count == 16: src = IPAddress(bytes: ap)
                    case CTA.IP.v6dst where ap.count == 16: dst = IPAddress(bytes: ap)
                    default: break
                    }
                }
                guard let src, let dst, src.family == dst.family else {
                    throw ConntrackError(.malformed("tuple without a source and destination address"), operation: "decode tuple")
                }
                t.source = src; t.destination = dst; haveIP = true
            case CTA.Tuple.proto:
                var pr = AttributeIterator(a)
                while let (pt, pp) = pr.next() {
                    switch pt {
                    case CTA.Proto.num: t.l4proto = pp.u8() ?? 0
                    case CTA.Proto.srcPort: t.sourcePort = pp.be16() ?? 0
                    case CTA.Proto.dstPort: t.destinationPort = pp.be16() ?? 0
                    case CTA.Proto.icmpID, CTA.Proto.icmpv6ID: t.icmpID = pp.be16() ?? 0
                    case CTA.Proto.icmpType, CTA.Proto.icmpv6Type: t.icmpType = pp.u8() ?? 0
                    case CTA.Proto.icmpCode, CTA.Proto.icmpv6Code: t.icmpCode = pp.u8() ?? 0
                    default: break
                    }
                }
            case CTA.Tuple.zone: t.zone = a.be16()
            default: break
            }
        }
        guard haveIP else { throw ConntrackError(.malformed("tuple without addresses"), operation: "decode tuple") }
        return t
    }

    static func decodeProtoInfo(_ p: UnsafeRawBufferPointer) throws -> ProtoInfo? {
        var it = AttributeIterator(p)
        while let (type, a) = it.next() {
            var inner = AttributeIterator(a)
            switch type {
            case CTA.ProtoInfo.tcp:
                var info = TCPInfo(state: 0)
                while let (t, v) = inner.next() {
                    switch t {
                    case CTA.TCP.state: info.state = v.u8() ?? 0
                    case CTA.TCP.wscaleOrig: info.windowScaleOriginal = v.u8()
                    case CTA.TCP.wscaleReply: info.windowScaleReply = v.u8()
                    case CTA.TCP.flagsOrig where v.count >= 2: info.flagsOriginal = TCPFlagsMask(flags: v[0], mask: v[1])
                    case CTA.TCP.flagsReply where v.count >= 2: info.flagsReply = TCPFlagsMask(flags: v[0], mask: v[1])
                    default: break
                    }
                }
                return .tcp(info)
            case CTA.ProtoInfo.sctp:
                var info = SCTPInfo(state: 0)
                while let (t, v) = inner.next() {
                    switch t {
                    case CTA.SCTP.state: info.state = v.u8() ?? 0
                    case CTA.SCTP.vtagOrig: info.vtagOriginal = v.be32()
                    case CTA.SCTP.vtagReply: info.vtagReply = v.be32()
                    default: break
                    }
                }
                return .sctp(info)
            case CTA.ProtoInfo.dccp:
                var info = DCCPInfo(state: 0)
                while let (t, v) = inner.next() {
                    switch t {
                    case CTA.DCCP.state: info.state = v.u8() ?? 0
                    case CTA.DCCP.role: info.role = v.u8()
                    case CTA.DCCP.handshakeSeq: info.handshakeSeq = v.be64()
                    default: break
                    }
                }
                return .dccp(info)
            default: break
            }
        }
        return nil
    }

    static func decodeCounters(_ p: UnsafeRawBufferPointer) -> Counters? {
        var packets: UInt64?, bytes: UInt64?
        var it = AttributeIterator(p)
        while let (t, v) = it.next() {
            switch t {
            case CTA.Counters.packets: packets = v.be64()
            case CTA.Counters.bytes: bytes = v.be64()
            case CTA.Counters.packets32: packets = v.be32().map(UInt64.init)
            case CTA.Counters.bytes32: bytes = v.be32().map(UInt64.init)
            default: break
            }
        }
        guard let packets, let bytes else { return nil }
        return Counters(packets: packets, bytes: bytes)
    }

    static func decodeSeqAdj(_ p: UnsafeRawBufferPointer) -> SequenceAdjustment? {
        var s = SequenceAdjustment(correctionPosition: 0, offsetBefore: 0, offsetAfter: 0)
        var it = AttributeIterator(p)
        while let (t, v) = it.next() {
            switch t {
            case CTA.SeqAdj.pos: s.correctionPosition = v.be32() ?? 0
            case CTA.SeqAdj.before: s.offsetBefore = v.be32() ?? 0
            case CTA.SeqAdj.after: s.offsetAfter = v.be32() ?? 0
            default: break
            }
        }
        return s
    }

    /// Decodes one expectation message's attributes.
    public static func decodeExpectation(attributes: UnsafeRawBufferPointer) throws -> Expectation {
        var master: Tuple?, tuple: Tuple?, mask: Tuple?
        var x = Expectation(master: placeholder, tuple: placeholder, mask: placeholder)
        var it = AttributeIterator(attributes)
        while let (type, p) = it.next() {
            switch type {
            case CTA.Expect.master: master = try decodeTuple(p)
            case CTA.Expect.tuple: tuple = try decodeTuple(p)
            case CTA.Expect.mask: mask = try decodeTuple(p)
            case CTA.Expect.timeout: x.timeout = p.be32()
            case CTA.Expect.id: x.id = p.be32()
            case CTA.Expect.helpName: x.helper = p.cString()
            case CTA.Expect.zone: x.zone = p.be16()
            case CTA.Expect.flags: x.flags = p.be32()
            case CTA.Expect.expClass: x.expectClass = p.be32()
            case CTA.Expect.fn: x.function = p.cString()
            case CTA.Expect.nat:
                var n = AttributeIterator(p)
                while let (nt, np) = n.next() {
                    if nt == CTA.ExpectNAT.dir { x.natDirection = np.be32() }
                    if nt == CTA.ExpectNAT.tuple { x.natTuple = try decodeTuple(np) }
                }
            default: break
            }
        }
        if it.malformed { throw ConntrackError(.malformed("attribute length past the message"), operation: "decode expectation") }
        guard let master, let tuple, let mask else {
            throw ConntrackError(.malformed("expectation without master, tuple or mask"), operation: "decode expectation")
        }
        x.master = master; x.tuple = tuple; x.mask = mask
        return x
    }

    // MARK: - Encoding

    /// An entry's attributes as a dump carries them (both tuples, status, timeout, mark,
    /// zone, protocol state, labels): the inverse of `decodeEntry` for those fields.
    static func encodeEntryAttributes(_ e: ConntrackEntry) -> [UInt8] {
        var b = MessageBuilder()
        encodeTuple(e.original, as: CTA.tupleOrig, into: &b)
        encodeTuple(e.reply, as: CTA.tupleReply, into: &b)
        if let s = e.status { b.attrBE32(CTA.status, s.rawValue) }
        if let t = e.timeout { b.attrBE32(CTA.timeout, t) }
        if let m = e.mark { b.attrBE32(CTA.mark, m) }
        if let z = e.zone { b.attrBE16(CTA.zone, z) }
        if let p = e.protoInfo { encodeProtoInfo(p, into: &b) }
        if let l = e.labels { b.attr(CTA.labels, l.wireBytes) }
        return b.bytes
    }

    static func encodeTuple(_ t: Tuple, as type: UInt16, into b: inout MessageBuilder) {
        b.beginNest(type)
        b.beginNest(CTA.Tuple.ip)
        if t.family == .ipv4 {
            b.attr(CTA.IP.v4src, t.source.bytes); b.attr(CTA.IP.v4dst, t.destination.bytes)
        } else {
            b.attr(CTA.IP.v6src, t.source.bytes); b.attr(CTA.IP.v6dst, t.destination.bytes)
        }
        b.endNest()
        b.beginNest(CTA.Tuple.proto)
        b.attrU8(CTA.Proto.num, t.l4proto)
        switch t.l4 {
        case .tcp, .udp, .udplite, .sctp, .dccp, .gre:
            b.attrBE16(CTA.Proto.srcPort, t.sourcePort); b.attrBE16(CTA.Proto.dstPort, t.destinationPort)
        case .icmp:
            b.attrU8(CTA.Proto.icmpType, t.icmpType); b.attrU8(CTA.Proto.icmpCode, t.icmpCode); b.attrBE16(CTA.Proto.icmpID, t.icmpID)
        case .icmpv6:
            b.attrU8(CTA.Proto.icmpv6Type, t.icmpType); b.attrU8(CTA.Proto.icmpv6Code, t.icmpCode); b.attrBE16(CTA.Proto.icmpv6ID, t.icmpID)
        case .other: break
        }
        b.endNest()
        if let z = t.zone { b.attrBE16(CTA.Tuple.zone, z) }
        b.endNest()
    }

    static func encodeProtoInfo(_ p: ProtoInfo, into b: inout MessageBuilder) {
        b.beginNest(CTA.protoinfo)
        switch p {
        case .tcp(let t):
            b.beginNest(CTA.ProtoInfo.tcp)
            b.attrU8(CTA.TCP.state, t.state)
            if let w = t.windowScaleOriginal { b.attrU8(CTA.TCP.wscaleOrig, w) }
            if let w = t.windowScaleReply { b.attrU8(CTA.TCP.wscaleReply, w) }
            if let f = t.flagsOriginal { b.attr(CTA.TCP.flagsOrig, [f.flags, f.mask]) }
            if let f = t.flagsReply { b.attr(CTA.TCP.flagsReply, [f.flags, f.mask]) }
            b.endNest()
        case .sctp(let s):
            b.beginNest(CTA.ProtoInfo.sctp)
            b.attrU8(CTA.SCTP.state, s.state)
            if let v = s.vtagOriginal { b.attrBE32(CTA.SCTP.vtagOrig, v) }
            if let v = s.vtagReply { b.attrBE32(CTA.SCTP.vtagReply, v) }
            b.endNest()
        case .dccp(let d):
            b.beginNest(CTA.ProtoInfo.dccp)
            b.attrU8(CTA.DCCP.state, d.state)
            if let r = d.role { b.attrU8(CTA.DCCP.role, r) }
            if let h = d.handshakeSeq { b.attrBE64(CTA.DCCP.handshakeSeq, h) }
            b.endNest()
        }
        b.endNest()
    }

    static func encodeNAT(_ type: UInt16, address: IPAddress, port: UInt16?, into b: inout MessageBuilder) {
        b.beginNest(type)
        if address.family == .ipv4 {
            b.attr(CTA.NAT.v4min, address.bytes); b.attr(CTA.NAT.v4max, address.bytes)
        } else {
            b.attr(CTA.NAT.v6min, address.bytes); b.attr(CTA.NAT.v6max, address.bytes)
        }
        if let port {
            b.beginNest(CTA.NAT.proto)
            b.attrBE16(CTA.ProtoNAT.portMin, port); b.attrBE16(CTA.ProtoNAT.portMax, port)
            b.endNest()
        }
        b.endNest()
    }
}
