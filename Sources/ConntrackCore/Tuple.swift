/// One direction of a connection: addresses, layer-4 protocol and its
/// identifying fields, and the optional per-direction zone (CTA_TUPLE_ZONE).
///
/// The layer-4 fields are flat rather than an enum so a tuple is a small,
/// trivially copyable value: `sourcePort`/`destinationPort` hold ports for
/// TCP, UDP, UDPLITE, SCTP and DCCP, and the keys for GRE; the ICMP fields
/// hold type, code and id for ICMP and ICMPv6.
public struct Tuple: Hashable, Sendable {
    public var source: IPAddress
    public var destination: IPAddress
    public var l4proto: UInt8
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var icmpType: UInt8
    public var icmpCode: UInt8
    public var icmpID: UInt16
    public var zone: UInt16?

    public init(source: IPAddress, destination: IPAddress, l4proto: UInt8,
                sourcePort: UInt16 = 0, destinationPort: UInt16 = 0,
                icmpType: UInt8 = 0, icmpCode: UInt8 = 0, icmpID: UInt16 = 0,
                zone: UInt16? = nil) {
        self.source = source
        self.destination = destination
        self.l4proto = l4proto
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.icmpType = icmpType
        self.icmpCode = icmpCode
        self.icmpID = icmpID
        self.zone = zone
    }

    public var family: AddressFamily { source.family }
    public var l4: L4Protocol { L4Protocol(number: l4proto) }

    /// The tuple seen from the other side, as the kernel builds a reply tuple
    /// when no NAT applies (ICMP request types map to their reply types).
    public func inverted() -> Tuple {
        var t = Tuple(source: destination, destination: source, l4proto: l4proto,
                      sourcePort: destinationPort, destinationPort: sourcePort,
                      icmpType: icmpType, icmpCode: icmpCode, icmpID: icmpID, zone: zone)
        if l4 == .icmp { t.icmpType = ICMPTypes.replyType(icmp: icmpType) ?? icmpType }
        if l4 == .icmpv6 { t.icmpType = ICMPTypes.replyType(icmpv6: icmpType) ?? icmpType }
        return t
    }
}

/// Layer-4 protocols ctnetlink knows by name; anything else is `.other`.
public enum L4Protocol: Hashable, Sendable {
    case tcp, udp, udplite, sctp, dccp, gre, icmp, icmpv6
    case other(UInt8)

    public init(number: UInt8) {
        switch number {
        case 6: self = .tcp
        case 17: self = .udp
        case 136: self = .udplite
        case 132: self = .sctp
        case 33: self = .dccp
        case 47: self = .gre
        case 1: self = .icmp
        case 58: self = .icmpv6
        default: self = .other(number)
        }
    }

    public init?(name: String) {
        guard let p = L4Protocol.byName[name.lowercased()] else {
            if let n = UInt8(name) { self.init(number: n); return }
            return nil
        }
        self = p
    }

    static let byName: [String: L4Protocol] = [
        "tcp": .tcp, "udp": .udp, "udplite": .udplite, "sctp": .sctp, "dccp": .dccp,
        "gre": .gre, "icmp": .icmp, "icmpv6": .icmpv6, "ipv6-icmp": .icmpv6,
    ]

    public var number: UInt8 {
        switch self {
        case .tcp: return 6
        case .udp: return 17
        case .udplite: return 136
        case .sctp: return 132
        case .dccp: return 33
        case .gre: return 47
        case .icmp: return 1
        case .icmpv6: return 58
        case .other(let n): return n
        }
    }

    /// The name libnetfilter_conntrack prints ("unknown" for the rest).
    public var name: StaticString {
        switch self {
        case .tcp: return "tcp"
        case .udp: return "udp"
        case .udplite: return "udplite"
        case .sctp: return "sctp"
        case .dccp: return "dccp"
        case .gre: return "gre"
        case .icmp: return "icmp"
        case .icmpv6: return "icmpv6"
        case .other: return "unknown"
        }
    }

    /// Whether the tuple carries source and destination ports.
    public var hasPorts: Bool {
        switch self {
        case .tcp, .udp, .udplite, .sctp, .dccp: return true
        default: return false
        }
    }
}

/// ICMP request/reply pairs the kernel tracks (net/netfilter/nf_conntrack_proto_icmp*.c).
public enum ICMPTypes {
    static let v4Pairs: [UInt8: UInt8] = [8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17]
    static let v6Pairs: [UInt8: UInt8] = [128: 129, 129: 128, 139: 140, 140: 139]

    public static func replyType(icmp type: UInt8) -> UInt8? { v4Pairs[type] }
    public static func replyType(icmpv6 type: UInt8) -> UInt8? { v6Pairs[type] }
}

extension Tuple {
    /// The tuple without its per-direction zone: what identifies a connection within a zone.
    public var withoutZone: Tuple {
        var t = self
        t.zone = nil
        return t
    }
}

/// An entry's identity in a table: its zone and original tuple (without per-direction zone),
/// as the kernel looks entries up. Hashed as packed words: diffs and replication hash
/// millions of them.
public struct EntryKey: Hashable, Sendable {
    public var zone: UInt16
    public var tuple: Tuple

    public init(zone: UInt16?, tuple: Tuple) {
        self.zone = zone ?? 0
        self.tuple = tuple.withoutZone
    }

    /// The key of an entry (its zone and original tuple).
    public init(_ e: ConntrackEntry) { self.init(zone: e.zone, tuple: e.original) }

    public func hash(into h: inout Hasher) {
        switch (tuple.source, tuple.destination) {
        case (.v4(let s), .v4(let d)): h.combine(UInt64(s) << 32 | UInt64(d))
        default: h.combine(tuple.source); h.combine(tuple.destination)
        }
        h.combine(UInt64(tuple.sourcePort) << 48 | UInt64(tuple.destinationPort) << 32 | UInt64(tuple.icmpID) << 16 | UInt64(zone))
        h.combine(UInt32(tuple.l4proto) << 16 | UInt32(tuple.icmpType) << 8 | UInt32(tuple.icmpCode))
    }
}
