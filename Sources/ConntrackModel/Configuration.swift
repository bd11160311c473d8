import ConntrackCore

/// A simple packet match, the subset of nft matches the model's rules need:
/// `proto=tcp,src=ADDR[/LEN],dst=ADDR[/LEN],sport=N,dport=N` (all given keys must match).
public struct PacketMatch: Sendable, Equatable {
    public var l4proto: UInt8?
    public var source: IPNetwork?
    public var destination: IPNetwork?
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?

    public init() {}

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var description: String
    }

    /// Parses `key=value,…`; an empty string matches every packet.
    public init(parsing text: String) throws {
        for part in text.split(separator: ",") where !part.isEmpty {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw ParseError(description: "match `\(part)': expected key=value") }
            switch kv[0] {
            case "proto":
                guard let p = L4Protocol(name: kv[1]) else { throw ParseError(description: "unknown protocol `\(kv[1])'") }
                l4proto = p.number
            case "src", "dst":
                let c = IPNetwork(kv[1]) ?? IPAddress(kv[1]).map { IPNetwork(address: $0, prefixLength: $0.family == .ipv4 ? 32 : 128) }
                guard let c else { throw ParseError(description: "bad address `\(kv[1])'") }
                if kv[0] == "src" { source = c } else { destination = c }
            case "sport", "dport":
                guard let n = UInt16(kv[1]) else { throw ParseError(description: "bad port `\(kv[1])'") }
                if kv[0] == "sport" { sourcePort = n } else { destinationPort = n }
            default:
                throw ParseError(description: "unknown match key `\(kv[0])' (proto, src, dst, sport, dport)")
            }
        }
    }

    /// Whether a packet's tuple (as it travels, not the entry's original) matches.
    public func matches(_ t: Tuple) -> Bool {
        if let l4proto, t.l4proto != l4proto { return false }
        if let source, !source.contains(t.source) { return false }
        if let destination, !destination.contains(t.destination) { return false }
        if sourcePort != nil || destinationPort != nil {
            guard t.l4.hasPorts else { return false }
            if let sourcePort, t.sourcePort != sourcePort { return false }
            if let destinationPort, t.destinationPort != destinationPort { return false }
        }
        return true
    }
}

/// "When a packet matches, set this value": zones (a raw-table template, before lookup),
/// marks (`ct mark set` after tracking) and helpers (`ct helper set` on the first packet).
public struct Rule<Value: Sendable & Equatable>: Sendable, Equatable {
    public var value: Value
    public var match: PacketMatch
    public init(value: Value, match: PacketMatch = PacketMatch()) { self.value = value; self.match = match }
}

/// The kernel versions whose differing TCP rules the model knows (semantics 5.5f, 5.7).
public enum KernelRules: String, Sendable, CaseIterable {
    /// 6.17 and later (this machine: 6.18): an accepted RST always gives T[CLOSE].
    case v6_18 = "6.18"
    /// 6.12: an RST that keeps ESTABLISHED gives T[UNACK]; an RST answering a SYN we let
    /// through must come from the other direction.
    case v6_12 = "6.12"
}

/// What the model needs to know about the host besides its sysctls.
public struct ModelConfiguration: Sendable {
    public var sysctls: Sysctls
    public var zones: [Rule<UInt16>] = []
    public var marks: [Rule<UInt32>] = []
    /// Label bits (0...127) set on the entry of a matching packet (`ct label set`).
    public var labels: [Rule<Int>] = []
    /// Helper name by rule; the rule is checked against the first packet of a connection.
    public var helpers: [Rule<String>] = []
    /// The namespace has NAT chains: every new entry gets SRC_NAT_DONE|DST_NAT_DONE.
    public var natHooks = false
    /// Which kernel's rules to follow where versions differ (semantics [VERSION] notes).
    public var kernel: KernelRules = .v6_18
    public init(sysctls: Sysctls = Sysctls()) { self.sysctls = sysctls }

    /// Helpers the model implements.
    public static let knownHelpers: Set<String> = ["ftp"]

    /// Parses `VALUE[:MATCH]` for --zone and --mark.
    public static func rule<V>(_ text: String, value parse: (String) -> V?) throws -> Rule<V> {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard let first = parts.first, let v = parse(first) else { throw PacketMatch.ParseError(description: "bad value in `\(text)'") }
        return Rule(value: v, match: try PacketMatch(parsing: parts.count > 1 ? parts[1] : ""))
    }

    /// Parses `--helper NAME:PROTO/PORT` (as `tcp dport PORT ct helper set NAME`).
    public static func helperRule(_ text: String) throws -> Rule<String> {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, knownHelpers.contains(parts[0]) else {
            throw PacketMatch.ParseError(description: "--helper takes NAME:PROTO/PORT with NAME one of \(knownHelpers.sorted().joined(separator: ", ")), got `\(text)'")
        }
        let pp = parts[1].split(separator: "/").map(String.init)
        guard pp.count == 2, let proto = L4Protocol(name: pp[0]), let port = UInt16(pp[1]) else {
            throw PacketMatch.ParseError(description: "--helper: expected PROTO/PORT, got `\(parts[1])'")
        }
        var m = PacketMatch()
        m.l4proto = proto.number
        m.destinationPort = port
        return Rule(value: parts[0], match: m)
    }
}
