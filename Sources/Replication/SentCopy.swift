import ConntrackCore
import KernelConntrack
import ReplicationProtocol

/// The records an active node sent, kept in large chunks in the order they were recorded.
///
/// A re-send reads the chunks front to back, memory the processor streams, instead of
/// chasing one allocation per entry (with 100000 entries the cache misses of that had cost
/// more than the rest of the re-send); nothing in it is reference-counted. Copies share the
/// chunks until one of them writes (copy-on-write, chunk by chunk), so a re-send walks a
/// snapshot that later events do not change.
///
/// A slot: u32 record length, u16 where the timeout value is in the record (0xffff: none),
/// u8 live, u8 0, u64 when the record was read from the kernel (CLOCK_MONOTONIC ns), then
/// the record (address family byte and CTA_* attributes), padded to 8 bytes.
struct RecordArena {
    static let chunkSize = 1 << 20
    static let headerSize = 16

    struct Location: Equatable {
        var chunk: Int32
        var offset: Int32
    }

    private(set) var chunks: [[UInt8]] = []
    /// The key of each slot of each chunk, in order (for moving slots when compacting).
    private(set) var keys: [[EntryKey]] = []
    /// Bytes of live slots per chunk.
    private(set) var live: [Int] = []
    private(set) var liveBytes = 0
    private(set) var usedBytes = 0

    var deadBytes: Int { usedBytes - liveBytes }

    static func slotSize(_ recordLength: Int) -> Int { (headerSize + recordLength + 7) & ~7 }

    /// Appends a record: `family`, then `attributes`; `timeoutOffset` is where the timeout
    /// value is in `attributes`.
    mutating func append(key: EntryKey, family: UInt8, attributes: UnsafeRawBufferPointer, timeoutOffset: Int?, recorded: UInt64) -> Location {
        let length = 1 + attributes.count
        let size = Self.slotSize(length)
        if chunks.isEmpty || chunks[chunks.count - 1].count + size > Self.chunkSize {
            var c: [UInt8] = []
            c.reserveCapacity(max(Self.chunkSize, size))
            chunks.append(c)
            keys.append([])
            live.append(0)
        }
        let c = chunks.count - 1
        let offset = chunks[c].count
        let t = UInt16(timeoutOffset.map { $0 + 1 } ?? 0xffff)
        withUnsafeBytes(of: UInt32(length).littleEndian) { chunks[c].append(contentsOf: $0) }
        withUnsafeBytes(of: t.littleEndian) { chunks[c].append(contentsOf: $0) }
        chunks[c].append(1)
        chunks[c].append(0)
        withUnsafeBytes(of: recorded.littleEndian) { chunks[c].append(contentsOf: $0) }
        chunks[c].append(family)
        chunks[c].append(contentsOf: attributes)
        chunks[c].append(contentsOf: repeatElement(0, count: size - Self.headerSize - length))
        keys[c].append(key)
        live[c] += size
        liveBytes += size
        usedBytes += size
        return Location(chunk: Int32(c), offset: Int32(offset))
    }

    /// Appends a record given as one array (family byte, then attributes).
    mutating func append(key: EntryKey, record: [UInt8], timeoutOffset: Int?, recorded: UInt64) -> Location {
        record.withUnsafeBytes { r in
            append(key: key, family: r[0], attributes: UnsafeRawBufferPointer(rebasing: r[1...]), timeoutOffset: timeoutOffset, recorded: recorded)
        }
    }

    private func length(at l: Location) -> Int {
        chunks[Int(l.chunk)].withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: Int(l.offset), as: UInt32.self))) }
    }

    /// The slot is no longer part of the copy.
    mutating func kill(_ l: Location) {
        let c = Int(l.chunk), at = Int(l.offset)
        guard chunks[c][at + 6] == 1 else { return }
        chunks[c][at + 6] = 0
        let size = Self.slotSize(length(at: l))
        live[c] -= size
        liveBytes -= size
    }

    /// Puts a newer timeout and read time into a slot (the rest of the record unchanged).
    mutating func renew(_ l: Location, timeout: UInt32, recorded: UInt64) {
        let c = Int(l.chunk), at = Int(l.offset)
        chunks[c].withUnsafeMutableBytes { b in
            let t = Int(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: at + 4, as: UInt16.self)))
            guard t != 0xffff else { return }
            b.storeBytes(of: timeout.bigEndian, toByteOffset: at + Self.headerSize + t, as: UInt32.self)
            b.storeBytes(of: recorded.littleEndian, toByteOffset: at + 8, as: UInt64.self)
        }
    }

    /// One slot: its record, where the timeout value is in it, and when it was read.
    struct Slot {
        var record: UnsafeRawBufferPointer
        var timeoutOffset: Int?
        var recorded: UInt64
        var isLive: Bool
        var size: Int
    }

    static func slot(in b: UnsafeRawBufferPointer, at at: Int) -> Slot {
        let length = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
        let t = Int(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: at + 4, as: UInt16.self)))
        return Slot(record: UnsafeRawBufferPointer(rebasing: b[(at + headerSize)..<(at + headerSize + length)]),
                    timeoutOffset: t == 0xffff ? nil : t, recorded: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self)),
                    isLive: b[at + 6] == 1, size: slotSize(length))
    }

    /// A place in the arena, for walking it in steps.
    struct Cursor {
        var chunk = 0
        var offset = 0
    }

    /// Calls `body` with up to `limit` live slots from `cursor` on, in order; false once the
    /// end is reached.
    func forEachLive(from cursor: inout Cursor, limit: Int, _ body: (Slot) -> Void) -> Bool {
        var n = 0
        while cursor.chunk < chunks.count {
            let more: Bool = chunks[cursor.chunk].withUnsafeBytes { b in
                while cursor.offset < b.count {
                    if n == limit { return true }
                    let s = Self.slot(in: b, at: cursor.offset)
                    cursor.offset += s.size
                    if s.isLive { body(s); n += 1 }
                }
                return false
            }
            if more { return true }
            cursor.chunk += 1
            cursor.offset = 0
        }
        return false
    }

    /// The chunk with the most dead bytes, not the one being filled; nil when none has any.
    var mostWasteful: Int? {
        guard chunks.count > 1 else { return nil }
        var best: Int?, waste = 0
        for c in 0..<(chunks.count - 1) where chunks[c].count - live[c] > waste {
            best = c
            waste = chunks[c].count - live[c]
        }
        return best
    }

    /// Moves the live slots of chunk `c` to the end and empties it; `moved` learns each
    /// key's new location.
    mutating func compact(_ c: Int, moved: (EntryKey, Location) -> Void) {
        let chunk = chunks[c], chunkKeys = keys[c]
        usedBytes -= chunk.count
        liveBytes -= live[c]
        chunks[c] = []
        keys[c] = []
        live[c] = 0
        chunk.withUnsafeBytes { b in
            var at = 0, i = 0
            while at < b.count {
                let s = Self.slot(in: b, at: at)
                if s.isLive {
                    let r = s.record
                    let l = append(key: chunkKeys[i], family: r[0], attributes: UnsafeRawBufferPointer(rebasing: r[1...]),
                                   timeoutOffset: s.timeoutOffset.map { $0 - 1 }, recorded: s.recorded)
                    moved(chunkKeys[i], l)
                }
                at += s.size
                i += 1
            }
        }
    }
}

/// A change the standbys are sent: the entry's record as an array, before it goes into the
/// copy (events, refresh comparisons, anti-entropy repairs).
struct Change {
    var digest: UInt64
    /// Address family byte, then the entry's CTA_* attributes as the kernel gave them.
    var record: [UInt8]
    var recorded: UInt64
    var deadline: UInt64

    init(_ e: ConntrackEntry, record: [UInt8], recorded: UInt64) {
        digest = TableDigest.entryDigest(e)
        self.record = record
        self.recorded = recorded
        deadline = SentCopy.deadline(e.timeout, recorded)
    }

    /// Where the timeout value is in the attributes (after the family byte).
    var timeoutOffset: Int? {
        record.withUnsafeBytes { CtNetlinkCodec.timeoutOffset(in: UnsafeRawBufferPointer(rebasing: $0[1...])) }
    }

    var timeout: UInt32? {
        timeoutOffset.map { at in (1...4).reduce(UInt32(0)) { $0 << 8 | UInt32(record[at + $1]) } }
    }
}

/// What the standbys hold when in step: per entry its digest, when their copy runs out,
/// and where its record is in the arena.
struct SentCopy {
    struct Entry {
        /// `TableDigest.entryDigest` (anti-entropy, refresh comparisons).
        var digest: UInt64
        /// When the standbys' copy runs out: sent plus the timeout it carried
        /// (CLOCK_MONOTONIC ns; .max without a timeout).
        var deadline: UInt64
        var location: RecordArena.Location
    }

    /// Every key with its entry.
    private(set) var table = ShardedTable<Entry>()
    private(set) var arena = RecordArena()

    var count: Int { table.count }

    static func deadline(_ timeout: UInt32?, _ recorded: UInt64) -> UInt64 {
        timeout.map { recorded &+ UInt64($0) * 1_000_000_000 } ?? .max
    }

    subscript(key: EntryKey) -> Entry? { table[key] }

    mutating func reserveCapacity(_ n: Int) { table.reserveCapacity(n) }

    /// A dumped entry, straight from the receive buffer.
    mutating func add(_ e: ConntrackEntry, family: UInt8, attributes: UnsafeRawBufferPointer, recorded: UInt64) {
        let key = EntryKey(e)
        if let old = table[key] { arena.kill(old.location) }
        let l = arena.append(key: key, family: family, attributes: attributes,
                             timeoutOffset: CtNetlinkCodec.timeoutOffset(in: attributes), recorded: recorded)
        table[key] = Entry(digest: TableDigest.entryDigest(e), deadline: Self.deadline(e.timeout, recorded), location: l)
    }

    /// A change (nil: the entry is gone).
    mutating func put(_ key: EntryKey, _ change: Change?) {
        if let old = table[key] { arena.kill(old.location) }
        guard let change else { table[key] = nil; compactIfWasteful(); return }
        let l = arena.append(key: key, record: change.record, timeoutOffset: change.timeoutOffset, recorded: change.recorded)
        table[key] = Entry(digest: change.digest, deadline: change.deadline, location: l)
        compactIfWasteful()
    }

    /// The kernel's newer timeout for an entry otherwise unchanged (what a re-send starts
    /// from); the standbys' copy still runs out when it did.
    mutating func renew(_ key: EntryKey, timeout: UInt32, recorded: UInt64) {
        guard let e = table[key] else { return }
        arena.renew(e.location, timeout: timeout, recorded: recorded)
    }

    /// Compacts one chunk at a time once dead slots are over 4 MiB and over half the live
    /// ones: each step moves at most a chunk (1 MiB), so the event loop never stalls long.
    mutating func compactIfWasteful() {
        guard arena.deadBytes > 4 << 20, arena.deadBytes > arena.liveBytes / 2, let c = arena.mostWasteful else { return }
        var moves: [(EntryKey, RecordArena.Location)] = []
        arena.compact(c) { moves.append(($0, $1)) }
        for (k, l) in moves { table[k]?.location = l }
    }
}
