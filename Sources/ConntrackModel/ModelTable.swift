import ConntrackCore

/// The model's table: entries found by (zone, tuple) in either direction, as the kernel's
/// hash holds both tuples of every confirmed entry (semantics 3 and 7). Time is passed in
/// (nanoseconds); an entry exists while now < lastRefresh + timeout, and a dump shows the
/// whole seconds left, rounded down (7.2).
public struct ModelTable {
    public struct Key: Hashable, Sendable {
        public var zone: UInt16
        public var tuple: Tuple
        public init(zone: UInt16, tuple: Tuple) {
            self.zone = zone
            var t = tuple
            t.zone = nil      // per-direction zones are part of the entry, not of the key
            self.tuple = t
        }
    }

    /// One modelled entry: what ctnetlink would report, plus when it expires.
    public struct Slot: Sendable {
        public var entry: ConntrackEntry
        /// Absolute expiry time in nanoseconds.
        public var expires: UInt64
        /// When the first packet arrived (the UDP stream rule and timestamps need it).
        public var firstSeen: UInt64
        /// The zone the entry was inserted under (its key).
        public let zone: UInt16
    }

    public enum Direction: Sendable { case original, reply }

    private var slots: [Int: Slot] = [:]
    private var index: [Key: (Int, Direction)] = [:]
    private var nextID = 1

    public init() {}

    public var count: Int { slots.count }

    /// The live entry a tuple belongs to, and which direction it matched; expired entries
    /// met on the way are removed (as the kernel's lookup does).
    public mutating func lookup(_ tuple: Tuple, zone: UInt16, now: UInt64) -> (id: Int, direction: Direction)? {
        guard let (id, dir) = index[Key(zone: zone, tuple: tuple)] else { return nil }
        guard let slot = slots[id], now < slot.expires else { remove(id); return nil }
        return (id, dir)
    }

    public subscript(id: Int) -> Slot? {
        get { slots[id] }
        set {
            if let newValue { slots[id] = newValue } else { remove(id) }
        }
    }

    /// Confirms a new entry (both tuples become visible). Returns its id, or nil when either
    /// tuple is already taken by a live entry (a clash, semantics 7.5).
    public mutating func insert(_ entry: ConntrackEntry, zone: UInt16, expires: UInt64, firstSeen: UInt64, now: UInt64) -> Int? {
        if lookup(entry.original, zone: zone, now: now) != nil || lookup(entry.reply, zone: zone, now: now) != nil { return nil }
        let id = nextID
        nextID += 1
        slots[id] = Slot(entry: entry, expires: expires, firstSeen: firstSeen, zone: zone)
        index[Key(zone: zone, tuple: entry.original)] = (id, .original)
        index[Key(zone: zone, tuple: entry.reply)] = (id, .reply)
        return id
    }

    public mutating func remove(_ id: Int) {
        guard let slot = slots.removeValue(forKey: id) else { return }
        index[Key(zone: slot.zone, tuple: slot.entry.original)] = nil
        index[Key(zone: slot.zone, tuple: slot.entry.reply)] = nil
    }

    /// Removes every entry whose time ran out by `now`.
    public mutating func expire(now: UInt64) {
        for (id, slot) in slots where now >= slot.expires { remove(id) }
    }

    /// The table as a dump at `now` would show it: live entries with the timeout in whole
    /// seconds left, rounded down.
    public func snapshot(now: UInt64) -> [ConntrackEntry] {
        slots.keys.sorted().compactMap { id in
            guard let slot = slots[id], now < slot.expires else { return nil }
            var e = slot.entry
            e.timeout = UInt32((slot.expires - now) / 1_000_000_000)
            return e
        }
    }
}
