import ConntrackCore

/// Probable causes of divergences (docs/divergences.md), from what each side is and what
/// a model side saw. Specific causes first; a general one when nothing more is known.
public enum Causes {
    static func key(_ e: ConntrackEntry) -> Tuple { e.original.withoutZone }

    /// An entry present on one side only.
    public static func onlyIn(_ e: ConntrackEntry, present: SideContext, absent: SideContext) -> Cause {
        switch (present.kind, absent.kind) {
        case (.kernel, .model), (.snapshot, .model), (.peer, .model):
            if present.kind == .kernel, let o = e.countersOriginal, let r = e.countersReply, o.packets == 0, r.packets == 0 {
                return Cause("created-by-program", "no packet was ever counted on it: created over ctnetlink by a program " +
                             "(conntrack -I, conntrackd commit, ctsync create), not by traffic")
            }
            if absent.captureDropped {
                return Cause("capture-dropped", "the capture dropped packets (libpcap counters), possibly this connection's")
            }
            return Cause("not-in-capture", "no packet of it was captured: the connection began before the capture, " +
                         "took another path, or was created by a program over ctnetlink (conntrack -I, conntrackd)")
        case (.model, _):
            if absent.tableNearlyFull {
                let fill = absent.tableCount.map { c in absent.tableMax.map { " (\(c) of nf_conntrack_max \($0))" } ?? "" } ?? ""
                let drops = absent.tableDrops > 0 ? ", \(absent.tableDrops) connections dropped for want of room" : ""
                return Cause("table-full", "\(absent.name)'s table is full\(fill)\(drops): it refused this connection " +
                             "or early-dropped it to make room")
            }
            if let bad = present.invalidPackets[key(e)], let differs = trackingSysctlDifference(present, absent) {
                return Cause("tracking-sysctl", "frame \(bad.frame) was invalid to the model (\(bad.reason)), and \(differs)")
            }
            if let frame = present.captureGaps[key(e)] {
                return Cause("capture-dropped", "frame \(frame) acknowledges data the capture never held: the capture missed packets " +
                             "of this connection, and what the kernel did with them is unknown")
            }
            if let bad = present.invalidPackets[key(e)] {
                return Cause("invalid-packet", "the model tracked it, but frame \(bad.frame) was invalid to the model (\(bad.reason)); " +
                             "the kernel may have dropped or judged it otherwise")
            }
            return Cause("gone-from-kernel", "gone from the kernel: deleted by a program (conntrack -D/-F), early drop near " +
                         "nf_conntrack_max, an expiry the model did not see, or its first packet was dropped by a rule before confirmation")
        case (.snapshot, .kernel):
            return Cause("gone-since-snapshot", "in the snapshot but not in the kernel: expired or deleted since the snapshot was taken")
        case (.kernel, .snapshot):
            return Cause("new-since-snapshot", "in the kernel but not in the snapshot: created since the snapshot was taken")
        case (.kernel, .peer):
            return Cause("not-replicated", "in the kernel but not in the standby's copy: not replicated yet (lag), left out by a " +
                         "filter, or lost on the way (see `ctsync replicate status`; `resync` repairs it)")
        case (.peer, .kernel):
            return Cause("not-committed", "in the standby's copy but not in this kernel: not committed here yet, or gone from the " +
                         "active table without the change reaching the standby")
        default:
            return Cause("one-side", "present on \(present.name) only")
        }
    }

    /// An expectation present on one side only.
    public static func expectationOnlyIn(_ x: Expectation, present: SideContext, absent: SideContext) -> Cause {
        switch (present.kind, absent.kind) {
        case (.kernel, .model), (.snapshot, .model), (.peer, .model):
            return Cause("helper-config", "the model has no such expectation: its master's helper is not configured in the model " +
                         "(give --helper), the command was not captured, or the model saw it used or replaced")
        case (.model, _):
            return Cause("expectation-gone", "the model expects a connection the other side does not: a data connection used it, " +
                         "it timed out there, or the other side's master has no helper (ct helper rule missing)")
        case (.snapshot, .kernel):
            return Cause("gone-since-snapshot", "the expectation was used or timed out since the snapshot was taken")
        case (.kernel, .snapshot):
            return Cause("new-since-snapshot", "the expectation was created since the snapshot was taken")
        default:
            return Cause("one-side", "expectation present on \(present.name) only")
        }
    }

    /// Sysctls that decide whether a packet is valid, not how long an entry lives.
    static let trackingSysctls = ["nf_conntrack_tcp_be_liberal", "nf_conntrack_tcp_loose", "nf_conntrack_tcp_ignore_invalid_rst",
                                  "nf_conntrack_tcp_max_retrans", "nf_conntrack_checksum"]

    /// "NAME is X on A and Y on B" for the first tracking sysctl that differs, when both are known.
    static func trackingSysctlDifference(_ a: SideContext, _ b: SideContext) -> String? {
        guard let sa = a.sysctls, let sb = b.sysctls else { return nil }
        for name in trackingSysctls {
            if let x = sa[name], let y = sb[name], x != y { return "\(name) is \(x) on \(a.name) and \(y) on \(b.name)" }
        }
        return nil
    }

    static let causePriority: [DivergenceClass] = [.zone, .reply, .helper, .master, .mark, .labels, .tcpState, .status, .counters, .timeout]

    /// The sysctl that sets this entry's current timeout (nf_conntrack_proto_*.c).
    public static func timeoutSysctl(_ e: ConntrackEntry) -> String? {
        let assured = e.status?.contains(.assured) == true
        switch e.original.l4 {
        case .tcp:
            guard let s = e.tcpState, s != .none else { return nil }
            return "nf_conntrack_tcp_timeout_" + (s == .synSent2 ? "syn_sent" : s.text.lowercased())
        case .udp, .udplite: return assured ? "nf_conntrack_udp_timeout_stream" : "nf_conntrack_udp_timeout"
        case .icmp: return "nf_conntrack_icmp_timeout"
        case .icmpv6: return "nf_conntrack_icmpv6_timeout"
        case .gre: return assured ? "nf_conntrack_gre_timeout_stream" : "nf_conntrack_gre_timeout"
        case .sctp:
            guard case .sctp(let i)? = e.protoInfo, let st = SCTPState(rawValue: i.state), st != .none else { return nil }
            return "nf_conntrack_sctp_timeout_" + st.text.lowercased()
        case .dccp: return nil
        case .other: return "nf_conntrack_generic_timeout"
        }
    }

    /// A matched pair whose fields differ.
    public static func changed(_ classes: [DivergenceClass], _ a: ConntrackEntry, _ b: ConntrackEntry,
                               _ ca: SideContext, _ cb: SideContext) -> Cause {
        let model = ca.kind == .model ? (ca, a) : (cb.kind == .model ? (cb, b) : nil)
        // Configuration differences explain the rest (an EXPECTED bit follows a master,
        // a state follows a helper), so they are named first.
        let first = causePriority.first { classes.contains($0) } ?? classes.first ?? .status
        if first == .timeout, let name = timeoutSysctl(a), let va = ca.sysctls?[name], let vb = cb.sysctls?[name], va != vb {
            return Cause("timeout-sysctl", "\(name) is \(va) on \(ca.name) and \(vb) on \(cb.name)")
        }
        if let (m, e) = model {
            if let bad = m.invalidPackets[key(e)], [.tcpState, .counters, .timeout, .status].contains(first),
               let differs = trackingSysctlDifference(ca, cb) {
                return Cause("tracking-sysctl", "frame \(bad.frame) was invalid to the model (\(bad.reason)), and \(differs)")
            }
            if let frame = m.captureGaps[key(e)] {
                return Cause("capture-dropped", "frame \(frame) acknowledges data the capture never held: the capture missed packets " +
                             "of this connection, so the model judged the rest of it without them")
            }
            if let bad = m.invalidPackets[key(e)], [.tcpState, .counters, .timeout, .status].contains(first) {
                return Cause("invalid-packet", "frame \(bad.frame) was invalid to the model (\(bad.reason)); the kernel judged it otherwise " +
                             "or the capture missed a packet before it")
            }
            if m.pickedUp.contains(key(e)), [.tcpState, .status, .counters, .timeout].contains(first) {
                return Cause("picked-up-mid-stream", "the model picked this connection up mid-stream (its first packets are not in the capture)")
            }
            if m.captureDropped, [.tcpState, .status, .counters].contains(first) {
                return Cause("capture-dropped", "the capture dropped packets (libpcap counters), possibly this connection's")
            }
        }
        switch first {
        case .zone: return Cause("zone-config", "the zone differs: a zone template (ct zone set, CT --zone) one side does not know (give the model --zone)")
        case .reply: return Cause("nat", "the reply tuple differs: NAT chose another translation (a random port after a clash, or a NAT rule one side does not know: give the model --nat and a -i any capture)")
        case .tcpState: return Cause("tcp-state", "the TCP state differs: a packet one side did not see or judged otherwise")
        case .status: return Cause("status", "status bits differ: ASSURED/SEEN_REPLY follow packets one side did not see, or a program set bits")
        case .mark: return Cause("mark", "the mark differs: set by a rule (ct mark set) or a program (conntrack -U -m) one side does not know (give the model --mark)")
        case .labels: return Cause("labels", "labels differ: set by a rule (ct label set) or a program one side does not know (give the model --label)")
        case .helper: return Cause("helper-config", "the helper differs: a ct helper rule one side does not know (give the model --helper)")
        case .master: return Cause("expectation", "the master differs: the connection was or was not expected (a helper's expectation)")
        case .counters: return Cause("counters", "counters differ: packets one side did not see (capture drops, another path), or counters were zeroed (conntrack -L -z)")
        case .timeout: return Cause("timeout", "the timeout differs beyond the tolerance: timeout sysctls differ between the sides, or a packet refreshed one side only")
        case .expectation: return Cause("expectation-fields", "the expectation differs")
        case .onlyInA, .onlyInB: return Cause("one-side", "present on one side only")
        }
    }
}
