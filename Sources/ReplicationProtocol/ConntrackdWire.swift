import ConntrackCore

/// conntrackd's sync message format, protocol version 1 (conntrack-tools 1.4.x), as
/// documented in docs/replication-protocol.md ("conntrackd interoperability"): an 8-byte
/// header (version and type, flags, length, sequence), 16 bytes for ACK/NACK/RESYNC,
/// then TLV attributes padded to 4 bytes. Big-endian integers, addresses and ports in
/// network order. Decoding never reads past the message and rejects what conntrackd
/// rejects (a bad version, length or attribute).
public enum ConntrackdWire {
    public static let version: UInt8 = 1
    public static let headerSize = 8
    public static let controlSize = 16

    public enum MessageType: UInt8, Sendable {
        case entryNew = 0, entryUpdate = 1, entryDelete = 2
        case expectationNew = 3, expectationUpdate = 4, expectationDelete = 5
        case control = 10
    }

    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let resync = Flags(rawValue: 0x02)
        public static let nack = Flags(rawValue: 0x04)
        public static let ack = Flags(rawValue: 0x08)
        public static let alive = Flags(rawValue: 0x10)
        public static let hello = Flags(rawValue: 0x20)
        public static let helloBack = Flags(rawValue: 0x40)
    }

    /// Entry attribute types (NTA_*).
    enum Attr: UInt16 {
        case ipv4 = 0, ipv6, l4proto, port, tcpState, status, timeout, mark
        case masterIPv4, masterIPv6, masterL4proto, masterPort
        case snatIPv4, dnatIPv4, spatPort, dpatPort, natSeqAdj
        case sctpState, sctpVtagOrig, sctpVtagReply, dccpState, dccpRole
        case icmpType, icmpCode, icmpID, tcpWscaleOrig, tcpWscaleReply
        case helperName, labels, snatIPv6, dnatIPv6, synproxy, zone
    }

    /// Expectation attribute types (NTA_EXP_*).
    enum ExpAttr: UInt16 {
        case masterIPv4 = 0, masterIPv6, masterL4proto, masterPort
        case expectIPv4, expectIPv6, expectL4proto, expectPort
        case maskIPv4, maskIPv6, maskL4proto, maskPort
        case timeout, flags, expClass, natIPv4, natPort, natL4proto, natDir, helperName, function
    }

    /// One decoded message.
    public enum Message: Sendable, Equatable {
        case entry(MessageType, ConntrackEntry, flags: Flags, sequence: UInt32)
        case expectation(MessageType, Expectation, flags: Flags, sequence: UInt32)
        /// ACK, NACK or RESYNC with their range; ALIVE (range 0, 0).
        case control(Flags, from: UInt32, to: UInt32, sequence: UInt32)

        public var sequence: UInt32 {
            switch self {
            case .entry(_, _, _, let s), .expectation(_, _, _, let s), .control(_, _, _, let s): return s
            }
        }
        public var flags: Flags {
            switch self {
            case .entry(_, _, let f, _), .expectation(_, _, let f, _), .control(let f, _, _, _): return f
            }
        }
    }

    public struct DecodeError: Error, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
        init(_ m: String) { message = m }
    }

    // MARK: - Encoding

    /// The message for an entry event. Like conntrackd, only the original tuple travels;
    /// NAT is sent as the addresses and ports the reply tuple differs by.
    public static func encode(_ type: MessageType, _ e: ConntrackEntry, flags: Flags = [], sequence: UInt32,
                              sendTimeout: Bool = true) -> [UInt8] {
        var w = Writer(type: type, flags: flags, sequence: sequence)
        let o = e.original
        switch (o.source, o.destination) {
        case (.v4, .v4): w.attr(Attr.ipv4.rawValue, o.source.bytes + o.destination.bytes)
        default: w.attr(Attr.ipv6.rawValue, o.source.bytes + o.destination.bytes)
        }
        w.u32(Attr.status.rawValue, (e.status ?? []).rawValue)
        w.attr(Attr.l4proto.rawValue, [o.l4proto])
        switch o.l4 {
        case .tcp, .udp, .sctp, .dccp:
            w.attr(Attr.port.rawValue, be16(o.sourcePort) + be16(o.destinationPort))
        case .icmp, .icmpv6:
            w.attr(Attr.icmpType.rawValue, [o.icmpType])
            w.attr(Attr.icmpCode.rawValue, [o.icmpCode])
            w.attr(Attr.icmpID.rawValue, be16(o.icmpID))
        default: break
        }
        switch e.protoInfo {
        case .tcp(let t):
            w.attr(Attr.tcpState.rawValue, [t.state])
            if let s = t.windowScaleOriginal { w.attr(Attr.tcpWscaleOrig.rawValue, [s]) }
            if let s = t.windowScaleReply { w.attr(Attr.tcpWscaleReply.rawValue, [s]) }
        case .sctp(let s):
            w.attr(Attr.sctpState.rawValue, [s.state])
            if let v = s.vtagOriginal { w.u32(Attr.sctpVtagOrig.rawValue, v) }
            if let v = s.vtagReply { w.u32(Attr.sctpVtagReply.rawValue, v) }
        case .dccp(let d):
            w.attr(Attr.dccpState.rawValue, [d.state])
            if let r = d.role { w.attr(Attr.dccpRole.rawValue, [r]) }
        case nil: break
        }
        if sendTimeout, let t = e.timeout { w.u32(Attr.timeout.rawValue, t) }
        if let m = e.mark { w.u32(Attr.mark.rawValue, m) }
        if let m = e.master {
            switch m.source {
            case .v4: w.attr(Attr.masterIPv4.rawValue, m.source.bytes + m.destination.bytes)
            case .v6: w.attr(Attr.masterIPv6.rawValue, m.source.bytes + m.destination.bytes)
            }
            w.attr(Attr.masterL4proto.rawValue, [m.l4proto])
            if m.l4.hasPorts { w.attr(Attr.masterPort.rawValue, be16(m.sourcePort) + be16(m.destinationPort)) }
        }
        if e.isSourceNAT {
            let r = e.reply
            w.attr(r.destination.family == .ipv4 ? Attr.snatIPv4.rawValue : Attr.snatIPv6.rawValue, r.destination.bytes)
            if o.l4.hasPorts && r.destinationPort != o.sourcePort { w.attr(Attr.spatPort.rawValue, be16(r.destinationPort)) }
        }
        if e.isDestinationNAT {
            let r = e.reply
            w.attr(r.source.family == .ipv4 ? Attr.dnatIPv4.rawValue : Attr.dnatIPv6.rawValue, r.source.bytes)
            if o.l4.hasPorts && r.sourcePort != o.destinationPort { w.attr(Attr.dpatPort.rawValue, be16(r.sourcePort)) }
        }
        if e.seqAdjOriginal != nil || e.seqAdjReply != nil {
            var b: [UInt8] = []
            for s in [e.seqAdjOriginal, e.seqAdjReply] {
                let v = s ?? SequenceAdjustment(correctionPosition: 0, offsetBefore: 0, offsetAfter: 0)
                b += be32(v.correctionPosition) + be32(v.offsetBefore) + be32(v.offsetAfter)
            }
            w.attr(Attr.natSeqAdj.rawValue, b)
        }
        if let h = e.helper { w.attr(Attr.helperName.rawValue, Array(h.utf8) + [0]) }
        if let l = e.labels, !l.isEmpty {
            // n × u32 words, bit b of word i = label 32i+b; as many words as the highest label needs.
            let words = (l.bits.last! / 32) + 1
            var b: [UInt8] = []
            for i in 0..<words {
                var v: UInt32 = 0
                for k in 0..<32 where l.contains(i * 32 + k) { v |= 1 << UInt32(k) }
                b += be32(v)
            }
            w.attr(Attr.labels.rawValue, b)
        }
        if let s = e.synproxy { w.attr(Attr.synproxy.rawValue, be32(s.its) + be32(s.isn) + be32(s.tsoff)) }
        if let z = e.zone, z != 0 { w.attr(Attr.zone.rawValue, be16(z)) }
        return w.finish()
    }

    /// An expectation event (types 3–5).
    public static func encode(_ type: MessageType, _ x: Expectation, flags: Flags = [], sequence: UInt32) -> [UInt8] {
        var w = Writer(type: type, flags: flags, sequence: sequence)
        func tuple(_ t: Tuple, _ v4: ExpAttr, _ v6: ExpAttr, _ proto: ExpAttr, _ port: ExpAttr) {
            w.attr(t.family == .ipv4 ? v4.rawValue : v6.rawValue, t.source.bytes + t.destination.bytes)
            w.attr(proto.rawValue, [t.l4proto])
            w.attr(port.rawValue, be16(t.sourcePort) + be16(t.destinationPort))
        }
        tuple(x.master, .masterIPv4, .masterIPv6, .masterL4proto, .masterPort)
        tuple(x.tuple, .expectIPv4, .expectIPv6, .expectL4proto, .expectPort)
        tuple(x.mask, .maskIPv4, .maskIPv6, .maskL4proto, .maskPort)
        w.u32(ExpAttr.timeout.rawValue, x.timeout ?? 0)
        w.u32(ExpAttr.flags.rawValue, x.flags ?? 0)
        if let c = x.expectClass { w.u32(ExpAttr.expClass.rawValue, c) }
        if let n = x.natTuple {
            w.attr(ExpAttr.natIPv4.rawValue, n.destination.family == .ipv4 ? n.destination.bytes : [])
            w.attr(ExpAttr.natPort.rawValue, be16(n.destinationPort))
            w.attr(ExpAttr.natL4proto.rawValue, [n.l4proto])
            w.u32(ExpAttr.natDir.rawValue, x.natDirection ?? 0)
        }
        if let h = x.helper { w.attr(ExpAttr.helperName.rawValue, Array(h.utf8) + [0]) }
        if let f = x.function { w.attr(ExpAttr.function.rawValue, Array(f.utf8) + [0]) }
        return w.finish()
    }

    /// ACK/NACK/RESYNC with a range (16 bytes), or ALIVE (8 bytes) when `flags` is `.alive`.
    public static func control(_ flags: Flags, from: UInt32 = 0, to: UInt32 = 0, sequence: UInt32) -> [UInt8] {
        var out = [(version << 4) | MessageType.control.rawValue, flags.rawValue]
        let ranged = !flags.isDisjoint(with: [.ack, .nack, .resync])
        out += be16(UInt16(ranged ? controlSize : headerSize)) + be32(sequence)
        if ranged { out += be32(from) + be32(to) }
        return out
    }

    struct Writer {
        var out: [UInt8]
        init(type: MessageType, flags: Flags, sequence: UInt32) {
            out = [(ConntrackdWire.version << 4) | type.rawValue, flags.rawValue, 0, 0] + be32(sequence)
        }
        mutating func attr(_ type: UInt16, _ payload: [UInt8]) {
            out += be16(UInt16(4 + payload.count)) + be16(type) + payload
            while out.count % 4 != 0 { out.append(0) }
        }
        mutating func u32(_ type: UInt16, _ v: UInt32) { attr(type, be32(v)) }
        mutating func finish() -> [UInt8] {
            out[2] = UInt8(out.count >> 8); out[3] = UInt8(out.count & 0xff)
            return out
        }
    }

    // MARK: - Decoding

    /// Splits a datagram (or a stream's bytes) into whole messages; `rest` is the count of
    /// trailing bytes that do not yet form a whole message (a TCP stream keeps them).
    public static func split(_ d: [UInt8]) throws -> (messages: [ArraySlice<UInt8>], rest: Int) {
        var out: [ArraySlice<UInt8>] = []
        var i = 0
        while d.count - i >= headerSize {
            guard d[i] >> 4 == version else { throw DecodeError("version \(d[i] >> 4), not 1") }
            let len = Int(d[i + 2]) << 8 | Int(d[i + 3])
            guard len >= headerSize, len % 4 == 0 else { throw DecodeError("bad message length \(len)") }
            guard i + len <= d.count else { break }
            out.append(d[i..<(i + len)])
            i += len
        }
        return (out, d.count - i)
    }

    /// Decodes one whole message (as `split` returns them).
    public static func decode(_ m: ArraySlice<UInt8>) throws -> Message {
        let b = Array(m)
        guard b.count >= headerSize else { throw DecodeError("message shorter than its header") }
        guard b[0] >> 4 == version else { throw DecodeError("version \(b[0] >> 4), not 1") }
        let len = Int(b[2]) << 8 | Int(b[3])
        guard len == b.count, len % 4 == 0 else { throw DecodeError("length \(len) does not match \(b.count) bytes") }
        let flags = Flags(rawValue: b[1])
        let seq = rd32(b, 4)
        let rawType = b[0] & 0x0f
        guard let type = MessageType(rawValue: rawType) else { throw DecodeError("unknown message type \(rawType)") }
        if type == .control {
            if !flags.isDisjoint(with: [.ack, .nack, .resync]) {
                guard b.count >= controlSize else { throw DecodeError("control message without its range") }
                return .control(flags, from: rd32(b, 8), to: rd32(b, 12), sequence: seq)
            }
            guard flags.contains(.alive) || !flags.isDisjoint(with: [.hello, .helloBack]) else {
                throw DecodeError("control message without ACK, NACK, RESYNC or ALIVE")
            }
            return .control(flags, from: 0, to: 0, sequence: seq)
        }
        var attrs: [UInt16: [UInt8]] = [:]
        var i = headerSize
        while i < b.count {
            guard b.count - i >= 4 else { throw DecodeError("attribute header cut off") }
            let alen = Int(rd16(b, i)), atype = rd16(b, i + 2)
            guard alen >= 4, i + alen <= b.count else { throw DecodeError("attribute \(atype) of length \(alen) overruns the message") }
            attrs[atype] = Array(b[(i + 4)..<(i + alen)])
            i += (alen + 3) & ~3
        }
        switch type {
        case .entryNew, .entryUpdate, .entryDelete:
            return .entry(type, try entry(attrs), flags: flags, sequence: seq)
        default:
            return .expectation(type, try expectation(attrs), flags: flags, sequence: seq)
        }
    }

    /// Expected payload sizes of fixed-size entry attributes (conntrackd rejects others).
    static let entrySizes: [Attr: Int] = [
        .ipv4: 8, .ipv6: 32, .l4proto: 1, .port: 4, .tcpState: 1, .status: 4, .timeout: 4, .mark: 4,
        .masterIPv4: 8, .masterIPv6: 32, .masterL4proto: 1, .masterPort: 4, .snatIPv4: 4, .dnatIPv4: 4,
        .spatPort: 2, .dpatPort: 2, .natSeqAdj: 24, .sctpState: 1, .sctpVtagOrig: 4, .sctpVtagReply: 4,
        .dccpState: 1, .dccpRole: 1, .icmpType: 1, .icmpCode: 1, .icmpID: 2, .tcpWscaleOrig: 1, .tcpWscaleReply: 1,
        .snatIPv6: 16, .dnatIPv6: 16, .synproxy: 12, .zone: 2,
    ]

    static func entry(_ a: [UInt16: [UInt8]]) throws -> ConntrackEntry {
        for (t, v) in a {
            guard let attr = Attr(rawValue: t) else { throw DecodeError("unknown attribute \(t)") }
            if let size = entrySizes[attr], v.count != size { throw DecodeError("attribute \(attr) has \(v.count) bytes, not \(size)") }
        }
        func get(_ x: Attr) -> [UInt8]? { a[x.rawValue] }
        guard let proto = get(.l4proto)?.first else { throw DecodeError("no layer-4 protocol") }
        var o: Tuple
        if let v = get(.ipv4) {
            o = Tuple(source: IPAddress(bytes: v[0..<4])!, destination: IPAddress(bytes: v[4..<8])!, l4proto: proto)
        } else if let v = get(.ipv6) {
            o = Tuple(source: IPAddress(bytes: v[0..<16])!, destination: IPAddress(bytes: v[16..<32])!, l4proto: proto)
        } else {
            throw DecodeError("no addresses")
        }
        if let p = get(.port) { o.sourcePort = rd16(p, 0); o.destinationPort = rd16(p, 2) }
        if let t = get(.icmpType) { o.icmpType = t[0] }
        if let c = get(.icmpCode) { o.icmpCode = c[0] }
        if let i = get(.icmpID) { o.icmpID = rd16(i, 0) }
        var r = o.inverted()
        if let s = get(.snatIPv4) ?? get(.snatIPv6) {
            guard let addr = IPAddress(bytes: s), addr.family == o.family else { throw DecodeError("SNAT address of another family") }
            r.destination = addr
        }
        if let d = get(.dnatIPv4) ?? get(.dnatIPv6) {
            guard let addr = IPAddress(bytes: d), addr.family == o.family else { throw DecodeError("DNAT address of another family") }
            r.source = addr
        }
        if let p = get(.spatPort) { r.destinationPort = rd16(p, 0) }
        if let p = get(.dpatPort) { r.sourcePort = rd16(p, 0) }
        var e = ConntrackEntry(original: o, reply: r)
        e.status = get(.status).map { Status(rawValue: rd32($0, 0)) }
        e.timeout = get(.timeout).map { rd32($0, 0) }
        e.mark = get(.mark).map { rd32($0, 0) }
        if let s = get(.tcpState) {
            e.protoInfo = .tcp(TCPInfo(state: s[0], windowScaleOriginal: get(.tcpWscaleOrig)?[0], windowScaleReply: get(.tcpWscaleReply)?[0]))
        } else if let s = get(.sctpState) {
            e.protoInfo = .sctp(SCTPInfo(state: s[0], vtagOriginal: get(.sctpVtagOrig).map { rd32($0, 0) },
                                         vtagReply: get(.sctpVtagReply).map { rd32($0, 0) }))
        } else if let s = get(.dccpState) {
            e.protoInfo = .dccp(DCCPInfo(state: s[0], role: get(.dccpRole)?[0]))
        }
        if let mp = get(.masterL4proto)?.first {
            var m: Tuple
            if let v = get(.masterIPv4) {
                m = Tuple(source: IPAddress(bytes: v[0..<4])!, destination: IPAddress(bytes: v[4..<8])!, l4proto: mp)
            } else if let v = get(.masterIPv6) {
                m = Tuple(source: IPAddress(bytes: v[0..<16])!, destination: IPAddress(bytes: v[16..<32])!, l4proto: mp)
            } else {
                throw DecodeError("master protocol without master addresses")
            }
            if let p = get(.masterPort) { m.sourcePort = rd16(p, 0); m.destinationPort = rd16(p, 2) }
            e.master = m
        }
        if let s = get(.natSeqAdj) {
            e.seqAdjOriginal = SequenceAdjustment(correctionPosition: rd32(s, 0), offsetBefore: rd32(s, 4), offsetAfter: rd32(s, 8))
            e.seqAdjReply = SequenceAdjustment(correctionPosition: rd32(s, 12), offsetBefore: rd32(s, 16), offsetAfter: rd32(s, 20))
        }
        if let h = get(.helperName) {
            // conntrackd rejects names whose attribute (header included) is over 16 bytes.
            guard h.count + 4 <= 16, h.last == 0 else { throw DecodeError("helper name too long or not terminated") }
            e.helper = String(decoding: h.dropLast(), as: UTF8.self)
        }
        if let l = get(.labels) {
            guard l.count % 4 == 0, l.count <= 1024 else { throw DecodeError("labels of \(l.count) bytes") }
            var labels = Labels()
            for w in 0..<(l.count / 4) {
                let v = rd32(l, w * 4)
                for k in 0..<32 where v & (1 << UInt32(k)) != 0 && w * 32 + k < 128 { labels.set(w * 32 + k) }
            }
            e.labels = labels
        }
        if let s = get(.synproxy) { e.synproxy = Synproxy(isn: rd32(s, 4), its: rd32(s, 0), tsoff: rd32(s, 8)) }
        if let z = get(.zone) { e.zone = rd16(z, 0) }
        return e
    }

    static func expectation(_ a: [UInt16: [UInt8]]) throws -> Expectation {
        for t in a.keys where ExpAttr(rawValue: t) == nil { throw DecodeError("unknown expectation attribute \(t)") }
        func tuple(_ v4: ExpAttr, _ v6: ExpAttr, _ proto: ExpAttr, _ port: ExpAttr, _ what: String) throws -> Tuple {
            guard let p = a[proto.rawValue], p.count == 1 else { throw DecodeError("\(what): no protocol") }
            var t: Tuple
            if let v = a[v4.rawValue], v.count == 8 {
                t = Tuple(source: IPAddress(bytes: v[0..<4])!, destination: IPAddress(bytes: v[4..<8])!, l4proto: p[0])
            } else if let v = a[v6.rawValue], v.count == 32 {
                t = Tuple(source: IPAddress(bytes: v[0..<16])!, destination: IPAddress(bytes: v[16..<32])!, l4proto: p[0])
            } else {
                throw DecodeError("\(what): no addresses")
            }
            if let ports = a[port.rawValue] {
                guard ports.count == 4 else { throw DecodeError("\(what): bad ports") }
                t.sourcePort = rd16(ports, 0); t.destinationPort = rd16(ports, 2)
            }
            return t
        }
        var x = Expectation(master: try tuple(.masterIPv4, .masterIPv6, .masterL4proto, .masterPort, "master"),
                            tuple: try tuple(.expectIPv4, .expectIPv6, .expectL4proto, .expectPort, "expected tuple"),
                            mask: try tuple(.maskIPv4, .maskIPv6, .maskL4proto, .maskPort, "mask"))
        func u32(_ k: ExpAttr) throws -> UInt32? {
            guard let v = a[k.rawValue] else { return nil }
            guard v.count == 4 else { throw DecodeError("expectation attribute \(k) has \(v.count) bytes") }
            return rd32(v, 0)
        }
        x.timeout = try u32(.timeout)
        x.flags = try u32(.flags)
        x.expectClass = try u32(.expClass)
        x.natDirection = try u32(.natDir)
        if let h = a[ExpAttr.helperName.rawValue] {
            guard h.last == 0, h.count <= 16 else { throw DecodeError("expectation helper name not terminated") }
            x.helper = String(decoding: h.dropLast(), as: UTF8.self)
        }
        if let f = a[ExpAttr.function.rawValue] {
            guard f.last == 0 else { throw DecodeError("expectation function name not terminated") }
            x.function = String(decoding: f.dropLast(), as: UTF8.self)
        }
        if let n = a[ExpAttr.natIPv4.rawValue], n.count == 4, let np = a[ExpAttr.natL4proto.rawValue], np.count == 1 {
            var t = Tuple(source: .v4(0), destination: IPAddress(bytes: n)!, l4proto: np[0])
            if let port = a[ExpAttr.natPort.rawValue], port.count == 2 { t.destinationPort = rd16(port, 0) }
            x.natTuple = t
        }
        return x
    }
}

@inline(__always) func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
@inline(__always) func be32(_ v: UInt32) -> [UInt8] {
    [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
}
@inline(__always) func rd16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
@inline(__always) func rd32(_ b: [UInt8], _ i: Int) -> UInt32 {
    UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
}
