import ConntrackCore

/// What a tracker decides for one accepted packet: the new timeout (nil = no refresh)
/// and whether the entry becomes ASSURED.
public struct TrackerDecision: Equatable, Sendable {
    public var timeout: Int?
    public var assure: Bool
    public init(timeout: Int?, assure: Bool = false) { self.timeout = timeout; self.assure = assure }
}

/// UDP (semantics 6.1): 30 s until a reply has been seen; after that, a packet more than
/// 2 s after the entry's first packet gives 120 s and ASSURED. UDP-Lite has no 2-second rule.
public enum UDPTracker {
    /// - Parameters:
    ///   - seenReplyBefore: SEEN_REPLY was set before this packet.
    ///   - firstPacketAt/now: nanoseconds; the stream rule needs now > first + 2 s (strictly).
    public static func decide(seenReplyBefore: Bool, firstPacketAt: UInt64, now: UInt64, lite: Bool,
                              _ s: Sysctls) -> TrackerDecision {
        guard seenReplyBefore else { return TrackerDecision(timeout: s["nf_conntrack_udp_timeout"]) }
        if lite || now > firstPacketAt &+ 2_000_000_000 {
            return TrackerDecision(timeout: s["nf_conntrack_udp_timeout_stream"], assure: true)
        }
        return TrackerDecision(timeout: s["nf_conntrack_udp_timeout"])
    }
}

/// ICMP and ICMPv6 (6.2): every accepted packet refreshes to 30 s; never ASSURED.
public enum ICMPTracker {
    public static func decide(v6: Bool, _ s: Sysctls) -> TrackerDecision {
        TrackerDecision(timeout: s[v6 ? "nf_conntrack_icmpv6_timeout" : "nf_conntrack_icmp_timeout"])
    }

    /// Whether an ICMP type starts an entry (requests only; semantics 2.3).
    public static func createsEntry(type: UInt8, v6: Bool) -> Bool {
        v6 ? [128, 139].contains(type) : [8, 13, 15, 17].contains(type)
    }
}

/// GRE (6.4): 30 s until the reply; a packet after SEEN_REPLY gives 180 s and ASSURED.
public enum GRETracker {
    public static func decide(seenReplyBefore: Bool, _ s: Sysctls) -> TrackerDecision {
        seenReplyBefore ? TrackerDecision(timeout: s["nf_conntrack_gre_timeout_stream"], assure: true)
            : TrackerDecision(timeout: s["nf_conntrack_gre_timeout"])
    }
}

/// Every protocol without a tracker (6.3, DCCP included on 6.18): 600 s, never ASSURED.
public enum GenericTracker {
    public static func decide(_ s: Sysctls) -> TrackerDecision {
        TrackerDecision(timeout: s["nf_conntrack_generic_timeout"])
    }
}
