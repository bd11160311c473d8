import ConntrackCore

/// The sysctls resolved once into plain fields, in nanoseconds, so the per-packet path
/// never looks a name up.
public struct Timeouts: Sendable {
    /// TCP per-state timeouts indexed by `TCPState.rawValue` (0...9), then RETRANS (10), UNACK (11).
    public var tcp: TCPTimeoutTable
    public var udp: UInt64, udpStream: UInt64
    public var icmp: UInt64, icmpv6: UInt64
    public var generic: UInt64
    public var gre: UInt64, greStream: UInt64
    /// SCTP per-state timeouts indexed by `SCTPState.rawValue`.
    public var sctp: [UInt64]
    public var tcpLoose: Bool, tcpBeLiberal: Bool, tcpIgnoreInvalidRST: Bool
    public var tcpMaxRetrans: UInt8
    public var accounting: Bool, timestamps: Bool, checksum: Bool
    public var maxEntries: Int
    /// Rules of 6.12 instead of 6.18 where the semantics reference flags [VERSION].
    public var kernel612 = false

    public static let retransIndex = 10, unackIndex = 11
    static let second: UInt64 = 1_000_000_000

    public init(_ s: Sysctls) {
        func ns(_ name: String) -> UInt64 { UInt64(s[name]) * Timeouts.second }
        var list = TCPState.allCases.sorted { $0.rawValue < $1.rawValue }.map { UInt64(TCPRules.timeout($0, s)) * Timeouts.second }
        list.append(ns("nf_conntrack_tcp_timeout_max_retrans"))
        list.append(ns("nf_conntrack_tcp_timeout_unacknowledged"))
        tcp = TCPTimeoutTable(list)
        udp = ns("nf_conntrack_udp_timeout")
        udpStream = ns("nf_conntrack_udp_timeout_stream")
        icmp = ns("nf_conntrack_icmp_timeout")
        icmpv6 = ns("nf_conntrack_icmpv6_timeout")
        generic = ns("nf_conntrack_generic_timeout")
        gre = ns("nf_conntrack_gre_timeout")
        greStream = ns("nf_conntrack_gre_timeout_stream")
        sctp = SCTPState.allCases.sorted { $0.rawValue < $1.rawValue }.map { state -> UInt64 in
            guard let name = SCTPRules.sysctlName[state] else { return 0 }
            return ns(name)
        }
        tcpLoose = s["nf_conntrack_tcp_loose"] != 0
        tcpBeLiberal = s["nf_conntrack_tcp_be_liberal"] != 0
        tcpIgnoreInvalidRST = s["nf_conntrack_tcp_ignore_invalid_rst"] != 0
        tcpMaxRetrans = UInt8(clamping: s["nf_conntrack_tcp_max_retrans"])
        accounting = s["nf_conntrack_acct"] != 0
        timestamps = s["nf_conntrack_timestamp"] != 0
        checksum = s["nf_conntrack_checksum"] != 0
        maxEntries = s["nf_conntrack_max"]
    }
}

/// Twelve TCP timeouts inline (no array buffer to retain on the per-packet path).
public struct TCPTimeoutTable: Sendable {
    var v: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    init(_ a: [UInt64]) { v = (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]) }
    public subscript(_ i: Int) -> UInt64 {
        withUnsafeBytes(of: v) { $0.load(fromByteOffset: min(max(i, 0), 11) * 8, as: UInt64.self) }
    }
}
