import Foundation

/// The net.netfilter sysctls the tracker's rules depend on, with the kernel's built-in
/// defaults (kernel-conntrack-semantics.md 5.8, 6.x). Values are seconds unless noted.
public struct Sysctls: Sendable, Equatable {
    public var values: [String: Int]

    /// Built-in defaults of this kernel (6.18).
    public static let defaults: [String: Int] = [
        "nf_conntrack_tcp_timeout_syn_sent": 120, "nf_conntrack_tcp_timeout_syn_recv": 60,
        "nf_conntrack_tcp_timeout_established": 432_000, "nf_conntrack_tcp_timeout_fin_wait": 120,
        "nf_conntrack_tcp_timeout_close_wait": 60, "nf_conntrack_tcp_timeout_last_ack": 30,
        "nf_conntrack_tcp_timeout_time_wait": 120, "nf_conntrack_tcp_timeout_close": 10,
        "nf_conntrack_tcp_timeout_max_retrans": 300, "nf_conntrack_tcp_timeout_unacknowledged": 300,
        "nf_conntrack_tcp_loose": 1, "nf_conntrack_tcp_be_liberal": 0, "nf_conntrack_tcp_ignore_invalid_rst": 0,
        "nf_conntrack_tcp_max_retrans": 3,
        "nf_conntrack_udp_timeout": 30, "nf_conntrack_udp_timeout_stream": 120,
        "nf_conntrack_icmp_timeout": 30, "nf_conntrack_icmpv6_timeout": 30,
        "nf_conntrack_generic_timeout": 600,
        "nf_conntrack_gre_timeout": 30, "nf_conntrack_gre_timeout_stream": 180,
        "nf_conntrack_sctp_timeout_closed": 10, "nf_conntrack_sctp_timeout_cookie_wait": 3,
        "nf_conntrack_sctp_timeout_cookie_echoed": 3, "nf_conntrack_sctp_timeout_established": 210,
        "nf_conntrack_sctp_timeout_shutdown_sent": 3, "nf_conntrack_sctp_timeout_shutdown_recd": 3,
        "nf_conntrack_sctp_timeout_shutdown_ack_sent": 3, "nf_conntrack_sctp_timeout_heartbeat_sent": 30,
        "nf_conntrack_acct": 0, "nf_conntrack_timestamp": 0, "nf_conntrack_checksum": 1,
        "nf_conntrack_max": 262_144,
    ]

    public init(_ overrides: [String: Int] = [:]) {
        values = Sysctls.defaults.merging(overrides) { $1 }
    }

    public subscript(_ name: String) -> Int { values[name] ?? Sysctls.defaults[name] ?? 0 }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        case unknown(String)
        case notANumber(String)
        public var description: String {
            switch self {
            case .malformed(let s): return "expected name=value, got `\(s)'"
            case .unknown(let s): return "unknown sysctl `\(s)'"
            case .notANumber(let s): return "sysctl value is not a number: `\(s)'"
            }
        }
    }

    /// Applies one `name=value` (with or without the `net.netfilter.` prefix).
    public mutating func apply(_ assignment: String) throws {
        let parts = assignment.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2, !parts[0].isEmpty else { throw ParseError.malformed(assignment) }
        var name = parts[0]
        for prefix in ["net.netfilter.", "net/netfilter/"] where name.hasPrefix(prefix) { name.removeFirst(prefix.count) }
        guard Sysctls.defaults[name] != nil else { throw ParseError.unknown(name) }
        guard let v = Int(parts[1]), v >= 0 else { throw ParseError.notANumber(parts[1]) }
        values[name] = v
    }

    /// Reads every known sysctl present in a /proc/sys/net/netfilter directory (the current
    /// network namespace's by default); missing files keep the defaults.
    public static func read(directory: String = "/proc/sys/net/netfilter") -> Sysctls {
        var s = Sysctls()
        for name in defaults.keys {
            if let text = try? String(contentsOfFile: directory + "/" + name, encoding: .utf8),
               let v = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                s.values[name] = v
            }
        }
        return s
    }
}
