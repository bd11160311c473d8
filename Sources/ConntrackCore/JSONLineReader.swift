/// A fast reader for entry lines in the exact shape `ConntrackJSON.write` produces.
///
/// Snapshots and diffs read millions of lines; a general JSON parser building
/// dictionaries costs tens of microseconds per line. This reader walks the bytes once,
/// allocates nothing for the common entry (strings only for helper and secctx), and
/// returns nil for anything it does not recognise (escapes, unknown keys, fractions,
/// values out of range, missing fields), so callers fall back to `ConntrackJSON.decode`,
/// which accepts any JSON spelling and gives the precise error.
extension ConntrackJSON {
    public typealias Bytes = UnsafeBufferPointer<UInt8>

    /// Decodes one line, fast path first, the full parser for anything else.
    public static func decode(bytes: Bytes) throws -> (ConntrackEntry, EventKind?) {
        if let fast = fastDecode(bytes) { return fast }
        return try decode(line: String(decoding: bytes, as: UTF8.self))
    }

    /// The fast path alone: nil when the line is not in `write`'s shape.
    public static func fastDecode(_ p: Bytes) -> (ConntrackEntry, EventKind?)? {
        var s = JSONScanner(p)
        var version: UInt64?, proto: UInt64?, family: AddressFamily?
        var orig = RawTuple(), reply = RawTuple(), master: RawTuple?
        var status: UInt64?, timeout: UInt64?, mark: UInt64?, secmark: UInt64?, zone: UInt64?, use: UInt64?, id: UInt64?
        var protoInfo: ProtoInfo?
        var cOrig: Counters?, cReply: Counters?, tsStart: UInt64?, tsStop: UInt64?
        var helper: String?, labels: Labels?, secctx: String?
        var adjOrig: SequenceAdjustment?, adjReply: SequenceAdjustment?, synproxy: Synproxy?
        var event: EventKind?
        let ok = s.object { s, k in
            switch k.count {
            case 1: guard k.is("v") else { return false }; version = s.uint(); return version != nil
            case 2: guard k.is("id") else { return false }; id = s.uint(); return id != nil
            case 3:
                if k.is("tcp") { protoInfo = s.tcpInfo(); return protoInfo != nil }
                if k.is("use") { use = s.uint(); return use != nil }
                return false
            case 4:
                if k.is("orig") { return s.tuple(into: &orig) }
                if k.is("zone") { zone = s.uint(); return zone != nil }
                if k.is("mark") { mark = s.uint(); return mark != nil }
                if k.is("sctp") { protoInfo = s.sctpInfo(); return protoInfo != nil }
                if k.is("dccp") { protoInfo = s.dccpInfo(); return protoInfo != nil }
                return false
            case 5:
                if k.is("reply") { return s.tuple(into: &reply) }
                if k.is("proto") { proto = s.uint(); return proto != nil }
                if k.is("flags") { return s.skipStringArray() }
                if k.is("event") {
                    guard let v = s.string() else { return false }
                    event = EventKind(rawValue: String(decoding: v, as: UTF8.self))
                    return event != nil
                }
                return false
            case 6:
                if k.is("family") {
                    guard let v = s.string() else { return false }
                    family = v.is("ipv4") ? .ipv4 : v.is("ipv6") ? .ipv6 : nil
                    return family != nil
                }
                if k.is("status") { status = s.uint(); return status != nil }
                if k.is("helper") { helper = s.string().map { String(decoding: $0, as: UTF8.self) }; return helper != nil }
                if k.is("labels") {
                    guard let v = s.string() else { return false }
                    labels = Labels(hex: String(decoding: v, as: UTF8.self))
                    return labels != nil
                }
                if k.is("master") { var m = RawTuple(); guard s.tuple(into: &m) else { return false }; master = m; return true }
                if k.is("secctx") { secctx = s.string().map { String(decoding: $0, as: UTF8.self) }; return secctx != nil }
                if k.is("seqadj") {
                    return s.object { s, k in
                        guard let a = s.seqadj() else { return false }
                        if k.is("orig") { adjOrig = a; return true }
                        if k.is("reply") { adjReply = a; return true }
                        return false
                    }
                }
                return false
            case 7:
                if k.is("timeout") { timeout = s.uint(); return timeout != nil }
                if k.is("secmark") { secmark = s.uint(); return secmark != nil }
                return false
            case 8:
                if k.is("counters") {
                    return s.object { s, k in
                        guard let c = s.counters() else { return false }
                        if k.is("orig") { cOrig = c; return true }
                        if k.is("reply") { cReply = c; return true }
                        return false
                    }
                }
                if k.is("synproxy") {
                    var isn: UInt64?, its: UInt64?, tsoff: UInt64?
                    guard s.object({ s, k in
                        let v = s.uint()
                        if k.is("isn") { isn = v } else if k.is("its") { its = v } else if k.is("tsoff") { tsoff = v } else { return false }
                        return v != nil
                    }), let isn, let its, let tsoff, isn <= UInt32.max, its <= UInt32.max, tsoff <= UInt32.max else { return false }
                    synproxy = Synproxy(isn: UInt32(isn), its: UInt32(its), tsoff: UInt32(tsoff))
                    return true
                }
                return false
            case 9:
                guard k.is("timestamp") else { return false }
                return s.object { s, k in
                    let v = s.uint()
                    if k.is("start") { tsStart = v } else if k.is("stop") { tsStop = v } else { return false }
                    return v != nil
                }
            default: return false
            }
        }
        guard ok, s.atEnd, version == UInt64(schemaVersion), let proto, proto <= 255,
              let o = orig.tuple(proto: UInt8(proto)), let r = reply.tuple(proto: UInt8(proto)),
              o.family == r.family, family == nil || family == o.family else { return nil }
        let u32 = UInt64(UInt32.max)
        func fits(_ v: UInt64?) -> Bool { (v ?? 0) <= u32 }
        guard fits(status), fits(timeout), fits(mark), fits(secmark), fits(use), fits(id) else { return nil }
        guard (zone ?? 0) <= 65535 else { return nil }
        var e = ConntrackEntry(original: o, reply: r)
        e.status = status.map { Status(rawValue: UInt32($0)) }
        e.timeout = timeout.map { UInt32($0) }
        e.mark = mark.map { UInt32($0) }
        e.zone = zone.map { UInt16($0) }
        e.use = use.map { UInt32($0) }
        e.id = id.map { UInt32($0) }
        e.protoInfo = protoInfo
        e.countersOriginal = cOrig
        e.countersReply = cReply
        e.labels = labels
        var rare = RareAttributes(secmark: secmark.map { UInt32($0) }, timestampStart: tsStart, timestampStop: tsStop,
                               helper: helper, secctx: secctx, seqAdjOriginal: adjOrig, seqAdjReply: adjReply, synproxy: synproxy)
        if let master {
            guard let p = master.proto, p <= 255, let m = master.tuple(proto: UInt8(p)) else { return nil }
            rare.master = m
        }
        if rare != RareAttributes() { e.rare = RareBox(rare) }
        return (e, event)
    }
}

/// A tuple's fields as read, checked against the protocol once it is known.
struct RawTuple {
    var src: IPAddress?, dst: IPAddress?
    var a: UInt64?, b: UInt64?          // sport/dport or srckey/dstkey
    var keyed = false                   // a/b came from srckey/dstkey
    var type: UInt64?, code: UInt64?, icmpID: UInt64?
    var proto: UInt64?, zone: UInt64?

    func tuple(proto p: UInt8) -> Tuple? {
        guard let src, let dst, src.family == dst.family else { return nil }
        var t = Tuple(source: src, destination: dst, l4proto: p)
        switch t.l4 {
        case .tcp, .udp, .udplite, .sctp, .dccp, .gre:
            let isGRE = t.l4 == .gre
            guard keyed == isGRE, let a, let b, a <= 65535, b <= 65535, type == nil else { return nil }
            t.sourcePort = UInt16(a); t.destinationPort = UInt16(b)
        case .icmp, .icmpv6:
            guard let type, let code, let icmpID, type <= 255, code <= 255, icmpID <= 65535, a == nil else { return nil }
            t.icmpType = UInt8(type); t.icmpCode = UInt8(code); t.icmpID = UInt16(icmpID)
        case .other:
            guard a == nil, type == nil else { return nil }
        }
        if let zone { guard zone <= 65535 else { return nil }; t.zone = UInt16(zone) }
        return t
    }
}

/// A cursor over one line of JSON. Every read checks the bound; any surprise is nil/false.
struct JSONScanner {
    let p: UnsafeBufferPointer<UInt8>
    var i = 0
    init(_ p: UnsafeBufferPointer<UInt8>) { self.p = p }

    var atEnd: Bool {
        mutating get { skipSpace(); return i == p.count }
    }

    @inline(__always) mutating func skipSpace() {
        while i < p.count, p[i] == 32 || p[i] == 9 || p[i] == 13 || p[i] == 10 { i += 1 }
    }

    @inline(__always) mutating func take(_ c: UInt8) -> Bool {
        skipSpace()
        guard i < p.count, p[i] == c else { return false }
        i += 1
        return true
    }

    /// A string without escapes; its bytes (a view into the line).
    mutating func string() -> UnsafeBufferPointer<UInt8>? {
        guard take(34) else { return nil }
        let start = i
        while i < p.count {
            let c = p[i]
            if c == 34 { i += 1; return UnsafeBufferPointer(rebasing: p[start..<(i - 1)]) }
            if c == 92 || c < 32 { return nil }
            i += 1
        }
        return nil
    }

    /// A non-negative integer without sign, fraction or exponent, at most 20 digits.
    mutating func uint() -> UInt64? {
        skipSpace()
        var v: UInt64 = 0
        let start = i
        while i < p.count, p[i] >= 48, p[i] <= 57 {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(p[i] - 48))
            if o1 || o2 { return nil }
            v = a
            i += 1
        }
        guard i > start else { return nil }
        if i < p.count, p[i] == 46 || p[i] == 101 || p[i] == 69 { return nil }
        return v
    }

    /// `{ "key": value, … }`, calling `member` with the cursor on each value.
    mutating func object(_ member: (inout JSONScanner, UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        guard take(123) else { return false }
        if take(125) { return true }
        while true {
            guard let k = string(), take(58), member(&self, k) else { return false }
            if take(44) { continue }
            return take(125)
        }
    }

    mutating func skipStringArray() -> Bool {
        guard take(91) else { return false }
        if take(93) { return true }
        while true {
            guard string() != nil else { return false }
            if take(44) { continue }
            return take(93)
        }
    }

    mutating func tuple(into t: inout RawTuple) -> Bool {
        object { s, k in
            switch k.count {
            case 2: guard k.is("id") else { return false }; t.icmpID = s.uint(); return t.icmpID != nil
            case 3:
                if k.is("src") || k.is("dst") {
                    guard let v = s.string(), let a = IPAddress(ascii: v) else { return false }
                    if k[0] == 115 { t.src = a } else { t.dst = a }
                    return true
                }
                return false
            case 4:
                if k.is("code") { t.code = s.uint(); return t.code != nil }
                if k.is("type") { t.type = s.uint(); return t.type != nil }
                if k.is("zone") { t.zone = s.uint(); return t.zone != nil }
                return false
            case 5:
                if k.is("sport") { t.a = s.uint(); return t.a != nil }
                if k.is("dport") { t.b = s.uint(); return t.b != nil }
                if k.is("proto") { t.proto = s.uint(); return t.proto != nil }
                return false
            case 6:
                if k.is("srckey") { t.keyed = true; t.a = s.uint(); return t.a != nil }
                if k.is("dstkey") { t.keyed = true; t.b = s.uint(); return t.b != nil }
                return false
            default: return false
            }
        }
    }

    mutating func tcpInfo() -> ProtoInfo? {
        var state: TCPState?, wo: UInt64?, wr: UInt64?, fo: TCPFlagsMask?, fr: TCPFlagsMask?
        let ok = object { s, k in
            if k.is("state") { state = s.string().flatMap { v in TCPState.allCases.first { v.is($0.name) } }; return state != nil }
            if k.is("wscale_orig") { wo = s.uint(); return (wo ?? 256) <= 255 }
            if k.is("wscale_reply") { wr = s.uint(); return (wr ?? 256) <= 255 }
            if k.is("flags_orig") { fo = s.flagsMask(); return fo != nil }
            if k.is("flags_reply") { fr = s.flagsMask(); return fr != nil }
            return false
        }
        guard ok, let state else { return nil }
        return .tcp(TCPInfo(state: state.rawValue, windowScaleOriginal: wo.map { UInt8($0) }, windowScaleReply: wr.map { UInt8($0) },
                            flagsOriginal: fo, flagsReply: fr))
    }

    mutating func sctpInfo() -> ProtoInfo? {
        var state: SCTPState?, vo: UInt64?, vr: UInt64?
        let ok = object { s, k in
            if k.is("state") { state = s.string().flatMap { SCTPState(name: String(decoding: $0, as: UTF8.self)) }; return state != nil }
            if k.is("vtag_orig") { vo = s.uint(); return (vo ?? .max) <= UInt64(UInt32.max) }
            if k.is("vtag_reply") { vr = s.uint(); return (vr ?? .max) <= UInt64(UInt32.max) }
            return false
        }
        guard ok, let state else { return nil }
        return .sctp(SCTPInfo(state: state.rawValue, vtagOriginal: vo.map { UInt32($0) }, vtagReply: vr.map { UInt32($0) }))
    }

    mutating func dccpInfo() -> ProtoInfo? {
        var state: DCCPState?, role: UInt64?, seq: UInt64?
        let ok = object { s, k in
            if k.is("state") { state = s.string().flatMap { DCCPState(name: String(decoding: $0, as: UTF8.self)) }; return state != nil }
            if k.is("role") { role = s.uint(); return (role ?? 256) <= 255 }
            if k.is("handshake_seq") { seq = s.uint(); return seq != nil }
            return false
        }
        guard ok, let state else { return nil }
        return .dccp(DCCPInfo(state: state.rawValue, role: role.map { UInt8($0) }, handshakeSeq: seq))
    }

    mutating func flagsMask() -> TCPFlagsMask? {
        var f: UInt64?, m: UInt64?
        guard object({ s, k in
            if k.is("flags") { f = s.uint(); return (f ?? 256) <= 255 }
            if k.is("mask") { m = s.uint(); return (m ?? 256) <= 255 }
            return false
        }), let f, let m else { return nil }
        return TCPFlagsMask(flags: UInt8(f), mask: UInt8(m))
    }

    mutating func counters() -> Counters? {
        var pk: UInt64?, by: UInt64?
        guard object({ s, k in
            if k.is("packets") { pk = s.uint(); return pk != nil }
            if k.is("bytes") { by = s.uint(); return by != nil }
            return false
        }), let pk, let by else { return nil }
        return Counters(packets: pk, bytes: by)
    }

    mutating func seqadj() -> SequenceAdjustment? {
        var pos: UInt64?, before: UInt64?, after: UInt64?
        guard object({ s, k in
            let v = s.uint()
            if k.is("pos") { pos = v } else if k.is("before") { before = v } else if k.is("after") { after = v } else { return false }
            return (v ?? .max) <= UInt64(UInt32.max)
        }), let pos, let before, let after else { return nil }
        return SequenceAdjustment(correctionPosition: UInt32(pos), offsetBefore: UInt32(before), offsetAfter: UInt32(after))
    }
}

extension UnsafeBufferPointer where Element == UInt8 {
    /// Whether these bytes spell `s` exactly.
    @inline(__always) func `is`(_ s: StaticString) -> Bool {
        guard count == s.utf8CodeUnitCount else { return false }
        let q = s.utf8Start
        for k in 0..<count where self[k] != q[k] { return false }
        return true
    }
}

extension IPAddress {
    /// Parses an address from ASCII bytes (the fast readers' path; same rules as `init?(_:)`).
    init?(ascii v: UnsafeBufferPointer<UInt8>) {
        if v.contains(58) {
            guard let a = IPAddress.parseV6(Array(v)) else { return nil }
            self = a
        } else {
            guard let a = IPAddress.parseV4(v) else { return nil }
            self = .v4(a)
        }
    }
}
