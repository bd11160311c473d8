import ConntrackCore

/// One pending expectation (nf_conntrack_expect; semantics 11.3): a connection the helper
/// of `master` announced. Source port is always a wildcard for FTP; the source address
/// mask is full.
public struct ModelExpectation: Sendable, Equatable {
    public var tuple: Tuple
    public var wildcardSourcePort: Bool
    public var master: Int32
    public var zone: UInt16
    public var helper: String
    public var created: UInt64
    public var expires: UInt64
    /// Monotonic number: the oldest per master is evicted first.
    public var serial: Int
}

/// The expectation table, keyed by nothing fancy: few expectations exist at any time.
public struct ExpectationTable: Sendable {
    public private(set) var all: [ModelExpectation] = []
    private var serial = 0
    public init() {}

    /// `nf_ct_expect_related` with FTP's policy (max_expected 1 per master): an identical
    /// expectation is replaced; an older one of the same master is evicted; a clash with
    /// another master's expectation fails (the helper then drops the packet).
    public mutating func add(_ x: ModelExpectation, maxPerMaster: Int = 1, now: UInt64) -> Bool {
        all.removeAll { now >= $0.expires }
        if let i = all.firstIndex(where: { $0.master == x.master && $0.tuple == x.tuple && $0.zone == x.zone }) {
            all.remove(at: i)
        } else if all.contains(where: { $0.master != x.master && $0.tuple == x.tuple && $0.zone == x.zone }) {
            return false
        }
        var mine = all.filter { $0.master == x.master }.sorted { $0.serial < $1.serial }
        while mine.count >= maxPerMaster, let oldest = mine.first {
            all.removeAll { $0.serial == oldest.serial }
            mine.removeFirst()
        }
        var e = x
        serial += 1
        e.serial = serial
        all.append(e)
        return true
    }

    /// Finds and consumes the expectation a new connection's original tuple fulfils.
    public mutating func take(_ t: Tuple, zone: UInt16, now: UInt64) -> ModelExpectation? {
        guard !all.isEmpty else { return nil }
        all.removeAll { now >= $0.expires }
        guard let i = all.firstIndex(where: { x in
            x.zone == zone && x.tuple.l4proto == t.l4proto && x.tuple.source == t.source
                && x.tuple.destination == t.destination && x.tuple.destinationPort == t.destinationPort
                && (x.wildcardSourcePort || x.tuple.sourcePort == t.sourcePort)
        }) else { return nil }
        return all.remove(at: i)
    }

    /// Deleting a master deletes its expectations (7.3).
    public mutating func removeAll(master: Int32) {
        if !all.isEmpty { all.removeAll { $0.master == master } }
    }

    public func live(now: UInt64) -> [ModelExpectation] { all.filter { now < $0.expires } }
}
