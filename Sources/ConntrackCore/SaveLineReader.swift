/// A fast reader for `save` lines in the exact shape `ConntrackSave` and conntrack
/// 1.4.7 write them. It works on bytes, allocates almost nothing, and returns nil for
/// anything it does not recognise, so callers fall back to the full conntrack(8)
/// parser, which gives the precise error. Loading 250k lines must not be parse-bound.
public struct SaveLine: Sendable, Equatable {
    public enum Command: Sendable, Equatable { case create, add, update, delete }
    public var command: Command
    public var entry: ConntrackEntry
    /// `-n ADDR`: source NAT to this address (port from --reply-port-dst when it differs).
    public var sourceNAT: (address: IPAddress, port: UInt16?)?
    /// `-g ADDR`: destination NAT to this address (port from --reply-port-src when it differs).
    public var destinationNAT: (address: IPAddress, port: UInt16?)?

    public static func == (a: SaveLine, b: SaveLine) -> Bool {
        a.command == b.command && a.entry == b.entry
            && a.sourceNAT?.address == b.sourceNAT?.address && a.sourceNAT?.port == b.sourceNAT?.port
            && a.destinationNAT?.address == b.destinationNAT?.address && a.destinationNAT?.port == b.destinationNAT?.port
    }

    /// Label numbers of `--label-add` (names need a label map: such lines return nil).
    public static func parse(_ line: Substring) -> SaveLine? { parse(Array(line.utf8)[...]) }

    public static func parse(_ line: ArraySlice<UInt8>) -> SaveLine? {
        line.withUnsafeBufferPointer { parse(bytes: $0) }
    }

    typealias Bytes = UnsafeBufferPointer<UInt8>

    static func parse(bytes p: Bytes) -> SaveLine? {
        var i = 0
        // Tokens are runs of non-blank bytes; no arrays are built.
        func nextToken() -> Bytes? {
            while i < p.count && (p[i] == 32 || p[i] == 9 || p[i] == 13) { i += 1 }
            guard i < p.count else { return nil }
            let start = i
            while i < p.count && p[i] != 32 && p[i] != 9 && p[i] != 13 { i += 1 }
            return Bytes(rebasing: p[start..<i])
        }
        guard let first = nextToken(), first.count == 2, first[0] == 45 else { return nil }
        let command: Command
        switch first[1] {
        case UInt8(ascii: "A"): command = .add
        case UInt8(ascii: "I"): command = .create
        case UInt8(ascii: "U"): command = .update
        case UInt8(ascii: "D"): command = .delete
        default: return nil
        }
        var timeout: UInt32?, status: Status?, secmark: UInt32?, zone: UInt16?, origZone: UInt16?, replyZone: UInt16?
        var mark: UInt32?, labels: Labels?
        var s: IPAddress?, d: IPAddress?, r: IPAddress?, q: IPAddress?
        var snat: IPAddress?, dnat: IPAddress?
        var proto: L4Protocol?
        var sport: UInt16?, dport: UInt16?, rsport: UInt16?, rdport: UInt16?
        var icmpType: UInt8?, icmpCode: UInt8?, icmpID: UInt16?
        var state: String?, vtagO: UInt32?, vtagR: UInt32?, role: UInt8?

        while let keyBytes = nextToken() {
            guard let v = nextToken(), let key = SaveLine.key(keyBytes) else { return nil }
            var value: String { String(decoding: v, as: UTF8.self) }
            switch key {
            case .optT: guard let n = SaveLine.decimal(v, max: UInt64(UInt32.max)) else { return nil }; timeout = UInt32(n)
            case .optU where v.count == 5 && v[0] == 85:   // "UNSET"
                status = Status()
            case .optU:
                var st = Status()
                for part in value.split(separator: ",") where part != "UNSET" {
                    guard let b = Status.settableByName[String(part)] else { return nil }
                    st.insert(b)
                }
                status = st
            case .optC: guard let n = SaveLine.decimal(v, max: UInt64(UInt32.max)) else { return nil }; secmark = UInt32(n)
            case .optW: guard let n = SaveLine.decimal(v, max: 65535) else { return nil }; zone = UInt16(n)
            case .origZone: guard let n = UInt16(value) else { return nil }; origZone = n
            case .replyZone: guard let n = UInt16(value) else { return nil }; replyZone = n
            case .optM: guard let n = SaveLine.decimal(v, max: UInt64(UInt32.max)) else { return nil }; mark = UInt32(n)
            case .labelAdd:
                var l = Labels()
                for part in value.split(separator: ",") {
                    guard let b = Int(part), b >= 0, b < 128 else { return nil }
                    l.set(b)
                }
                labels = l
            case .optS: guard let a = SaveLine.address(v) else { return nil }; s = a
            case .optD: guard let a = SaveLine.address(v) else { return nil }; d = a
            case .optR: guard let a = SaveLine.address(v) else { return nil }; r = a
            case .optQ: guard let a = SaveLine.address(v) else { return nil }; q = a
            case .optG: guard let a = SaveLine.address(v) else { return nil }; dnat = a; r = a
            case .optN: guard let a = SaveLine.address(v) else { return nil }; snat = a; q = a
            case .optP: guard let p = SaveLine.protocols[value] else { return nil }; proto = p
            case .sport, .srckey: guard let n = SaveLine.decimal(v, max: 65535) else { return nil }; sport = UInt16(n)
            case .dport, .dstkey: guard let n = SaveLine.decimal(v, max: 65535) else { return nil }; dport = UInt16(n)
            case .replyPortSrc, .replyKeySrc: guard let n = SaveLine.decimal(v, max: 65535) else { return nil }; rsport = UInt16(n)
            case .replyPortDst, .replyKeyDst: guard let n = SaveLine.decimal(v, max: 65535) else { return nil }; rdport = UInt16(n)
            case .icmpType, .icmpv6Type: guard let n = UInt8(value) else { return nil }; icmpType = n
            case .icmpCode, .icmpv6Code: guard let n = UInt8(value) else { return nil }; icmpCode = n
            case .icmpId, .icmpv6Id: guard let n = UInt16(value) else { return nil }; icmpID = n
            case .state: state = String(value)
            case .origVtag: guard let n = UInt32(value) else { return nil }; vtagO = n
            case .replyVtag: guard let n = UInt32(value) else { return nil }; vtagR = n
            case .role:
                switch value { case "client": role = 0; case "server": role = 1; default: return nil }
            default: return nil
            }
        }
        // Only complete lines: the full parser reports what is missing.
        guard let proto, let src = s ?? q, let dst = d ?? r, src.family == dst.family else { return nil }
        if let r, r.family != src.family { return nil }
        if let q, q.family != src.family { return nil }
        var o = Tuple(source: src, destination: dst, l4proto: proto.number, zone: origZone)
        switch proto {
        case .tcp, .udp, .udplite, .sctp, .dccp, .gre:
            guard let sp = sport ?? rdport, let dp = dport ?? rsport else { return nil }
            o.sourcePort = sp; o.destinationPort = dp
        case .icmp, .icmpv6:
            guard let t = icmpType, let c = icmpCode else { return nil }
            o.icmpType = t; o.icmpCode = c; o.icmpID = icmpID ?? 0
        case .other:
            return nil
        }
        var reply = o.inverted()
        reply.zone = replyZone
        if let r { reply.source = r }
        if let q { reply.destination = q }
        if let p = rsport { reply.sourcePort = p }
        if let p = rdport { reply.destinationPort = p }
        var e = ConntrackEntry(original: o, reply: reply)
        e.timeout = timeout; e.status = status; e.secmark = secmark; e.zone = zone; e.mark = mark; e.labels = labels
        switch proto {
        case .tcp:
            if let state { guard let t = TCPState(name: state) else { return nil }; e.protoInfo = .tcp(TCPInfo(state: t.rawValue)) }
            else if command == .create || command == .add { return nil }
        case .sctp:
            if let state {
                guard let t = SCTPState(name: state) else { return nil }
                e.protoInfo = .sctp(SCTPInfo(state: t.rawValue, vtagOriginal: vtagO, vtagReply: vtagR))
            } else if command == .create || command == .add { return nil }
        case .dccp:
            if let state {
                guard let t = DCCPState(name: state) else { return nil }
                e.protoInfo = .dccp(DCCPInfo(state: t.rawValue, role: role))
            }
        default:
            if state != nil { return nil }
        }
        var line = SaveLine(command: command, entry: e)
        if let snat { line.sourceNAT = (snat, rdport.flatMap { $0 != o.sourcePort ? $0 : nil }) }
        if let dnat { line.destinationNAT = (dnat, rsport.flatMap { $0 != o.destinationPort ? $0 : nil }) }
        return line
    }

    /// Option names the reader knows; anything else sends the line to the full parser.
    enum Key: String, CaseIterable {
        case optT = "-t"
        case optU = "-u"
        case optC = "-c"
        case optW = "-w"
        case origZone = "--orig-zone"
        case replyZone = "--reply-zone"
        case optM = "-m"
        case labelAdd = "--label-add"
        case optS = "-s"
        case optD = "-d"
        case optR = "-r"
        case optQ = "-q"
        case optG = "-g"
        case optN = "-n"
        case optP = "-p"
        case sport = "--sport"
        case srckey = "--srckey"
        case dport = "--dport"
        case dstkey = "--dstkey"
        case replyPortSrc = "--reply-port-src"
        case replyKeySrc = "--reply-key-src"
        case replyPortDst = "--reply-port-dst"
        case replyKeyDst = "--reply-key-dst"
        case icmpType = "--icmp-type"
        case icmpv6Type = "--icmpv6-type"
        case icmpCode = "--icmp-code"
        case icmpv6Code = "--icmpv6-code"
        case icmpId = "--icmp-id"
        case icmpv6Id = "--icmpv6-id"
        case state = "--state"
        case origVtag = "--orig-vtag"
        case replyVtag = "--reply-vtag"
        case role = "--role"
    }

    static let keyByHash: [UInt64: Key] = {
        var d: [UInt64: Key] = [:]
        for k in Key.allCases { d[hash(k.rawValue.utf8)] = k }
        return d
    }()
    static let protocols: [String: L4Protocol] = ["tcp": .tcp, "udp": .udp, "udplite": .udplite, "sctp": .sctp,
                                                  "dccp": .dccp, "gre": .gre, "icmp": .icmp, "icmpv6": .icmpv6]

    static func address(_ bytes: Bytes) -> IPAddress? { IPAddress(ascii: bytes) }

    @inline(__always)
    static func hash<C: Collection>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// The known option name these bytes spell, or nil.
    static func key(_ bytes: Bytes) -> Key? {
        guard let k = keyByHash[hash(bytes)], k.rawValue.utf8.elementsEqual(bytes) else { return nil }
        return k
    }

    /// A decimal number of at most `max`, from bytes; nil on anything else.
    @inline(__always)
    static func decimal(_ bytes: Bytes, max: UInt64) -> UInt64? {
        guard !bytes.isEmpty, bytes.count <= 20 else { return nil }
        var v: UInt64 = 0
        for b in bytes {
            guard b >= 48 && b <= 57 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(b - 48))
            guard !o1, !o2 else { return nil }
            v = a
        }
        return v <= max ? v : nil
    }

    init(command: Command, entry: ConntrackEntry) {
        self.command = command
        self.entry = entry
    }
}
