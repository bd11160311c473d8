import ConntrackCore

/// TCP window data of one direction (`struct ip_ct_tcp_state`, semantics 5.6).
public struct TCPWindow: Sendable, Equatable {
    public var end: UInt32 = 0
    public var maxEnd: UInt32 = 0
    public var maxWindow: UInt32 = 0
    public var maxAck: UInt32 = 0
    public var scale: UInt8 = 0
    /// WINDOW_SCALE 0x01, SACK_PERM 0x02, CLOSE_INIT 0x04, BE_LIBERAL 0x08,
    /// DATA_UNACKNOWLEDGED 0x10, MAXACK_SET 0x20.
    public var flags: UInt8 = 0
    public init() {}

    public static let windowScale: UInt8 = 0x01, sackPermitted: UInt8 = 0x02, closeInit: UInt8 = 0x04
    public static let beLiberal: UInt8 = 0x08, dataUnacknowledged: UInt8 = 0x10, maxAckSet: UInt8 = 0x20
}

/// The per-connection TCP (or SCTP) private state: state, both directions' windows and
/// the "recorded packet" of 5.5.
public struct TCPConnection: Sendable, Equatable {
    // Declaration order is layout order: 60 bytes, so an entry keeps it in one cache line.
    public var original = TCPWindow()
    public var reply = TCPWindow()
    public var state: TCPState = .none
    public var lastIndex: TCPRules.Index = .none
    public var lastDirection: UInt8 = 0
    public var retransmissions: UInt8 = 0
    public var lastWindowScale: UInt8 = 0
    /// Besides the window flags: CHALLENGE_ACK expected 0x40, SIMULTANEOUS_OPEN 0x80.
    public var lastFlags: UInt8 = 0
    public var lastWindow: UInt16 = 0
    public var lastSeq: UInt32 = 0
    public var lastAck: UInt32 = 0
    public var lastEnd: UInt32 = 0
    public init() {}

    public static let challengeAckExpected: UInt8 = 0x40, simultaneousOpen: UInt8 = 0x80

    subscript(direction: UInt8) -> TCPWindow {
        get { direction == 0 ? original : reply }
        set { if direction == 0 { original = newValue } else { reply = newValue } }
    }
}

/// One modelled entry, kept compact (the model must hold a million of them in little
/// memory): the original tuple, and the reply tuple only when NAT changed it.
public struct ModelEntry: Sendable {
    // Declaration order is layout order. Line 0 (bytes 0-63) holds what a lookup reads
    // (tuple, zone, expiry); line 1 what every packet updates (status, options, TCP state);
    // line 2 the rest (mark, first packet time, counters), touched only when used.
    public var original: Tuple
    public var zone: UInt16
    /// Absolute expiry, nanoseconds.
    public var expires: UInt64
    private var statusBits: UInt16
    /// Bits of `Options`.
    public var options: UInt8 = 0
    public var tcp = TCPConnection()
    public var mark: UInt32 = 0
    /// When the first packet arrived (confirmation: the timestamp start, the UDP stream rule).
    public var firstSeen: UInt64
    public var packets: (UInt64, UInt64) = (0, 0)
    public var bytes: (UInt64, UInt64) = (0, 0)

    /// The status bits (all the kernel defines fit in 16).
    public var status: Status {
        get { Status(rawValue: UInt32(statusBits)) }
        set { statusBits = UInt16(truncatingIfNeeded: newValue.rawValue) }
    }

    public struct Options {
        public static let accounting: UInt8 = 1, timestamp: UInt8 = 2, translatedReply: UInt8 = 4, extra: UInt8 = 8
    }

    public init(original: Tuple, zone: UInt16, status: Status, expires: UInt64, firstSeen: UInt64) {
        var t = original
        t.zone = nil
        self.original = t
        self.zone = zone
        self.statusBits = UInt16(truncatingIfNeeded: status.rawValue)
        self.expires = expires
        self.firstSeen = firstSeen
    }
}

/// What rare entries carry beyond `ModelEntry`: kept in a side table so the common
/// entry stays small.
public struct EntryExtra: Sendable {
    public var reply: Tuple?
    public var helper: String?
    public var master: Int32?
    public var labels: Labels?
    public var ftp: FTPState?
    public var sctp: SCTPConnection?
    public init() {}
    var isEmpty: Bool { reply == nil && helper == nil && master == nil && labels == nil && ftp == nil && sctp == nil }
}

/// The model's table: entries found by (zone, tuple) in either direction, as the kernel's
/// hash holds both tuples of every confirmed entry (semantics 3 and 7). Entries live in
/// fixed-size chunks (no copying as the table grows); the index is an open-addressing
/// hash of 32-bit references (entry number × 2 + direction) with linear probing and
/// backward-shift deletion, so it stores no keys: the tuple is read from the entry.
/// An entry exists while now < expires; a dump shows whole seconds left, rounded down (7.2).
public struct ModelTable {
    public enum Direction: UInt8, Sendable { case original = 0, reply = 1 }

    static let chunkShift = 12
    static let chunkSize = 1 << chunkShift

    private var chunks: [UnsafeMutableRawPointer] = []
    /// Bytes per entry: the stride rounded up to whole cache lines.
    static let slotBytes = (MemoryLayout<ModelEntry>.stride + 63) & ~63
    private var live: [UInt64] = []            // one bit per slot
    private var freeSlots: [Int32] = []
    private var slotCount = 0
    private var index: [UInt64]
    /// A small direct-mapped cache of index slots for recently found tuples. Live flows are
    /// few compared with the table and their entries sit together (allocated in time order),
    /// but their index slots are scattered over the whole index; this keeps their slots
    /// within a few hundred KiB. It holds copies of index values and is cleared on removal.
    private let recent: UnsafeMutablePointer<UInt64>
    static let recentCount = 1 << 16
    private var mask: Int
    private var used = 0
    public private(set) var count = 0
    public var extras: [Int32: EntryExtra] = [:]
    private let seed: UInt64

    public init(seed: UInt64 = 0x9E37_79B9_7F4A_7C15) {
        recent = UnsafeMutablePointer<UInt64>.allocate(capacity: ModelTable.recentCount)
        recent.initialize(repeating: 0, count: ModelTable.recentCount)
        index = [UInt64](repeating: 0, count: 1024)
        mask = 1023
        self.seed = seed
    }

    /// Frees the chunks. (A struct cannot deinit; the owner calls this when done.)
    public mutating func release() {
        recent.initialize(repeating: 0, count: ModelTable.recentCount)
        for c in chunks { c.deallocate() }
        chunks = []
    }

    @inline(__always) func pointer(_ id: Int32) -> UnsafeMutablePointer<ModelEntry> {
        (chunks[Int(id) >> ModelTable.chunkShift] + (Int(id) & (ModelTable.chunkSize - 1)) * ModelTable.slotBytes)
            .assumingMemoryBound(to: ModelEntry.self)
    }

    public func isLive(_ id: Int32) -> Bool {
        let i = Int(id)
        return i >= 0 && i < slotCount && live[i >> 6] & (1 << UInt64(i & 63)) != 0
    }

    /// The live entry with this number (valid until the next insert or remove).
    public subscript(id: Int32) -> ModelEntry {
        get { pointer(id).pointee }
        nonmutating _modify { yield &pointer(id).pointee }
    }

    /// The reply tuple: the inverse of the original unless NAT changed it.
    public func reply(_ id: Int32) -> Tuple {
        let e = pointer(id)
        if e.pointee.options & ModelEntry.Options.translatedReply != 0, let r = extras[id]?.reply { return r }
        return e.pointee.original.inverted()
    }

    /// A hash that is the same for a tuple and its inverse (endpoints combined symmetrically,
    /// ICMP types left out since they map request to reply), so one probe sequence finds an
    /// entry from either direction and only NAT entries need a second index slot.
    @inline(__always) func hash(_ t: Tuple, zone: UInt16) -> UInt32 {
        @inline(__always) func mix(_ h: UInt64, _ v: UInt64) -> UInt64 {
            var x = (h ^ v) &* 0x9FB2_1C65_1E98_DF25
            x ^= x >> 29
            return x
        }
        @inline(__always) func endpoint(_ a: IPAddress, _ port: UInt16) -> UInt64 {
            switch a {
            case .v4(let v): return mix(seed, UInt64(v) << 16 | UInt64(port))
            case .v6(let x, let y): return mix(mix(seed, x), y ^ UInt64(port))
            }
        }
        let icmp = t.l4proto == 1 || t.l4proto == 58
        let e1 = endpoint(t.source, icmp ? 0 : t.sourcePort)
        let e2 = endpoint(t.destination, icmp ? 0 : t.destinationPort)
        var h = mix(seed ^ UInt64(zone) << 8 ^ UInt64(t.l4proto), e1 &+ e2)
        h = mix(h, e1 ^ e2)
        if icmp { h = mix(h, UInt64(t.icmpID) << 8 | UInt64(t.icmpCode)) }
        return UInt32(truncatingIfNeeded: h ^ (h >> 32))
    }

    @inline(__always) static func same(_ a: Tuple, _ b: Tuple) -> Bool {
        a.sourcePort == b.sourcePort && a.destinationPort == b.destinationPort && a.l4proto == b.l4proto
            && a.icmpID == b.icmpID && a.icmpType == b.icmpType && a.icmpCode == b.icmpCode
            && a.source == b.source && a.destination == b.destination
    }

    /// `same(original.inverted(), t)` without building the inverse (ICMP maps types, so it does).
    @inline(__always) static func isInverse(_ o: Tuple, _ t: Tuple) -> Bool {
        if o.l4proto == 1 || o.l4proto == 58 { return same(o.inverted(), t) }
        return o.sourcePort == t.destinationPort && o.destinationPort == t.sourcePort && o.l4proto == t.l4proto
            && o.source == t.destination && o.destination == t.source
    }

    @inline(__always) func tupleOf(_ ref: UInt32) -> Tuple {
        let id = Int32(ref >> 1)
        return ref & 1 == 0 ? pointer(id).pointee.original : reply(id)
    }

    /// Finds the entry a tuple belongs to, live or not (no expiry check). Index slots hold
    /// the reference in the low 32 bits and the tuple's 32-bit hash in the high bits, so a
    /// probe touches an entry only when the hashes agree.
    func find(_ t: Tuple, zone: UInt16) -> (Int32, Direction)? {
        let h = hash(t, zone: zone)
        let r = recent + (Int(h) & (ModelTable.recentCount - 1))
        if UInt32(truncatingIfNeeded: r.pointee >> 32) == h, let found = match(r.pointee, t, zone: zone) { return found }
        var i = Int(h) & mask
        return index.withUnsafeBufferPointer { idx in
            while true {
                let v = idx[i]
                if v == 0 { return nil }
                if UInt32(truncatingIfNeeded: v >> 32) == h, let found = match(v, t, zone: zone) {
                    r.pointee = v
                    return found
                }
                i = (i + 1) & mask
            }
        }
    }

    /// Whether the entry an index value names holds tuple `t` in `zone`, and in which direction.
    @inline(__always) func match(_ v: UInt64, _ t: Tuple, zone: UInt16) -> (Int32, Direction)? {
        let ref = UInt32(truncatingIfNeeded: v) &- 1
        let id = Int32(ref >> 1)
        let e = pointer(id)
        guard e.pointee.zone == zone else { return nil }
        if ref & 1 == 0 {
            if ModelTable.same(e.pointee.original, t) { return (id, .original) }
            if e.pointee.options & ModelEntry.Options.translatedReply == 0,
               ModelTable.isInverse(e.pointee.original, t) { return (id, .reply) }
        } else if ModelTable.same(reply(id), t) {
            return (id, .reply)
        }
        return nil
    }

    /// The live entry a tuple belongs to, and which direction it matched. An expired entry
    /// met on the way is removed, as the kernel's lookup does.
    public mutating func lookup(_ tuple: Tuple, zone: UInt16, now: UInt64) -> (id: Int32, direction: Direction)? {
        guard let (id, dir) = find(tuple, zone: zone) else { return nil }
        if now >= pointer(id).pointee.expires { remove(id); return nil }
        return (id, dir)
    }

    /// Confirms a new entry (both tuples become visible). Returns its number, or nil when
    /// either tuple is already taken by a live entry (a clash, semantics 7.5).
    public mutating func insert(_ entry: ModelEntry, reply: Tuple? = nil, now: UInt64) -> Int32? {
        let replyTuple = reply ?? entry.original.inverted()
        if lookup(entry.original, zone: entry.zone, now: now) != nil || lookup(replyTuple, zone: entry.zone, now: now) != nil { return nil }
        let id: Int32
        if let f = freeSlots.popLast() {
            id = f
            pointer(id).pointee = entry
        } else {
            if slotCount == chunks.count << ModelTable.chunkShift {
                // ModelEntry holds no references, so slots need no initialisation before use.
                let c = UnsafeMutableRawPointer.allocate(byteCount: ModelTable.chunkSize * ModelTable.slotBytes, alignment: 64)
                chunks.append(c)
                live.append(contentsOf: [UInt64](repeating: 0, count: ModelTable.chunkSize / 64))
            }
            id = Int32(slotCount)
            slotCount += 1
            (chunks[Int(id) >> ModelTable.chunkShift] + (Int(id) & (ModelTable.chunkSize - 1)) * ModelTable.slotBytes)
                .initializeMemory(as: ModelEntry.self, repeating: entry, count: 1)
        }
        live[Int(id) >> 6] |= 1 << UInt64(id & 63)
        var t = replyTuple
        t.zone = nil
        if reply != nil, !ModelTable.same(t, entry.original.inverted()) {
            pointer(id).pointee.options |= ModelEntry.Options.translatedReply
            extras[id, default: EntryExtra()].reply = t
        }
        count += 1
        if (used + 2) * 2 > index.count { grow() }
        place(UInt32(id) << 1 | 0)
        if pointer(id).pointee.options & ModelEntry.Options.translatedReply != 0 { place(UInt32(id) << 1 | 1) }
        return id
    }

    private mutating func place(_ ref: UInt32) {
        let h = hash(tupleOf(ref), zone: pointer(Int32(ref >> 1)).pointee.zone)
        put(UInt64(h) << 32 | UInt64(ref + 1))
    }

    @inline(__always) private mutating func put(_ v: UInt64) {
        var i = Int(truncatingIfNeeded: v >> 32) & mask
        while index[i] != 0 { i = (i + 1) & mask }
        index[i] = v
        used += 1
    }

    private mutating func grow() {
        let old = index
        index = [UInt64](repeating: 0, count: old.count * 2)
        mask = index.count - 1
        used = 0
        for v in old where v != 0 { put(v) }
    }

    private mutating func unplace(_ ref: UInt32) {
        let h = hash(tupleOf(ref), zone: pointer(Int32(ref >> 1)).pointee.zone)
        let want = UInt64(h) << 32 | UInt64(ref + 1)
        let r = recent + (Int(h) & (ModelTable.recentCount - 1))
        if r.pointee == want { r.pointee = 0 }
        var i = Int(h) & mask
        while index[i] != want {
            if index[i] == 0 { return }
            i = (i + 1) & mask
        }
        // Backward-shift deletion keeps every probe chain unbroken without tombstones.
        var hole = i
        var j = i
        while true {
            j = (j + 1) & mask
            let v = index[j]
            if v == 0 { break }
            let home = Int(truncatingIfNeeded: v >> 32) & mask
            // Move v into the hole when its home is not in (hole, j] cyclically.
            let inRange = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j)
            if !inRange {
                index[hole] = v
                hole = j
            }
        }
        index[hole] = 0
        used -= 1
    }

    public mutating func remove(_ id: Int32) {
        guard isLive(id) else { return }
        unplace(UInt32(id) << 1 | 0)
        if pointer(id).pointee.options & ModelEntry.Options.translatedReply != 0 { unplace(UInt32(id) << 1 | 1) }
        live[Int(id) >> 6] &= ~(1 << UInt64(id & 63))
        extras[id] = nil
        freeSlots.append(id)
        count -= 1
    }

    /// Changes an entry's reply tuple (NAT learnt from the outgoing copy of its first packet).
    public mutating func setReply(_ id: Int32, _ tuple: Tuple) {
        var t = tuple
        t.zone = nil
        if pointer(id).pointee.options & ModelEntry.Options.translatedReply != 0 { unplace(UInt32(id) << 1 | 1) }
        if ModelTable.same(t, pointer(id).pointee.original.inverted()) {
            pointer(id).pointee.options &= ~ModelEntry.Options.translatedReply
            extras[id]?.reply = nil
        } else {
            pointer(id).pointee.options |= ModelEntry.Options.translatedReply
            extras[id, default: EntryExtra()].reply = t
            if (used + 1) * 2 > index.count { grow() }
            place(UInt32(id) << 1 | 1)
        }
    }

    /// Every live entry's number, in slot order.
    public var ids: [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(count)
        for (w, bits) in live.enumerated() where bits != 0 {
            var b = bits
            while b != 0 {
                let t = b.trailingZeroBitCount
                out.append(Int32(w * 64 + t))
                b &= b - 1
            }
        }
        return out
    }

    /// Examines `budget` slots from `cursor` on and removes the expired ones, like the
    /// kernel's garbage collector: bounded work, so memory follows the live table.
    public mutating func collect(now: UInt64, cursor: inout Int, budget: Int) -> [Int32] {
        guard slotCount > 0 else { return [] }
        var gone: [Int32] = []
        for _ in 0..<min(budget, slotCount) {
            if cursor >= slotCount { cursor = 0 }
            let id = Int32(cursor)
            if isLive(id), now >= pointer(id).pointee.expires { remove(id); gone.append(id) }
            cursor += 1
        }
        return gone
    }

    /// Bytes held by the table's storage (entries, index, live bits).
    public var storageBytes: Int {
        chunks.count * ModelTable.chunkSize * ModelTable.slotBytes + index.count * 8 + live.count * 8
    }
}
