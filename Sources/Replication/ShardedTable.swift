import ConntrackCore

/// A dictionary keyed by entry, split into 64 dictionaries by a hash of the key.
///
/// Swift's dictionary grows by rehashing everything at once: at 49152 entries (three
/// quarters of 65536) that took 20–30 ms, during which replicated events waited (the p99
/// event latency at 10000 new connections per second went from about 2 ms to 15 ms with
/// those pauses). Split in 64, each growth moves a sixty-fourth of the table. A copy is
/// cheap and copies on write shard by shard, so a change after a snapshot copies one shard.
struct ShardedTable<Value>: Sequence {
    static var shardCount: Int { 64 }
    private(set) var shards: [[EntryKey: Value]] = Array(repeating: [:], count: 64)
    private(set) var count = 0

    /// The shard of a key: a multiplicative mix of its words (not Swift's seeded hash, which
    /// the shard's own dictionary applies afterwards).
    @inline(__always)
    static func shard(_ k: EntryKey) -> Int {
        func word(_ a: IPAddress) -> UInt64 {
            switch a {
            case .v4(let x): return UInt64(x)
            case .v6(let hi, let lo): return hi ^ (lo &* 0x9e37_79b9_7f4a_7c15)
            }
        }
        let t = k.tuple
        var h = word(t.source) &* 0xff51_afd7_ed55_8ccd
        h ^= word(t.destination) &* 0xc4ce_b9fe_1a85_ec53
        h ^= UInt64(t.sourcePort) << 48 | UInt64(t.destinationPort) << 32 | UInt64(k.zone) << 16 | UInt64(t.l4proto) << 8
            | UInt64(t.icmpID) ^ UInt64(t.icmpType) << 24
        h = (h ^ (h >> 29)) &* 0xbf58_476d_1ce4_e5b9
        return Int(truncatingIfNeeded: h >> 58)
    }

    subscript(key: EntryKey) -> Value? {
        get { shards[Self.shard(key)][key] }
        set {
            let s = Self.shard(key)
            let before = shards[s].count
            shards[s][key] = newValue
            count += shards[s].count - before
        }
    }

    /// Room for `n` entries in all (spread evenly, with some slack for an uneven spread).
    mutating func reserveCapacity(_ n: Int) {
        let each = n / Self.shardCount + n / (Self.shardCount * 8) + 16
        for i in shards.indices where shards[i].capacity < each { shards[i].reserveCapacity(each) }
    }

    mutating func removeAll() {
        shards = Array(repeating: [:], count: Self.shardCount)
        count = 0
    }

    /// Removes every entry `isGone` selects.
    mutating func removeAll(where isGone: (EntryKey, Value) -> Bool) {
        var gone: [EntryKey] = []
        for i in shards.indices {
            gone.removeAll(keepingCapacity: true)
            for (k, v) in shards[i] where isGone(k, v) { gone.append(k) }
            for k in gone { shards[i][k] = nil }
            count -= gone.count
        }
    }

    /// A position in the table, for walking it in steps (across turns of an event loop)
    /// over a copy that does not change.
    struct Position {
        var shard = 0
        var index: Dictionary<EntryKey, Value>.Index?
    }

    /// The entry at `p` and the position after it; nil at the end.
    func next(after p: inout Position) -> (key: EntryKey, value: Value)? {
        while p.shard < shards.count {
            let i = p.index ?? shards[p.shard].startIndex
            if i != shards[p.shard].endIndex {
                p.index = shards[p.shard].index(after: i)
                return shards[p.shard][i]
            }
            p.shard += 1
            p.index = nil
        }
        return nil
    }

    func makeIterator() -> AnyIterator<(key: EntryKey, value: Value)> {
        var p = Position()
        return AnyIterator { next(after: &p) }
    }
}
