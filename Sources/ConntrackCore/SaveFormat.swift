/// The `save` format: one conntrack(8) command line per entry, replayable with
/// `conntrack -R` / `ctsync conntrack -R`.
///
/// conntrack 1.4.7 writes `-A -t … -u … -s … -p …`. Ours is the same, plus what
/// conntrack leaves out so the line is lossless: `-m MARK` when the mark is not
/// zero and `--label-add LABEL,…` (label numbers, or names when a label map is given).
public enum ConntrackSave {
    public struct Options: Sendable {
        /// Add mark and labels (ctsync's lossless dialect). Off = conntrack 1.4.7's exact line.
        public var lossless = true
        public var labelNames: [Int: String]?
        public init(lossless: Bool = true, labelNames: [Int: String]? = nil) {
            self.lossless = lossless
            self.labelNames = labelNames
        }
    }

    /// Status bits conntrack's `-u` knows, in the order it prints them.
    static let statusBits: [(Status, StaticString)] = [
        (.expected, "EXPECTED"), (.seenReply, "SEEN_REPLY"), (.assured, "ASSURED"), (.fixedTimeout, "FIXED_TIMEOUT"),
    ]

    public static func write(_ e: ConntrackEntry, event: EventKind = .new, options: Options = Options(),
                             to out: inout [UInt8]) {
        switch event {
        case .new: out.append(ascii: "-A ")
        case .update: out.append(ascii: "-U ")
        case .destroy: out.append(ascii: "-D ")
        }
        if let t = e.timeout { out.append(ascii: "-t "); writeDecimal(UInt64(t), to: &out); out.append(32) }
        if let s = e.status {
            out.append(ascii: "-u ")
            var any = false
            for (bit, name) in statusBits where s.contains(bit) {
                if any { out.append(44) }
                out.append(ascii: name); any = true
            }
            if !any { out.append(ascii: "UNSET") }
            out.append(32)
        }
        if let c = e.secmark { out.append(ascii: "-c "); writeDecimal(UInt64(c), to: &out); out.append(32) }
        if let z = e.zone { out.append(ascii: "-w "); writeDecimal(UInt64(z), to: &out); out.append(32) }
        if let z = e.original.zone { out.append(ascii: "--orig-zone "); writeDecimal(UInt64(z), to: &out); out.append(32) }
        if let z = e.reply.zone { out.append(ascii: "--reply-zone "); writeDecimal(UInt64(z), to: &out); out.append(32) }
        if options.lossless {
            if let m = e.mark, m != 0 { out.append(ascii: "-m "); writeDecimal(UInt64(m), to: &out); out.append(32) }
            if let l = e.labels, !l.isEmpty {
                out.append(ascii: "--label-add ")
                out.append(string: l.bits.map { options.labelNames?[$0] ?? String($0) }.joined(separator: ","))
                out.append(32)
            }
        }
        out.append(ascii: "-s "); e.original.source.write(to: &out); out.append(32)
        out.append(ascii: "-d "); e.original.destination.write(to: &out); out.append(32)
        let dnat = (e.status.map { $0.contains(.dstNATDone) } ?? true) && e.original.destination != e.reply.source
        let snat = (e.status.map { $0.contains(.srcNATDone) } ?? true) && e.original.source != e.reply.destination
        out.append(ascii: dnat ? "-g " : "-r "); e.reply.source.write(to: &out); out.append(32)
        out.append(ascii: snat ? "-n " : "-q "); e.reply.destination.write(to: &out); out.append(32)

        let o = e.original, r = e.reply
        func opt(_ name: StaticString, _ v: UInt64) {
            out.append(ascii: name); out.append(32); writeDecimal(v, to: &out); out.append(32)
        }
        func ports() {
            opt("--sport", UInt64(o.sourcePort)); opt("--dport", UInt64(o.destinationPort))
            opt("--reply-port-src", UInt64(r.sourcePort)); opt("--reply-port-dst", UInt64(r.destinationPort))
        }
        switch o.l4 {
        case .tcp:
            out.append(ascii: "-p tcp "); ports()
            if case .tcp(let t) = e.protoInfo {
                out.append(ascii: "--state "); out.append(ascii: (TCPState(rawValue: t.state) ?? .none).name); out.append(32)
            }
        case .udp: out.append(ascii: "-p udp "); ports()
        case .udplite: out.append(ascii: "-p udplite "); ports()
        case .sctp:
            out.append(ascii: "-p sctp "); ports()
            if case .sctp(let s) = e.protoInfo {
                out.append(ascii: "--state "); out.append(string: (SCTPState(rawValue: s.state) ?? .none).text); out.append(32)
                if let v = s.vtagOriginal { opt("--orig-vtag", UInt64(v)) }
                if let v = s.vtagReply { opt("--reply-vtag", UInt64(v)) }
            }
        case .dccp:
            out.append(ascii: "-p dccp "); ports()
            if case .dccp(let d) = e.protoInfo {
                out.append(ascii: "--state "); out.append(string: (DCCPState(rawValue: d.state) ?? .none).text); out.append(32)
                if let role = d.role { out.append(ascii: "--role "); out.append(ascii: role == 0 ? "client" : "server"); out.append(32) }
            }
        case .gre:
            out.append(ascii: "-p gre ")
            opt("--srckey", UInt64(o.sourcePort)); opt("--dstkey", UInt64(o.destinationPort))
            opt("--reply-key-src", UInt64(r.sourcePort)); opt("--reply-key-dst", UInt64(r.destinationPort))
        case .icmp:
            out.append(ascii: "-p icmp ")
            opt("--icmp-type", UInt64(o.icmpType)); opt("--icmp-code", UInt64(o.icmpCode)); opt("--icmp-id", UInt64(o.icmpID))
        case .icmpv6:
            out.append(ascii: "-p icmpv6 ")
            opt("--icmpv6-type", UInt64(o.icmpType)); opt("--icmpv6-code", UInt64(o.icmpCode)); opt("--icmpv6-id", UInt64(o.icmpID))
        case .other(let n):
            out.append(ascii: "-p "); writeDecimal(UInt64(n), to: &out)
        }
        while out.last == 32 { out.removeLast() }
    }
}

/// conntrack(8)'s `-o xml` format.
public enum ConntrackXML {
    public static let header = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<conntrack>\n"
    public static let footer = "</conntrack>\n"

    public static func write(_ e: ConntrackEntry, event: EventKind? = nil, now: UInt64 = 0, to out: inout [UInt8]) {
        switch event {
        case .new?: out.append(ascii: "<flow type=\"new\">")
        case .update?: out.append(ascii: "<flow type=\"update\">")
        case .destroy?: out.append(ascii: "<flow type=\"destroy\">")
        case nil: out.append(ascii: "<flow>")
        }
        tuple(e.original, direction: "original", counters: e.countersOriginal, to: &out)
        tuple(e.reply, direction: "reply", counters: e.countersReply, to: &out)
        let hasIndependent = e.protoInfo != nil || e.timeout != nil || e.mark != nil || e.secmark != nil
            || e.zone != nil || e.use != nil || e.status != nil || e.id != nil || e.timestampStart != nil || e.timestampStop != nil
        if hasIndependent { out.append(ascii: "<meta direction=\"independent\">") }
        // libnetfilter_conntrack names SCTP and DCCP states from the TCP table here; we match it.
        switch e.protoInfo {
        case .tcp(let t): state(t.state, to: &out)
        case .sctp(let s): state(s.state, to: &out)
        case .dccp(let d): state(d.state, to: &out)
        case nil: break
        }
        func tag(_ name: StaticString, _ v: UInt64) {
            out.append(60); out.append(ascii: name); out.append(62)
            writeDecimal(v, to: &out)
            out.append(ascii: "</"); out.append(ascii: name); out.append(62)
        }
        if let t = e.timeout { tag("timeout", UInt64(t)) }
        if let m = e.mark { tag("mark", UInt64(m)) }
        if let m = e.secmark { tag("secmark", UInt64(m)) }
        if let c = e.secctx { out.append(ascii: "<secctx>"); out.append(string: c); out.append(ascii: "</secctx>") }
        if let z = e.zone { tag("zone", UInt64(z)) }
        if let u = e.use { tag("use", UInt64(u)) }
        if let i = e.id { tag("id", UInt64(i)) }
        if let s = e.status {
            if s.contains(.assured) { out.append(ascii: "<assured/>") }
            if !s.contains(.seenReply) { out.append(ascii: "<unreplied/>") }
        }
        if let start = e.timestampStart {
            let stop = e.timestampStop.map { $0 / 1_000_000_000 } ?? now
            tag("deltatime", UInt64(bitPattern: Int64(bitPattern: stop) &- Int64(start / 1_000_000_000)))
        }
        if hasIndependent { out.append(ascii: "</meta>") }
        if let h = e.helper { out.append(ascii: "<helper>"); out.append(string: h); out.append(ascii: "</helper>") }
        out.append(ascii: "</flow>")
    }

    static func state(_ s: UInt8, to out: inout [UInt8]) {
        out.append(ascii: "<state>")
        out.append(ascii: (TCPState(rawValue: s) ?? .none).name)
        out.append(ascii: "</state>")
    }

    static func tuple(_ t: Tuple, direction: StaticString, counters: Counters?, to out: inout [UInt8]) {
        out.append(ascii: "<meta direction=\""); out.append(ascii: direction); out.append(ascii: "\">")
        let f = t.family
        out.append(ascii: "<layer3 protonum=\""); writeDecimal(UInt64(f.rawValue), to: &out)
        out.append(ascii: "\" protoname=\""); out.append(ascii: f == .ipv4 ? "ipv4" : "ipv6"); out.append(ascii: "\">")
        out.append(ascii: "<src>"); t.source.write(to: &out); out.append(ascii: "</src>")
        out.append(ascii: "<dst>"); t.destination.write(to: &out); out.append(ascii: "</dst>")
        out.append(ascii: "</layer3>")
        out.append(ascii: "<layer4 protonum=\""); writeDecimal(UInt64(t.l4proto), to: &out)
        out.append(ascii: "\" protoname=\""); out.append(ascii: t.l4.name); out.append(ascii: "\">")
        if t.l4.hasPorts {
            out.append(ascii: "<sport>"); writeDecimal(UInt64(t.sourcePort), to: &out); out.append(ascii: "</sport>")
            out.append(ascii: "<dport>"); writeDecimal(UInt64(t.destinationPort), to: &out); out.append(ascii: "</dport>")
        } else if t.l4 == .gre {
            out.append(ascii: "<srckey>0x"); writeHex(UInt64(t.sourcePort), to: &out); out.append(ascii: "</srckey>")
            out.append(ascii: "<dstkey>0x"); writeHex(UInt64(t.destinationPort), to: &out); out.append(ascii: "</dstkey>")
        }
        out.append(ascii: "</layer4>")
        if let z = t.zone { out.append(ascii: "<zone>"); writeDecimal(UInt64(z), to: &out); out.append(ascii: "</zone>") }
        if let c = counters {
            out.append(ascii: "<counters><packets>"); writeDecimal(c.packets, to: &out)
            out.append(ascii: "</packets><bytes>"); writeDecimal(c.bytes, to: &out)
            out.append(ascii: "</bytes></counters>")
        }
        out.append(ascii: "</meta>")
    }
}
