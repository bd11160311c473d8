/// What kind of change an event reports.
public enum EventKind: String, Sendable, Hashable {
    case new, update, destroy
}

/// Options of conntrack(8)'s text output (`-o extended,id,ktimestamp,labels`).
public struct TextFormatOptions: Sendable {
    /// `extended`: prefix each line with the layer-3 name and number.
    public var showLayer3 = false
    /// `id`: append `id=N`.
    public var showID = false
    /// `ktimestamp`: print `[start=…] [stop=…]` from the kernel's timestamps.
    public var showKernelTimestamps = false
    /// `labels`: label names by bit (from connlabel.conf); nil hides labels.
    public var labelNames: [Int: String]?
    /// Wall-clock seconds, for `delta-time` of entries that have not stopped.
    public var now: UInt64 = 0

    public init(showLayer3: Bool = false, showID: Bool = false, showKernelTimestamps: Bool = false,
                labelNames: [Int: String]? = nil, now: UInt64 = 0) {
        self.showLayer3 = showLayer3
        self.showID = showID
        self.showKernelTimestamps = showKernelTimestamps
        self.labelNames = labelNames
        self.now = now
    }
}

/// conntrack(8)'s text formats, byte for byte as conntrack 1.4.7 with
/// libnetfilter_conntrack 1.0.9 prints them.
public enum ConntrackText {
    /// Appends one line (without the newline) in the default or extended format.
    public static func write(_ e: ConntrackEntry, event: EventKind? = nil, options: TextFormatOptions,
                             to out: inout [UInt8]) {
        let start = out.count
        if let event {
            switch event {
            case .new: out.append(ascii: "    [NEW] ")
            case .update: out.append(ascii: " [UPDATE] ")
            case .destroy: out.append(ascii: "[DESTROY] ")
            }
        }
        if options.showLayer3 {
            let f = e.original.family
            padded(f == .ipv4 ? "ipv4" : "ipv6", to: &out)
            writeDecimal(UInt64(f.rawValue), to: &out); out.append(32)
        }
        padded(e.original.l4.name, to: &out)
        writeDecimal(UInt64(e.original.l4proto), to: &out); out.append(32)
        if let t = e.timeout { writeDecimal(UInt64(t), to: &out); out.append(32) }
        switch e.protoInfo {
        case .tcp(let t):
            out.append(ascii: (TCPState(rawValue: t.state) ?? .none).name); out.append(32)
        case .sctp(let s):
            out.append(string: (SCTPState(rawValue: s.state) ?? .none).text); out.append(32)
        case .dccp(let d):
            out.append(string: (DCCPState(rawValue: d.state) ?? .none).text); out.append(32)
        case nil: break
        }
        writeTuple(e.original, to: &out)
        if let z = e.original.zone { out.append(ascii: "zone-orig="); writeDecimal(UInt64(z), to: &out); out.append(32) }
        if let c = e.countersOriginal { writeCounters(c, to: &out) }
        if let s = e.status, !s.contains(.seenReply) { out.append(ascii: "[UNREPLIED] ") }
        writeTuple(e.reply, to: &out)
        if let z = e.reply.zone { out.append(ascii: "zone-reply="); writeDecimal(UInt64(z), to: &out); out.append(32) }
        if let c = e.countersReply { writeCounters(c, to: &out) }
        if let s = e.status {
            if s.contains(.hwOffload) { out.append(ascii: "[HW_OFFLOAD] ") }
            else if s.contains(.offload) { out.append(ascii: "[OFFLOAD] ") }
            else if s.contains(.assured) { out.append(ascii: "[ASSURED] ") }
        }
        if let m = e.mark { out.append(ascii: "mark="); writeDecimal(UInt64(m), to: &out); out.append(32) }
        if let m = e.secmark { out.append(ascii: "secmark="); writeDecimal(UInt64(m), to: &out); out.append(32) }
        if let c = e.secctx { out.append(ascii: "secctx="); out.append(string: c); out.append(32) }
        if let z = e.zone { out.append(ascii: "zone="); writeDecimal(UInt64(z), to: &out); out.append(32) }
        if let startNS = e.timestampStart {
            let stop = e.timestampStop.map { $0 / 1_000_000_000 } ?? options.now
            out.append(ascii: "delta-time=")
            writeDecimal(UInt64(bitPattern: Int64(bitPattern: stop) &- Int64(startNS / 1_000_000_000)), to: &out)
            out.append(32)
        }
        if options.showKernelTimestamps {
            if let s = e.timestampStart { out.append(ascii: "[start="); out.append(string: CTime.format(seconds: s / 1_000_000_000)); out.append(ascii: "] ") }
            if let s = e.timestampStop { out.append(ascii: "[stop="); out.append(string: CTime.format(seconds: s / 1_000_000_000)); out.append(ascii: "] ") }
        }
        if let h = e.helper { out.append(ascii: "helper="); out.append(string: h); out.append(32) }
        if let u = e.use { out.append(ascii: "use="); writeDecimal(UInt64(u), to: &out); out.append(32) }
        if options.showID, let id = e.id { out.append(ascii: "id="); writeDecimal(UInt64(id), to: &out); out.append(32) }
        if let names = options.labelNames, let labels = e.labels {
            out.append(ascii: "labels=")
            for b in labels.bits { if let n = names[b], !n.isEmpty { out.append(string: n); out.append(44) } }
            out.removeLast()   // the last ',' (or the '=' when no label has a name, as the C code does)
            out.append(32)
        }
        if out.count > start { out.removeLast() }   // the trailing blank
    }

    @inline(__always)
    static func padded(_ s: StaticString, to out: inout [UInt8]) {
        out.append(ascii: s)
        var n = s.utf8CodeUnitCount
        while n < 8 { out.append(32); n += 1 }
        out.append(32)
    }

    static func writeCounters(_ c: Counters, to out: inout [UInt8]) {
        out.append(ascii: "packets="); writeDecimal(c.packets, to: &out)
        out.append(ascii: " bytes="); writeDecimal(c.bytes, to: &out); out.append(32)
    }

    /// `src=… dst=… sport=… dport=… ` (or keys, or ICMP fields).
    public static func writeTuple(_ t: Tuple, to out: inout [UInt8]) {
        out.append(ascii: "src="); t.source.write(to: &out)
        out.append(ascii: " dst="); t.destination.write(to: &out); out.append(32)
        switch t.l4 {
        case .tcp, .udp, .udplite, .sctp, .dccp:
            out.append(ascii: "sport="); writeDecimal(UInt64(t.sourcePort), to: &out)
            out.append(ascii: " dport="); writeDecimal(UInt64(t.destinationPort), to: &out); out.append(32)
        case .gre:
            out.append(ascii: "srckey=0x"); writeHex(UInt64(t.sourcePort), to: &out)
            out.append(ascii: " dstkey=0x"); writeHex(UInt64(t.destinationPort), to: &out); out.append(32)
        case .icmp, .icmpv6:
            out.append(ascii: "type="); writeDecimal(UInt64(t.icmpType), to: &out)
            out.append(ascii: " code="); writeDecimal(UInt64(t.icmpCode), to: &out)
            out.append(ascii: " id="); writeDecimal(UInt64(t.icmpID), to: &out); out.append(32)
        case .other: break
        }
    }

    /// conntrack(8)'s expectation line (`-L expect`).
    public static func write(_ x: Expectation, event: EventKind? = nil, options: TextFormatOptions,
                             to out: inout [UInt8]) {
        if let event {
            switch event {
            case .new: out.append(ascii: "    [NEW] ")
            case .update: out.append(ascii: " [UPDATE] ")
            case .destroy: out.append(ascii: "[DESTROY] ")
            }
        }
        if let t = x.timeout { writeDecimal(UInt64(t), to: &out); out.append(32) }
        out.append(ascii: "proto="); writeDecimal(UInt64(x.tuple.l4proto), to: &out); out.append(32)
        writeTuple(x.tuple, to: &out)
        writePrefixedTuple(x.mask, prefix: "mask-", to: &out)
        writePrefixedTuple(x.master, prefix: "master-", to: &out)
        if let f = x.flags {
            if f & 1 != 0 { out.append(ascii: "PERMANENT"); out.append(32) }
            if f & 2 != 0 { out.append(ascii: "INACTIVE"); out.append(32) }
            if f & 4 != 0 { out.append(ascii: "USERSPACE"); out.append(32) }
        }
        if let c = x.expectClass { out.append(ascii: "class="); writeDecimal(UInt64(c), to: &out); out.append(32) }
        if let h = x.helper { out.append(ascii: "helper="); out.append(string: h); out.append(32) }
        if let z = x.zone { out.append(ascii: "zone="); writeDecimal(UInt64(z), to: &out); out.append(32) }
        // conntrack 1.4.7 prints no id for expectations, even with -o id.
        if out.last == 32 { out.removeLast() }
    }

    /// `mask-src=… mask-dst=… sport=… dport=… `: the prefix on both addresses, ports bare.
    static func writePrefixedTuple(_ t: Tuple, prefix: StaticString, to out: inout [UInt8]) {
        out.append(ascii: prefix); out.append(ascii: "src="); t.source.write(to: &out)
        out.append(32); out.append(ascii: prefix); out.append(ascii: "dst="); t.destination.write(to: &out); out.append(32)
        if t.l4.hasPorts {
            out.append(ascii: "sport="); writeDecimal(UInt64(t.sourcePort), to: &out)
            out.append(ascii: " dport="); writeDecimal(UInt64(t.destinationPort), to: &out); out.append(32)
        }
    }
}

/// conntrack(8)'s `-o xml` for the expectation table.
public enum ExpectationXML {
    public static let header = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<expect>\n"
    public static let footer = "</expect>\n"

    public static func write(_ x: Expectation, to out: inout [UInt8]) {
        let f = x.tuple.family
        out.append(ascii: "<flow><layer3 protonum=\""); writeDecimal(UInt64(f.rawValue), to: &out)
        out.append(ascii: "\" protoname=\""); out.append(ascii: f == .ipv4 ? "ipv4" : "ipv6"); out.append(ascii: "\">")
        for (tag, t) in [("expected", x.tuple), ("mask", x.mask), ("master", x.master)] {
            out.append(60); out.append(string: tag); out.append(62)
            out.append(ascii: "<src>"); t.source.write(to: &out); out.append(ascii: "</src>")
            out.append(ascii: "<dst>"); t.destination.write(to: &out); out.append(ascii: "</dst>")
            out.append(ascii: "</"); out.append(string: tag); out.append(62)
        }
        out.append(ascii: "</layer3><layer4 protonum=\""); writeDecimal(UInt64(x.tuple.l4proto), to: &out)
        out.append(ascii: "\" protoname=\""); out.append(ascii: x.tuple.l4.name); out.append(ascii: "\">")
        if x.tuple.l4.hasPorts {
            for (tag, t) in [("expected", x.tuple), ("mask", x.mask), ("master", x.master)] {
                out.append(60); out.append(string: tag); out.append(62)
                out.append(ascii: "<sport>"); writeDecimal(UInt64(t.sourcePort), to: &out); out.append(ascii: "</sport>")
                out.append(ascii: "<dport>"); writeDecimal(UInt64(t.destinationPort), to: &out); out.append(ascii: "</dport>")
                out.append(ascii: "</"); out.append(string: tag); out.append(62)
            }
        }
        out.append(ascii: "</layer4><meta>")
        if let h = x.helper { out.append(ascii: "<helper-name>"); out.append(string: h); out.append(ascii: "</helper-name>") }
        if let t = x.timeout { out.append(ascii: "<timeout>"); writeDecimal(UInt64(t), to: &out); out.append(ascii: "</timeout>") }
        if let c = x.expectClass { out.append(ascii: "<class>"); writeDecimal(UInt64(c), to: &out); out.append(ascii: "</class>") }
        if let z = x.zone { out.append(ascii: "<zone>"); writeDecimal(UInt64(z), to: &out); out.append(ascii: "</zone>") }
        out.append(ascii: "</meta></flow>")
    }
}

/// ctime(3)-style dates ("Wed Nov 25 02:19:20 2026"), in UTC.
public enum CTime {
    static let days = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    public static func format(seconds: UInt64) -> String {
        let d = civil(fromDays: Int64(seconds / 86400))
        let rem = Int(seconds % 86400)
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let day = d.day < 10 ? " \(d.day)" : "\(d.day)"
        return "\(days[Int((seconds / 86400) % 7)]) \(months[d.month - 1]) \(day) \(two(rem / 3600)):\(two(rem / 60 % 60)):\(two(rem % 60)) \(d.year)"
    }

    /// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
    static func civil(fromDays z0: Int64) -> (year: Int, month: Int, day: Int) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (Int(m <= 2 ? y + 1 : y), Int(m), Int(d))
    }
}
