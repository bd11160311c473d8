/// The IPS_* status bits of a conntrack entry (include/uapi/linux/netfilter/nf_conntrack_common.h).
public struct Status: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let expected = Status(rawValue: 1 << 0)
    public static let seenReply = Status(rawValue: 1 << 1)
    public static let assured = Status(rawValue: 1 << 2)
    public static let confirmed = Status(rawValue: 1 << 3)
    public static let srcNAT = Status(rawValue: 1 << 4)
    public static let dstNAT = Status(rawValue: 1 << 5)
    public static let seqAdjust = Status(rawValue: 1 << 6)
    public static let srcNATDone = Status(rawValue: 1 << 7)
    public static let dstNATDone = Status(rawValue: 1 << 8)
    public static let dying = Status(rawValue: 1 << 9)
    public static let fixedTimeout = Status(rawValue: 1 << 10)
    public static let template = Status(rawValue: 1 << 11)
    public static let natClash = Status(rawValue: 1 << 12)
    public static let helper = Status(rawValue: 1 << 13)
    public static let offload = Status(rawValue: 1 << 14)
    public static let hwOffload = Status(rawValue: 1 << 15)

    /// Bit names as the kernel's headers spell them, indexed by bit number.
    public static let names: [String] = [
        "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "DST_NAT", "SEQ_ADJUST",
        "SRC_NAT_DONE", "DST_NAT_DONE", "DYING", "FIXED_TIMEOUT", "TEMPLATE", "NAT_CLASH",
        "HELPER", "OFFLOAD", "HW_OFFLOAD",
    ]

    /// The bits that conntrack(8) `-u` accepts.
    public static let settableByName: [String: Status] = [
        "EXPECTED": .expected, "SEEN_REPLY": .seenReply, "ASSURED": .assured, "FIXED_TIMEOUT": .fixedTimeout,
    ]

    public var nameList: [String] {
        (0..<32).compactMap { bit in
            guard rawValue & (1 << UInt32(bit)) != 0 else { return nil }
            return bit < Status.names.count ? Status.names[bit] : "BIT\(bit)"
        }
    }

    public init?(names: [String]) {
        var raw: UInt32 = 0
        for n in names {
            guard let i = Status.names.firstIndex(of: n.uppercased()) else { return nil }
            raw |= 1 << UInt32(i)
        }
        self.init(rawValue: raw)
    }
}

/// TCP conntrack states, numbered as in enum tcp_conntrack.
public enum TCPState: UInt8, Sendable, CaseIterable {
    case none = 0, synSent, synRecv, established, finWait, closeWait, lastAck, timeWait, close, synSent2

    public var name: StaticString {
        switch self {
        case .none: return "NONE"
        case .synSent: return "SYN_SENT"
        case .synRecv: return "SYN_RECV"
        case .established: return "ESTABLISHED"
        case .finWait: return "FIN_WAIT"
        case .closeWait: return "CLOSE_WAIT"
        case .lastAck: return "LAST_ACK"
        case .timeWait: return "TIME_WAIT"
        case .close: return "CLOSE"
        case .synSent2: return "SYN_SENT2"
        }
    }

    public var text: String { name.description }

    public init?(name: String) {
        guard let s = TCPState.allCases.first(where: { $0.text == name.uppercased() }) else { return nil }
        self = s
    }
}

/// SCTP conntrack states, numbered as in enum sctp_conntrack.
public enum SCTPState: UInt8, Sendable, CaseIterable {
    case none = 0, closed, cookieWait, cookieEchoed, established, shutdownSent, shutdownRecd,
         shutdownAckSent, heartbeatSent, heartbeatAcked

    public var text: String {
        ["NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
         "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED"][Int(rawValue)]
    }

    public init?(name: String) {
        guard let s = SCTPState.allCases.first(where: { $0.text == name.uppercased() }) else { return nil }
        self = s
    }
}

/// DCCP conntrack states, numbered as in enum ct_dccp_states.
public enum DCCPState: UInt8, Sendable, CaseIterable {
    case none = 0, request, respond, partOpen, open, closeReq, closing, timeWait, ignore, invalid

    public var text: String {
        ["NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT",
         "IGNORE", "INVALID"][Int(rawValue)]
    }

    public init?(name: String) {
        guard let s = DCCPState.allCases.first(where: { $0.text == name.uppercased() }) else { return nil }
        self = s
    }
}

/// Per-direction TCP flags as ctnetlink reports them (struct nf_ct_tcp_flags).
public struct TCPFlagsMask: Hashable, Sendable {
    public var flags: UInt8
    public var mask: UInt8
    public init(flags: UInt8, mask: UInt8) { self.flags = flags; self.mask = mask }
}

/// CTA_PROTOINFO: per-protocol state.
public enum ProtoInfo: Hashable, Sendable {
    case tcp(TCPInfo)
    case sctp(SCTPInfo)
    case dccp(DCCPInfo)
}

public struct TCPInfo: Hashable, Sendable {
    public var state: UInt8
    public var windowScaleOriginal: UInt8?
    public var windowScaleReply: UInt8?
    public var flagsOriginal: TCPFlagsMask?
    public var flagsReply: TCPFlagsMask?
    public init(state: UInt8, windowScaleOriginal: UInt8? = nil, windowScaleReply: UInt8? = nil,
                flagsOriginal: TCPFlagsMask? = nil, flagsReply: TCPFlagsMask? = nil) {
        self.state = state
        self.windowScaleOriginal = windowScaleOriginal
        self.windowScaleReply = windowScaleReply
        self.flagsOriginal = flagsOriginal
        self.flagsReply = flagsReply
    }
}

public struct SCTPInfo: Hashable, Sendable {
    public var state: UInt8
    public var vtagOriginal: UInt32?
    public var vtagReply: UInt32?
    public init(state: UInt8, vtagOriginal: UInt32? = nil, vtagReply: UInt32? = nil) {
        self.state = state; self.vtagOriginal = vtagOriginal; self.vtagReply = vtagReply
    }
}

public struct DCCPInfo: Hashable, Sendable {
    public var state: UInt8
    public var role: UInt8?
    public var handshakeSeq: UInt64?
    public init(state: UInt8, role: UInt8? = nil, handshakeSeq: UInt64? = nil) {
        self.state = state; self.role = role; self.handshakeSeq = handshakeSeq
    }
}

public struct Counters: Hashable, Sendable {
    public var packets: UInt64
    public var bytes: UInt64
    public init(packets: UInt64, bytes: UInt64) { self.packets = packets; self.bytes = bytes }
}

/// CTA_SEQ_ADJ_ORIG/REPLY (NAT helper sequence adjustment).
public struct SequenceAdjustment: Hashable, Sendable {
    public var correctionPosition: UInt32
    public var offsetBefore: UInt32
    public var offsetAfter: UInt32
    public init(correctionPosition: UInt32, offsetBefore: UInt32, offsetAfter: UInt32) {
        self.correctionPosition = correctionPosition
        self.offsetBefore = offsetBefore
        self.offsetAfter = offsetAfter
    }
}

public struct Synproxy: Hashable, Sendable {
    public var isn: UInt32
    public var its: UInt32
    public var tsoff: UInt32
    public init(isn: UInt32, its: UInt32, tsoff: UInt32) { self.isn = isn; self.its = its; self.tsoff = tsoff }
}

/// The 128-bit connection label bitmap (CTA_LABELS), bit b of the kernel's
/// byte array is label b. Stored inline: `low` holds labels 0..63.
public struct Labels: Hashable, Sendable {
    public var low: UInt64
    public var high: UInt64
    public init(low: UInt64 = 0, high: UInt64 = 0) { self.low = low; self.high = high }

    public init(bits: [Int]) {
        self.init()
        for b in bits where b >= 0 && b < 128 { set(b) }
    }

    public mutating func set(_ bit: Int) {
        if bit < 64 { low |= 1 << UInt64(bit) } else { high |= 1 << UInt64(bit - 64) }
    }

    public mutating func clear(_ bit: Int) {
        if bit < 64 { low &= ~(1 << UInt64(bit)) } else { high &= ~(1 << UInt64(bit - 64)) }
    }

    public func contains(_ bit: Int) -> Bool {
        bit < 64 ? low & (1 << UInt64(bit)) != 0 : high & (1 << UInt64(bit - 64)) != 0
    }

    public var bits: [Int] { (0..<128).filter(contains) }
    public var isEmpty: Bool { low == 0 && high == 0 }

    /// The kernel's wire form: 16 bytes, little-endian 32-bit words (host order on x86).
    public var wireBytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        for b in bits { out[b / 8] |= 1 << UInt8(b % 8) }
        return out
    }

    public init<C: Collection>(wireBytes: C) where C.Element == UInt8 {
        self.init()
        for (i, byte) in wireBytes.enumerated() where i < 16 {
            for k in 0..<8 where byte & (1 << UInt8(k)) != 0 { set(i * 8 + k) }
        }
    }

    /// Hex of the 16 wire bytes read as one big number, label 0 in the lowest bit.
    public var hex: String {
        if high == 0 { return "0x" + String(low, radix: 16) }
        let lo = String(low, radix: 16)
        return "0x" + String(high, radix: 16) + String(repeating: "0", count: 16 - lo.count) + lo
    }

    public init?(hex: String) {
        var s = Substring(hex)
        if s.hasPrefix("0x") || s.hasPrefix("0X") { s = s.dropFirst(2) }
        guard !s.isEmpty, s.count <= 32 else { return nil }
        let loPart = s.suffix(16), hiPart = s.dropLast(min(16, s.count))
        guard let lo = UInt64(loPart, radix: 16) else { return nil }
        let hi = hiPart.isEmpty ? 0 : UInt64(hiPart, radix: 16)
        guard let hi else { return nil }
        self.init(low: lo, high: hi)
    }
}

/// One entry of the kernel's conntrack table, with every attribute ctnetlink
/// reports. Optional fields are those the kernel may leave out (for example
/// counters when nf_conntrack_acct is off, or everything but tuples in an event).
public struct ConntrackEntry: Hashable, Sendable {
    public var original: Tuple
    public var reply: Tuple
    public var status: Status?
    public var timeout: UInt32?
    public var mark: UInt32?
    public var zone: UInt16?
    public var use: UInt32?
    public var id: UInt32?
    public var protoInfo: ProtoInfo?
    public var countersOriginal: Counters?
    public var countersReply: Counters?
    public var labels: Labels?
    /// Attributes most entries lack, kept out of line so that tables of millions of
    /// entries stay small (an entry is about half the size with them inline).
    var rare: RareBox?

    public var secmark: UInt32? {
        get { rare?.value.secmark }
        set { updateRare { $0.secmark = newValue } }
    }
    public var timestampStart: UInt64? {
        get { rare?.value.timestampStart }
        set { updateRare { $0.timestampStart = newValue } }
    }
    public var timestampStop: UInt64? {
        get { rare?.value.timestampStop }
        set { updateRare { $0.timestampStop = newValue } }
    }
    public var helper: String? {
        get { rare?.value.helper }
        set { updateRare { $0.helper = newValue } }
    }
    public var master: Tuple? {
        get { rare?.value.master }
        set { updateRare { $0.master = newValue } }
    }
    public var secctx: String? {
        get { rare?.value.secctx }
        set { updateRare { $0.secctx = newValue } }
    }
    public var seqAdjOriginal: SequenceAdjustment? {
        get { rare?.value.seqAdjOriginal }
        set { updateRare { $0.seqAdjOriginal = newValue } }
    }
    public var seqAdjReply: SequenceAdjustment? {
        get { rare?.value.seqAdjReply }
        set { updateRare { $0.seqAdjReply = newValue } }
    }
    public var synproxy: Synproxy? {
        get { rare?.value.synproxy }
        set { updateRare { $0.synproxy = newValue } }
    }

    /// Copy, change, store (nil when nothing is left): boxes are never shared mutably.
    mutating func updateRare(_ change: (inout RareAttributes) -> Void) {
        var v = rare?.value ?? RareAttributes()
        change(&v)
        rare = v == RareAttributes() ? nil : RareBox(v)
    }

    public init(original: Tuple, reply: Tuple) {
        self.original = original
        self.reply = reply
    }

    public var family: AddressFamily { original.family }

    public var tcpState: TCPState? {
        if case .tcp(let t) = protoInfo { return TCPState(rawValue: t.state) }
        return nil
    }

    /// The entry's source NAT: the reply destination differs from the original source.
    public var isSourceNAT: Bool {
        original.source != reply.destination || (original.l4.hasPorts && original.sourcePort != reply.destinationPort)
    }

    /// The entry's destination NAT: the reply source differs from the original destination.
    public var isDestinationNAT: Bool {
        original.destination != reply.source || (original.l4.hasPorts && original.destinationPort != reply.sourcePort)
    }
}

/// The out-of-line attributes of an entry.
struct RareAttributes: Hashable, Sendable {
    var secmark: UInt32?
    var timestampStart: UInt64?
    var timestampStop: UInt64?
    var helper: String?
    var master: Tuple?
    var secctx: String?
    var seqAdjOriginal: SequenceAdjustment?
    var seqAdjReply: SequenceAdjustment?
    var synproxy: Synproxy?
}

/// An immutable box compared by value.
final class RareBox: Hashable, Sendable {
    let value: RareAttributes
    init(_ v: RareAttributes) { value = v }
    static func == (a: RareBox, b: RareBox) -> Bool { a === b || a.value == b.value }
    func hash(into h: inout Hasher) { value.hash(into: &h) }
}

/// One entry of the kernel's expectation table.
public struct Expectation: Hashable, Sendable {
    public var master: Tuple
    public var tuple: Tuple
    public var mask: Tuple
    public var timeout: UInt32?
    public var id: UInt32?
    public var helper: String?
    public var zone: UInt16?
    public var flags: UInt32?
    public var expectClass: UInt32?
    public var natDirection: UInt32?
    public var natTuple: Tuple?
    public var function: String?

    public init(master: Tuple, tuple: Tuple, mask: Tuple) {
        self.master = master
        self.tuple = tuple
        self.mask = mask
    }

    /// Expectation flag names (NF_CT_EXPECT_*), by bit.
    public static let flagNames: [String] = ["PERMANENT", "INACTIVE", "USERSPACE"]
}
