import ConntrackCore

/// UDP and UDP-Lite (semantics 6.1): 30 s until a reply has been seen; after that, a packet
/// more than 2 s after the entry's first packet gives 120 s and ASSURED. UDP-Lite has no
/// 2-second rule. Times in nanoseconds.
public enum UDPTracker {
    /// - Parameters:
    ///   - seenReplyBefore: SEEN_REPLY was set before this packet.
    ///   - firstPacketAt/now: the stream rule needs now > first + 2 s (strictly).
    ///   - clash: a NAT_CLASH entry is never ASSURED.
    @inline(__always)
    public static func decide(seenReplyBefore: Bool, firstPacketAt: UInt64, now: UInt64, lite: Bool,
                              clash: Bool = false, _ t: Timeouts) -> L4Result {
        guard seenReplyBefore else { return .accept(timeout: t.udp, assure: false) }
        if lite || now > firstPacketAt &+ 2_000_000_000 { return .accept(timeout: t.udpStream, assure: !clash) }
        return .accept(timeout: t.udp, assure: false)
    }
}

/// ICMP and ICMPv6 (6.2): every accepted packet refreshes to 30 s; never ASSURED.
public enum ICMPTracker {
    @inline(__always)
    public static func decide(v6: Bool, _ t: Timeouts) -> L4Result {
        .accept(timeout: v6 ? t.icmpv6 : t.icmp, assure: false)
    }

    /// Whether an ICMP type starts an entry (requests only; semantics 2.3).
    public static func createsEntry(type: UInt8, v6: Bool) -> Bool {
        v6 ? type == 128 || type == 139 : type == 8 || type == 13 || type == 15 || type == 17
    }
}

/// GRE (6.4): 30 s until the reply; a packet after SEEN_REPLY gives 180 s and ASSURED.
public enum GRETracker {
    @inline(__always)
    public static func decide(seenReplyBefore: Bool, _ t: Timeouts) -> L4Result {
        seenReplyBefore ? .accept(timeout: t.greStream, assure: true) : .accept(timeout: t.gre, assure: false)
    }
}

/// Every protocol without a tracker (6.3, DCCP included on 6.18): 600 s, never ASSURED.
public enum GenericTracker {
    @inline(__always)
    public static func decide(_ t: Timeouts) -> L4Result { .accept(timeout: t.generic, assure: false) }
}
