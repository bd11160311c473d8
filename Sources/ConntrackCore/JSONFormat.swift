import Foundation

/// JSON lines: one object per entry, schema version 1 (see docs/json.md).
/// Lossless: every attribute ctnetlink reports has a key, and `ConntrackJSON.decode`
/// reads back exactly what `write` wrote.
public enum ConntrackJSON {
    public static let schemaVersion = 1

    public static func write(_ e: ConntrackEntry, event: EventKind? = nil, to out: inout [UInt8]) {
        out.append(ascii: "{\"v\":1")
        if let event { out.append(ascii: ",\"event\":\""); out.append(string: event.rawValue); out.append(34) }
        out.append(ascii: ",\"family\":\""); out.append(ascii: e.family == .ipv4 ? "ipv4" : "ipv6")
        out.append(ascii: "\",\"proto\":"); writeDecimal(UInt64(e.original.l4proto), to: &out)
        out.append(ascii: ",\"orig\":"); tuple(e.original, to: &out)
        out.append(ascii: ",\"reply\":"); tuple(e.reply, to: &out)
        func num(_ key: StaticString, _ v: UInt64?) {
            guard let v else { return }
            out.append(ascii: ",\""); out.append(ascii: key); out.append(ascii: "\":"); writeDecimal(v, to: &out)
        }
        if let s = e.status {
            num("status", UInt64(s.rawValue))
            out.append(ascii: ",\"flags\":[")
            for (i, n) in s.nameList.enumerated() {
                if i > 0 { out.append(44) }
                out.append(34); out.append(string: n); out.append(34)
            }
            out.append(93)
        }
        num("timeout", e.timeout.map(UInt64.init))
        num("mark", e.mark.map(UInt64.init))
        num("secmark", e.secmark.map(UInt64.init))
        num("zone", e.zone.map(UInt64.init))
        num("use", e.use.map(UInt64.init))
        num("id", e.id.map(UInt64.init))
        switch e.protoInfo {
        case .tcp(let t):
            out.append(ascii: ",\"tcp\":{\"state\":\""); out.append(ascii: (TCPState(rawValue: t.state) ?? .none).name); out.append(34)
            if let w = t.windowScaleOriginal { out.append(ascii: ",\"wscale_orig\":"); writeDecimal(UInt64(w), to: &out) }
            if let w = t.windowScaleReply { out.append(ascii: ",\"wscale_reply\":"); writeDecimal(UInt64(w), to: &out) }
            if let f = t.flagsOriginal { out.append(ascii: ",\"flags_orig\":"); flags(f, to: &out) }
            if let f = t.flagsReply { out.append(ascii: ",\"flags_reply\":"); flags(f, to: &out) }
            out.append(125)
        case .sctp(let s):
            out.append(ascii: ",\"sctp\":{\"state\":\""); out.append(string: (SCTPState(rawValue: s.state) ?? .none).text); out.append(34)
            if let v = s.vtagOriginal { out.append(ascii: ",\"vtag_orig\":"); writeDecimal(UInt64(v), to: &out) }
            if let v = s.vtagReply { out.append(ascii: ",\"vtag_reply\":"); writeDecimal(UInt64(v), to: &out) }
            out.append(125)
        case .dccp(let d):
            out.append(ascii: ",\"dccp\":{\"state\":\""); out.append(string: (DCCPState(rawValue: d.state) ?? .none).text); out.append(34)
            if let r = d.role { out.append(ascii: ",\"role\":"); writeDecimal(UInt64(r), to: &out) }
            if let h = d.handshakeSeq { out.append(ascii: ",\"handshake_seq\":"); writeDecimal(h, to: &out) }
            out.append(125)
        case nil: break
        }
        if e.countersOriginal != nil || e.countersReply != nil {
            out.append(ascii: ",\"counters\":{")
            if let c = e.countersOriginal { out.append(ascii: "\"orig\":"); counters(c, to: &out) }
            if let c = e.countersReply {
                if e.countersOriginal != nil { out.append(44) }
                out.append(ascii: "\"reply\":"); counters(c, to: &out)
            }
            out.append(125)
        }
        if e.timestampStart != nil || e.timestampStop != nil {
            out.append(ascii: ",\"timestamp\":{")
            if let s = e.timestampStart { out.append(ascii: "\"start\":"); writeDecimal(s, to: &out) }
            if let s = e.timestampStop {
                if e.timestampStart != nil { out.append(44) }
                out.append(ascii: "\"stop\":"); writeDecimal(s, to: &out)
            }
            out.append(125)
        }
        if let h = e.helper { out.append(ascii: ",\"helper\":"); string(h, to: &out) }
        if let l = e.labels { out.append(ascii: ",\"labels\":\""); out.append(string: l.hex); out.append(34) }
        if let m = e.master { out.append(ascii: ",\"master\":"); tuple(m, withProto: true, to: &out) }
        if let c = e.secctx { out.append(ascii: ",\"secctx\":"); string(c, to: &out) }
        if e.seqAdjOriginal != nil || e.seqAdjReply != nil {
            out.append(ascii: ",\"seqadj\":{")
            if let s = e.seqAdjOriginal { out.append(ascii: "\"orig\":"); seqadj(s, to: &out) }
            if let s = e.seqAdjReply {
                if e.seqAdjOriginal != nil { out.append(44) }
                out.append(ascii: "\"reply\":"); seqadj(s, to: &out)
            }
            out.append(125)
        }
        if let s = e.synproxy {
            out.append(ascii: ",\"synproxy\":{\"isn\":"); writeDecimal(UInt64(s.isn), to: &out)
            out.append(ascii: ",\"its\":"); writeDecimal(UInt64(s.its), to: &out)
            out.append(ascii: ",\"tsoff\":"); writeDecimal(UInt64(s.tsoff), to: &out); out.append(125)
        }
        out.append(125)
    }

    /// One expectation as a JSON object (`"kind":"expectation"`, docs/json.md).
    public static func write(_ x: Expectation, event: EventKind? = nil, to out: inout [UInt8]) {
        out.append(ascii: "{\"v\":1,\"kind\":\"expectation\"")
        if let event { out.append(ascii: ",\"event\":\""); out.append(string: event.rawValue); out.append(34) }
        out.append(ascii: ",\"family\":\""); out.append(ascii: x.tuple.family == .ipv4 ? "ipv4" : "ipv6")
        out.append(ascii: "\",\"proto\":"); writeDecimal(UInt64(x.tuple.l4proto), to: &out)
        out.append(ascii: ",\"tuple\":"); tuple(x.tuple, to: &out)
        out.append(ascii: ",\"mask\":"); tuple(x.mask, to: &out)
        out.append(ascii: ",\"master\":"); tuple(x.master, withProto: true, to: &out)
        func num(_ key: StaticString, _ v: UInt32?) {
            guard let v else { return }
            out.append(ascii: ",\""); out.append(ascii: key); out.append(ascii: "\":"); writeDecimal(UInt64(v), to: &out)
        }
        num("timeout", x.timeout)
        num("id", x.id)
        num("zone", x.zone.map(UInt32.init))
        num("flags", x.flags)
        num("class", x.expectClass)
        if let h = x.helper { out.append(ascii: ",\"helper\":"); string(h, to: &out) }
        if let d = x.natDirection { num("nat_dir", d) }
        if let t = x.natTuple { out.append(ascii: ",\"nat\":"); tuple(t, withProto: true, to: &out) }
        if let f = x.function { out.append(ascii: ",\"fn\":"); string(f, to: &out) }
        out.append(125)
    }

    static func tuple(_ t: Tuple, withProto: Bool = false, to out: inout [UInt8]) {
        out.append(ascii: "{\"src\":\""); t.source.write(to: &out)
        out.append(ascii: "\",\"dst\":\""); t.destination.write(to: &out); out.append(34)
        switch t.l4 {
        case .tcp, .udp, .udplite, .sctp, .dccp:
            out.append(ascii: ",\"sport\":"); writeDecimal(UInt64(t.sourcePort), to: &out)
            out.append(ascii: ",\"dport\":"); writeDecimal(UInt64(t.destinationPort), to: &out)
        case .gre:
            out.append(ascii: ",\"srckey\":"); writeDecimal(UInt64(t.sourcePort), to: &out)
            out.append(ascii: ",\"dstkey\":"); writeDecimal(UInt64(t.destinationPort), to: &out)
        case .icmp, .icmpv6:
            out.append(ascii: ",\"type\":"); writeDecimal(UInt64(t.icmpType), to: &out)
            out.append(ascii: ",\"code\":"); writeDecimal(UInt64(t.icmpCode), to: &out)
            out.append(ascii: ",\"id\":"); writeDecimal(UInt64(t.icmpID), to: &out)
        case .other: break
        }
        if withProto { out.append(ascii: ",\"proto\":"); writeDecimal(UInt64(t.l4proto), to: &out) }
        if let z = t.zone { out.append(ascii: ",\"zone\":"); writeDecimal(UInt64(z), to: &out) }
        out.append(125)
    }

    static func flags(_ f: TCPFlagsMask, to out: inout [UInt8]) {
        out.append(ascii: "{\"flags\":"); writeDecimal(UInt64(f.flags), to: &out)
        out.append(ascii: ",\"mask\":"); writeDecimal(UInt64(f.mask), to: &out); out.append(125)
    }

    static func counters(_ c: Counters, to out: inout [UInt8]) {
        out.append(ascii: "{\"packets\":"); writeDecimal(c.packets, to: &out)
        out.append(ascii: ",\"bytes\":"); writeDecimal(c.bytes, to: &out); out.append(125)
    }

    static func seqadj(_ s: SequenceAdjustment, to out: inout [UInt8]) {
        out.append(ascii: "{\"pos\":"); writeDecimal(UInt64(s.correctionPosition), to: &out)
        out.append(ascii: ",\"before\":"); writeDecimal(UInt64(s.offsetBefore), to: &out)
        out.append(ascii: ",\"after\":"); writeDecimal(UInt64(s.offsetAfter), to: &out); out.append(125)
    }

    /// Appends a tuple as its JSON object (with its protocol).
    public static func writeTuple(_ t: Tuple, to out: inout [UInt8]) { tuple(t, withProto: true, to: &out) }

    /// Appends `s` as a JSON string literal.
    public static func writeString(_ s: String, to out: inout [UInt8]) { string(s, to: &out) }

    static func string(_ s: String, to out: inout [UInt8]) {
        out.append(34)
        for b in s.utf8 {
            switch b {
            case 34: out.append(ascii: "\\\"")
            case 92: out.append(ascii: "\\\\")
            case 0..<32:
                out.append(ascii: "\\u00")
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)])
            default: out.append(b)
            }
        }
        out.append(34)
    }

    // MARK: - Reading

    public struct DecodeError: Error, CustomStringConvertible, Equatable {
        public var message: String
        public var description: String { message }
        init(_ m: String) { message = m }
    }

    /// Reads one JSON line written by `write`; throws a `DecodeError` naming the bad key.
    public static func decode(line: some StringProtocol) throws -> (ConntrackEntry, EventKind?) {
        guard let data = String(line).data(using: .utf8),
              let any = try? JSONSerialization.jsonObject(with: data),
              let o = any as? [String: Any] else { throw DecodeError("not a JSON object") }
        guard let v = o["v"] as? Int else { throw DecodeError("missing schema version \"v\"") }
        guard v == schemaVersion else { throw DecodeError("unsupported schema version \(v)") }
        guard let proto = uint(o["proto"], max: 255) else { throw DecodeError("missing or bad \"proto\"") }
        let orig = try tuple(o["orig"], proto: UInt8(proto), key: "orig")
        let reply = try tuple(o["reply"], proto: UInt8(proto), key: "reply")
        guard orig.family == reply.family else { throw DecodeError("\"orig\" and \"reply\" families differ") }
        if let f = o["family"] as? String, AddressFamily(name: f) != orig.family {
            throw DecodeError("\"family\" does not match the addresses")
        }
        var e = ConntrackEntry(original: orig, reply: reply)
        e.status = try opt(o, "status", max: UInt64(UInt32.max)).map { Status(rawValue: UInt32($0)) }
        e.timeout = try opt(o, "timeout", max: UInt64(UInt32.max)).map { UInt32($0) }
        e.mark = try opt(o, "mark", max: UInt64(UInt32.max)).map { UInt32($0) }
        e.secmark = try opt(o, "secmark", max: UInt64(UInt32.max)).map { UInt32($0) }
        e.zone = try opt(o, "zone", max: 65535).map { UInt16($0) }
        e.use = try opt(o, "use", max: UInt64(UInt32.max)).map { UInt32($0) }
        e.id = try opt(o, "id", max: UInt64(UInt32.max)).map { UInt32($0) }
        if let t = o["tcp"] {
            guard let t = t as? [String: Any], let sn = t["state"] as? String, let st = TCPState(name: sn) else {
                throw DecodeError("bad \"tcp\"")
            }
            var info = TCPInfo(state: st.rawValue)
            info.windowScaleOriginal = try opt(t, "wscale_orig", max: 255).map { UInt8($0) }
            info.windowScaleReply = try opt(t, "wscale_reply", max: 255).map { UInt8($0) }
            info.flagsOriginal = try flagsMask(t["flags_orig"])
            info.flagsReply = try flagsMask(t["flags_reply"])
            e.protoInfo = .tcp(info)
        }
        if let s = o["sctp"] {
            guard let s = s as? [String: Any], let sn = s["state"] as? String, let st = SCTPState(name: sn) else {
                throw DecodeError("bad \"sctp\"")
            }
            e.protoInfo = .sctp(SCTPInfo(state: st.rawValue,
                                         vtagOriginal: try opt(s, "vtag_orig", max: UInt64(UInt32.max)).map { UInt32($0) },
                                         vtagReply: try opt(s, "vtag_reply", max: UInt64(UInt32.max)).map { UInt32($0) }))
        }
        if let d = o["dccp"] {
            guard let d = d as? [String: Any], let sn = d["state"] as? String, let st = DCCPState(name: sn) else {
                throw DecodeError("bad \"dccp\"")
            }
            e.protoInfo = .dccp(DCCPInfo(state: st.rawValue, role: try opt(d, "role", max: 255).map { UInt8($0) },
                                         handshakeSeq: try opt(d, "handshake_seq", max: UInt64.max)))
        }
        if let c = o["counters"] {
            guard let c = c as? [String: Any] else { throw DecodeError("bad \"counters\"") }
            e.countersOriginal = try counters(c["orig"])
            e.countersReply = try counters(c["reply"])
        }
        if let t = o["timestamp"] {
            guard let t = t as? [String: Any] else { throw DecodeError("bad \"timestamp\"") }
            e.timestampStart = try opt(t, "start", max: UInt64.max)
            e.timestampStop = try opt(t, "stop", max: UInt64.max)
        }
        if let h = o["helper"] { guard let h = h as? String else { throw DecodeError("bad \"helper\"") }; e.helper = h }
        if let l = o["labels"] {
            guard let l = l as? String, let labels = Labels(hex: l) else { throw DecodeError("bad \"labels\"") }
            e.labels = labels
        }
        if let m = o["master"] { e.master = try tuple(m, proto: nil, key: "master") }
        if let c = o["secctx"] { guard let c = c as? String else { throw DecodeError("bad \"secctx\"") }; e.secctx = c }
        if let s = o["seqadj"] {
            guard let s = s as? [String: Any] else { throw DecodeError("bad \"seqadj\"") }
            e.seqAdjOriginal = try seqadj(s["orig"])
            e.seqAdjReply = try seqadj(s["reply"])
        }
        if let s = o["synproxy"] {
            guard let s = s as? [String: Any],
                  let isn = uint(s["isn"], max: UInt64(UInt32.max)), let its = uint(s["its"], max: UInt64(UInt32.max)),
                  let ts = uint(s["tsoff"], max: UInt64(UInt32.max)) else { throw DecodeError("bad \"synproxy\"") }
            e.synproxy = Synproxy(isn: UInt32(isn), its: UInt32(its), tsoff: UInt32(ts))
        }
        var event: EventKind? = nil
        if let ev = o["event"] {
            guard let s = ev as? String, let k = EventKind(rawValue: s) else { throw DecodeError("bad \"event\"") }
            event = k
        }
        return (e, event)
    }

    /// Reads one expectation line written by `write(_: Expectation)`.
    public static func decodeExpectation(line: some StringProtocol) throws -> Expectation {
        guard let data = String(line).data(using: .utf8),
              let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw DecodeError("not a JSON object") }
        guard o["v"] as? Int == schemaVersion, o["kind"] as? String == "expectation" else {
            throw DecodeError("not an expectation line of schema version \(schemaVersion)")
        }
        guard let proto = uint(o["proto"], max: 255) else { throw DecodeError("missing or bad \"proto\"") }
        let t = try tuple(o["tuple"], proto: UInt8(proto), key: "tuple")
        let m = try tuple(o["mask"], proto: UInt8(proto), key: "mask")
        let master = try tuple(o["master"], proto: nil, key: "master")
        var x = Expectation(master: master, tuple: t, mask: m)
        func u32(_ k: String) throws -> UInt32? { try opt(o, k, max: UInt64(UInt32.max)).map { UInt32($0) } }
        x.timeout = try u32("timeout")
        x.id = try u32("id")
        x.zone = try opt(o, "zone", max: 65535).map { UInt16($0) }
        x.flags = try u32("flags")
        x.expectClass = try u32("class")
        x.natDirection = try u32("nat_dir")
        if let n = o["nat"] { x.natTuple = try tuple(n, proto: nil, key: "nat") }
        if let h = o["helper"] { guard let h = h as? String else { throw DecodeError("bad \"helper\"") }; x.helper = h }
        if let f = o["fn"] { guard let f = f as? String else { throw DecodeError("bad \"fn\"") }; x.function = f }
        return x
    }

    static func uint(_ v: Any?, max: UInt64) -> UInt64? {
        guard let n = v as? NSNumber else { return nil }
        let d = n.doubleValue
        guard d >= 0, d.rounded() == d else { return nil }
        let u = n.uint64Value
        guard u <= max else { return nil }
        return u
    }

    static func opt(_ o: [String: Any], _ key: String, max: UInt64) throws -> UInt64? {
        guard let v = o[key] else { return nil }
        guard let u = uint(v, max: max) else { throw DecodeError("bad \"\(key)\"") }
        return u
    }

    static func tuple(_ v: Any?, proto: UInt8?, key: String) throws -> Tuple {
        guard let t = v as? [String: Any] else { throw DecodeError("missing or bad \"\(key)\"") }
        guard let s = t["src"] as? String, let src = IPAddress(s),
              let d = t["dst"] as? String, let dst = IPAddress(d), src.family == dst.family else {
            throw DecodeError("bad addresses in \"\(key)\"")
        }
        let p: UInt8
        if let proto { p = proto } else {
            guard let n = uint(t["proto"], max: 255) else { throw DecodeError("missing \"proto\" in \"\(key)\"") }
            p = UInt8(n)
        }
        var tu = Tuple(source: src, destination: dst, l4proto: p)
        func field(_ k: String, _ max: UInt64) throws -> UInt64 {
            guard let n = uint(t[k], max: max) else { throw DecodeError("missing or bad \"\(k)\" in \"\(key)\"") }
            return n
        }
        switch tu.l4 {
        case .tcp, .udp, .udplite, .sctp, .dccp:
            tu.sourcePort = UInt16(try field("sport", 65535)); tu.destinationPort = UInt16(try field("dport", 65535))
        case .gre:
            tu.sourcePort = UInt16(try field("srckey", 65535)); tu.destinationPort = UInt16(try field("dstkey", 65535))
        case .icmp, .icmpv6:
            tu.icmpType = UInt8(try field("type", 255)); tu.icmpCode = UInt8(try field("code", 255)); tu.icmpID = UInt16(try field("id", 65535))
        case .other: break
        }
        if t["zone"] != nil { tu.zone = UInt16(try field("zone", 65535)) }
        return tu
    }

    static func flagsMask(_ v: Any?) throws -> TCPFlagsMask? {
        guard let v else { return nil }
        guard let o = v as? [String: Any], let f = uint(o["flags"], max: 255), let m = uint(o["mask"], max: 255) else {
            throw DecodeError("bad TCP flags")
        }
        return TCPFlagsMask(flags: UInt8(f), mask: UInt8(m))
    }

    static func counters(_ v: Any?) throws -> Counters? {
        guard let v else { return nil }
        guard let o = v as? [String: Any], let p = uint(o["packets"], max: .max), let b = uint(o["bytes"], max: .max) else {
            throw DecodeError("bad counters")
        }
        return Counters(packets: p, bytes: b)
    }

    static func seqadj(_ v: Any?) throws -> SequenceAdjustment? {
        guard let v else { return nil }
        guard let o = v as? [String: Any], let p = uint(o["pos"], max: UInt64(UInt32.max)),
              let b = uint(o["before"], max: UInt64(UInt32.max)), let a = uint(o["after"], max: UInt64(UInt32.max)) else {
            throw DecodeError("bad seqadj")
        }
        return SequenceAdjustment(correctionPosition: UInt32(p), offsetBefore: UInt32(b), offsetAfter: UInt32(a))
    }
}
