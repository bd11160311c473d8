import ConntrackCore

/// The TCP state machine as the kernel's data table `tcp_conntracks[dir][index][state]`
/// (nf_conntrack_proto_tcp.c, 6.x; kernel-conntrack-semantics.md 5.1–5.3). Window
/// tracking and the special cases of 5.5 build on this.
public enum TCPRules {
    /// The packet class, precedence RST > SYN > FIN > ACK.
    public enum Index: Int, CaseIterable, Sendable { case syn = 0, synack, fin, ack, rst, none }

    /// A table cell: a new state, invalid, or ignore.
    public enum Outcome: Equatable, Sendable {
        case state(TCPState)
        case invalid
        case ignore
    }

    /// Flag combinations (after dropping PSH, ECE and CWR) the kernel accepts.
    static let validFlags: [UInt8] = [
        0x02, 0x22, 0x12, 0x04, 0x14, 0x11, 0x31, 0x10, 0x30,   // SYN, SYN+URG, SYN+ACK, RST, RST+ACK, FIN+ACK, FIN+ACK+URG, ACK, ACK+URG
    ]
    /// The same set as a bitmask over the 6 remaining flag bits (all values are below 64).
    static let validFlagMask: UInt64 = validFlags.reduce(0) { $0 | 1 << UInt64($1) }

    /// True when the flag combination is one the kernel accepts (5.1).
    public static func flagsValid(_ flags: UInt8) -> Bool {
        validFlagMask & (1 << UInt64(flags & 0x37)) != 0
    }

    public static func index(_ flags: UInt8) -> Index {
        if flags & 0x04 != 0 { return .rst }
        if flags & 0x02 != 0 { return flags & 0x10 != 0 ? .synack : .syn }
        if flags & 0x01 != 0 { return .fin }
        if flags & 0x10 != 0 { return .ack }
        return .none
    }

    // Columns: NO SS SR ES FW CW LA TW CL S2 (TCPState raw values 0...9).
    private static let NO = Outcome.state(.none), SS = Outcome.state(.synSent), SR = Outcome.state(.synRecv)
    private static let ES = Outcome.state(.established), FW = Outcome.state(.finWait), CW = Outcome.state(.closeWait)
    private static let LA = Outcome.state(.lastAck), TW = Outcome.state(.timeWait), CL = Outcome.state(.close)
    private static let S2 = Outcome.state(.synSent2), IV = Outcome.invalid, IG = Outcome.ignore

    /// Original direction (client → server), rows in `Index` order.
    static let original: [[Outcome]] = [
        /* syn    */ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
        /* synack */ [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ]

    /// Reply direction (server → client).
    static let reply: [[Outcome]] = [
        /* syn    */ [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
        /* synack */ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ]

    /// The table's answer for a packet of class `index` in direction `reply` from `state`.
    /// (A SYN_SENT result from TIME_WAIT or CLOSE is the "reopen" candidate of 5.5(a).)
    public static func next(from state: TCPState, index: Index, reply isReply: Bool) -> Outcome {
        (isReply ? reply : original)[index.rawValue][Int(state.rawValue)]
    }

    /// The per-state timeout (5.8), in seconds.
    public static func timeout(_ state: TCPState, _ s: Sysctls) -> Int {
        switch state {
        case .none: return 0
        case .synSent: return s["nf_conntrack_tcp_timeout_syn_sent"]
        case .synRecv: return s["nf_conntrack_tcp_timeout_syn_recv"]
        case .established: return s["nf_conntrack_tcp_timeout_established"]
        case .finWait: return s["nf_conntrack_tcp_timeout_fin_wait"]
        case .closeWait: return s["nf_conntrack_tcp_timeout_close_wait"]
        case .lastAck: return s["nf_conntrack_tcp_timeout_last_ack"]
        case .timeWait: return s["nf_conntrack_tcp_timeout_time_wait"]
        case .close: return s["nf_conntrack_tcp_timeout_close"]
        case .synSent2: return 120
        }
    }
}
