import ConntrackCore

/// Link-layer header types (the LINKTYPE_* numbers of pcap and pcapng files).
public enum LinkType: Int32, Sendable, CaseIterable {
    case null = 0
    case ethernet = 1
    case raw = 101
    case loop = 108
    case linuxSLL = 113
    case ipv4 = 228
    case ipv6 = 229
    case linuxSLL2 = 276

    /// The name tcpdump prints.
    public var name: String {
        switch self {
        case .null: return "NULL"
        case .ethernet: return "EN10MB"
        case .raw: return "RAW"
        case .loop: return "LOOP"
        case .linuxSLL: return "LINUX_SLL"
        case .ipv4: return "IPV4"
        case .ipv6: return "IPV6"
        case .linuxSLL2: return "LINUX_SLL2"
        }
    }
}

/// What the link layer says about a frame: Linux cooked captures carry the packet
/// type (direction) and, in SLL2, the interface index; Ethernet may carry VLAN tags.
public struct LinkInfo: Sendable, Equatable {
    /// The SLL packet type: 0 to us, 1 broadcast, 2 multicast, 3 to another host, 4 outgoing.
    public var packetType: UInt16?
    public var interfaceIndex: UInt32?
    /// Up to two VLAN ids, outermost first (802.1ad then 802.1Q).
    public var outerVLAN: UInt16?
    public var innerVLAN: UInt16?
    public var vlanDepth: UInt8 = 0
    public init() {}
}

/// The well-known packet types of Linux cooked captures.
public enum SLLPacketType: UInt16, Sendable {
    case host = 0, broadcast = 1, multicast = 2, otherHost = 3, outgoing = 4

    public var name: String {
        switch self {
        case .host: return "incoming"
        case .broadcast: return "broadcast"
        case .multicast: return "multicast"
        case .otherHost: return "other-host"
        case .outgoing: return "outgoing"
        }
    }
}

/// IPv4 fragment fields, or the IPv6 fragment header's.
public struct FragmentInfo: Sendable, Equatable {
    public var identification: UInt32
    /// Offset of this fragment's data in bytes.
    public var offset: Int
    public var moreFragments: Bool
    public init(identification: UInt32, offset: Int, moreFragments: Bool) {
        self.identification = identification
        self.offset = offset
        self.moreFragments = moreFragments
    }
}

/// TCP header fields and the options conntrack looks at.
public struct TCPHeader: Sendable, Equatable {
    public var sequence: UInt32 = 0
    public var acknowledgement: UInt32 = 0
    /// FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ECE 0x40, CWR 0x80.
    public var flags: UInt8 = 0
    public var window: UInt16 = 0
    public var headerLength: Int = 20
    public var mss: UInt16?
    public var windowScale: UInt8?
    public var sackPermitted = false
    /// Number of SACK blocks and the right edge of the highest one (what window tracking uses).
    public var sackBlocks: UInt8 = 0
    public var sackHighestRightEdge: UInt32?
    public var timestampValue: UInt32?
    public var timestampEcho: UInt32?
    public init() {}

    public static let fin: UInt8 = 0x01, syn: UInt8 = 0x02, rst: UInt8 = 0x04, psh: UInt8 = 0x08
    public static let ack: UInt8 = 0x10, urg: UInt8 = 0x20, ece: UInt8 = 0x40, cwr: UInt8 = 0x80
}

/// The header an ICMP or ICMPv6 error quotes, decoded as far as the quote goes.
public struct InnerHeader: Sendable, Equatable {
    public var source: IPAddress
    public var destination: IPAddress
    public var l4proto: UInt8
    public var sourcePort: UInt16 = 0
    public var destinationPort: UInt16 = 0
    public var icmpType: UInt8 = 0
    public var icmpCode: UInt8 = 0
    public var icmpID: UInt16 = 0
    /// True when the quote held the first 4 (ports) or 8 (ICMP) bytes of the inner L4 header.
    public var hasTransport: Bool = false
}

/// One decoded frame. A value type with no references: decoding allocates nothing.
/// Offsets point into the frame the decoder was given.
public struct DecodedPacket: Sendable, Equatable {
    public var link = LinkInfo()
    public var family: AddressFamily = .ipv4
    public var source: IPAddress = .v4(0)
    public var destination: IPAddress = .v4(0)
    /// IPv4 TTL or IPv6 hop limit.
    public var ttl: UInt8 = 0
    /// IPv4 header checksum verified (nil for IPv6, which has none).
    public var ipChecksumValid: Bool?
    /// Offset of the IP header in the frame, and the IP datagram's length (header included).
    public var networkOffset = 0
    public var networkLength = 0
    public var fragment: FragmentInfo?
    /// IPv6: where the fragment header starts in the frame (the defragmenter needs it when
    /// extension headers follow it).
    public var fragmentHeaderOffset = 0
    /// The upper-layer protocol (after IPv6 extension headers).
    public var l4proto: UInt8 = 0
    public var transportOffset = 0
    /// Set when the transport header was present and decoded (first fragment, long enough).
    public var hasTransport = false
    public var sourcePort: UInt16 = 0
    public var destinationPort: UInt16 = 0
    public var tcp: TCPHeader?
    public var icmpType: UInt8 = 0
    public var icmpCode: UInt8 = 0
    public var icmpID: UInt16 = 0
    public var inner: InnerHeader?
    /// GRE: version 0 key, or version 1 (PPTP) call id.
    public var greKey: UInt32?
    public var greVersion: UInt8 = 0
    /// SCTP: verification tag and the first chunk's type.
    public var sctpVerificationTag: UInt32 = 0
    public var sctpFirstChunkType: UInt8?
    /// DCCP packet type.
    public var dccpType: UInt8?
    /// IPv6 AH or ESP seen in the extension chain.
    public var sawAH = false
    public var sawESP = false
    /// Payload after the transport header.
    public var payloadOffset = 0
    public var payloadLength = 0

    public init() {}

    /// The conntrack original-direction tuple this packet would look up.
    public var tuple: Tuple {
        var t = Tuple(source: source, destination: destination, l4proto: l4proto)
        switch L4Protocol(number: l4proto) {
        case .tcp, .udp, .udplite, .sctp, .dccp: t.sourcePort = sourcePort; t.destinationPort = destinationPort
        case .gre: t.sourcePort = 0; t.destinationPort = UInt16(truncatingIfNeeded: greKey ?? 0)
        case .icmp, .icmpv6: t.icmpType = icmpType; t.icmpCode = icmpCode; t.icmpID = icmpID
        case .other: break
        }
        return t
    }
}

/// Why a frame was not decoded. Every skip is counted by reason, never fatal.
public enum SkipReason: String, Error, Sendable, CaseIterable, Hashable {
    case truncatedLinkHeader = "truncated link header"
    case unknownLinkType = "unknown link type"
    case notIP = "not IP (ARP, LLDP, ...)"
    case truncatedIPHeader = "truncated IP header"
    case badIPVersion = "bad IP version"
    case badIPHeaderLength = "bad IP header length"
    case ipLengthBeyondFrame = "IP length beyond the frame (lying length)"
    case ipLengthTooShort = "IP total length shorter than its header"
    case truncatedCapture = "capture shorter than the packet (snaplen)"
    case truncatedExtensionHeader = "truncated IPv6 extension header"
    case truncatedTransportHeader = "truncated transport header"
    case badTCPHeaderLength = "bad TCP data offset"
}
