import ConntrackCore
import Foundation
import KernelConntrack
import ReplicationProtocol

/// The standby's copy of the active node's table (conntrackd's "external cache"): entries
/// and expectations as last received, each with the time it arrived, so a commit can
/// shorten timeouts by the time since. Thread-safe.
public final class ExternalCache: @unchecked Sendable {
    /// A reference: when the dictionary grows, it moves 8 bytes per entry, not 270 (a
    /// growth at 50k entries had stalled frame handling for 20–40 ms). Updated in place, so
    /// that a re-sent table allocates nothing for the entries it already had.
    final class Stored: @unchecked Sendable {
        var entry: ConntrackEntry
        var received: UInt64
        /// The bulk transfer that last delivered it (entries a newer one did not are swept).
        var generation: UInt32
        /// `EntryPayload.recordHash` of the record it came in (0: it did not come as one).
        var recordHash: UInt64
        /// Taken out of the cache (a reference held elsewhere must not revive it).
        var removed = false
        init(entry: ConntrackEntry, received: UInt64, generation: UInt32, recordHash: UInt64 = 0) {
            self.entry = entry; self.received = received; self.generation = generation; self.recordHash = recordHash
        }
    }
    struct StoredExpectation { var expectation: Expectation; var received: UInt64 }

    private let lock = NSLock()
    private var entries = ShardedTable<Stored>()
    private var expectations: [EntryKey: StoredExpectation] = [:]
    /// The bulk transfer in progress: its generation and the anti-entropy bucket it replaces
    /// (nil: the whole table). Its entries update the cache as they arrive; at its end the
    /// entries it did not deliver are removed (mark and sweep, rather than a second table:
    /// half the memory, and nothing to allocate for entries that did not change).
    private var bulk: (generation: UInt32, bucket: Int?)?
    private var generation: UInt32 = 0
    public private(set) var bucketsRepaired = 0
    private var stagingExpectations: [EntryKey: StoredExpectation] = [:]
    public private(set) var bulksCompleted = 0
    public private(set) var eventsApplied = 0

    public init() {}

    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public var count: Int { lock.withLock { entries.count } }
    public var expectationCount: Int { lock.withLock { expectations.count } }
    public var inBulk: Bool { lock.withLock { bulk != nil } }

    /// Under the lock: one entry in or out.
    private func store(_ event: EventKind, _ key: EntryKey, _ e: ConntrackEntry, _ now: UInt64, recordHash: UInt64 = 0) {
        if event == .destroy { entries[key]?.removed = true; entries[key] = nil; return }
        if let s = entries[key] {
            s.entry = e; s.received = now; s.generation = generation; s.recordHash = recordHash
        } else {
            entries[key] = Stored(entry: e, received: now, generation: generation, recordHash: recordHash)
        }
    }

    /// An entry of a batch, identified without decoding it: key, record hash, timeout.
    struct RecordSummary {
        var key: EntryKey
        var hash: UInt64
        var timeout: UInt32?
    }

    /// The entries the cache holds unchanged for these records (the same record but for its
    /// timeout), nil for the others: those that need decoding.
    func heldUnchanged(_ records: [RecordSummary]) -> [Stored?] {
        lock.withLock { records.map { r in entries[r.key].flatMap { $0.recordHash == r.hash ? $0 : nil } } }
    }

    /// A batch of new or updated entries: those the cache holds unchanged (`held[i]`) only
    /// take their new timeout, arrival time and transfer; the others are stored as decoded
    /// (`decoded[i]`; `decoded` is empty when none is). Returns the indices of unchanged ones that were changed or removed
    /// meanwhile (to be decoded and applied by the caller).
    func applyBatch(_ records: [RecordSummary], held: [Stored?], decoded: [ConntrackEntry?], at now: UInt64) -> [Int] {
        lock.withLock {
            eventsApplied += records.count
            var missed: [Int] = []
            for (i, r) in records.enumerated() {
                if !decoded.isEmpty, let e = decoded[i] {
                    store(.new, r.key, e, now, recordHash: r.hash)
                } else if let s = held[i], s.recordHash == r.hash, !s.removed {
                    s.entry.timeout = r.timeout
                    s.received = now
                    s.generation = generation
                } else {
                    missed.append(i)
                }
            }
            return missed
        }
    }

    /// An event from the active node (inside a bulk transfer: part of the new copy).
    public func apply(_ event: EventKind, _ e: ConntrackEntry, at now: UInt64 = ExternalCache.now()) {
        let key = EntryKey(e)
        lock.withLock {
            eventsApplied += 1
            store(event, key, e, now)
        }
    }

    /// Entries that arrived together (an ENTRY_BATCH frame): one lock for all of them.
    public func apply(_ event: EventKind, _ es: [ConntrackEntry], at now: UInt64 = ExternalCache.now()) {
        let keys = es.map { EntryKey($0) }
        lock.withLock {
            eventsApplied += es.count
            for (i, e) in es.enumerated() { store(event, keys[i], e, now) }
        }
    }

    public func apply(_ event: EventKind, _ x: Expectation, at now: UInt64 = ExternalCache.now()) {
        let key = EntryKey(zone: x.zone, tuple: x.tuple)
        lock.withLock {
            if bulk?.bucket == nil && bulk != nil {
                if event == .destroy { stagingExpectations[key] = nil } else { stagingExpectations[key] = StoredExpectation(expectation: x, received: now) }
                return
            }
            if event == .destroy { expectations[key] = nil } else { expectations[key] = StoredExpectation(expectation: x, received: now) }
        }
    }

    /// Room reserved ahead for a bulk transfer at most (a hint from the peer, not a limit).
    static let reserveLimit = 4 << 20

    /// A bulk transfer begins: what follows until `endBulk` replaces the copy (or, with a
    /// bucket, the entries of that anti-entropy bucket only). `expected`: how many entries
    /// the sender announced (room is reserved for them, up to `reserveLimit`).
    public func beginBulk(bucket: Int? = nil, expected: Int = 0) {
        lock.withLock {
            generation &+= 1
            bulk = (generation, bucket)
            if bucket == nil && expected > entries.count { entries.reserveCapacity(min(expected, Self.reserveLimit)) }
            stagingExpectations = [:]
        }
    }

    public func endBulk() {
        lock.withLock {
            guard let b = bulk else { return }
            // Sweep what the transfer did not deliver (in its bucket, for a bucket repair).
            entries.removeAll { k, s in
                let gone = s.generation != b.generation && (b.bucket.map { TableDigest.bucket(zone: k.zone, tuple: k.tuple) == $0 } ?? true)
                if gone { s.removed = true }
                return gone
            }
            if b.bucket != nil {
                bucketsRepaired += 1
            } else {
                expectations = stagingExpectations
                bulksCompleted += 1
            }
            bulk = nil
            stagingExpectations = [:]
        }
    }

    /// The anti-entropy digests of the cache (TableDigest).
    public func digests() -> [UInt64] {
        lock.withLock {
            TableDigest.digests(entries.map { (TableDigest.bucket(zone: $0.key.zone, tuple: $0.key.tuple), TableDigest.entryDigest($0.value.entry)) })
        }
    }

    /// A bulk cut off by a lost connection: nothing is swept; what it delivered stays (newer
    /// than what it replaced), and so does the rest of the previous copy.
    public func abandonBulk() { lock.withLock { bulk = nil; stagingExpectations = [:] } }

    public func flush() {
        lock.withLock {
            for (_, s) in entries { s.removed = true }
            entries.removeAll()
            expectations = [:]
        }
    }

    /// Entries with the timeout they have left at `now` (those that would have expired are
    /// left out), and the expectations likewise.
    public func contents(at now: UInt64 = ExternalCache.now()) -> (entries: [ConntrackEntry], expectations: [Expectation]) {
        lock.withLock {
            func left(_ t: UInt32?, _ received: UInt64) -> UInt32?? {
                guard let t else { return .some(nil) }
                let elapsed = UInt32(clamping: now > received ? (now - received) / 1_000_000_000 : 0)
                return t > elapsed ? .some(t - elapsed) : .none
            }
            var es: [ConntrackEntry] = []
            es.reserveCapacity(entries.count)
            for (_, s) in entries {
                guard let t = left(s.entry.timeout, s.received) else { continue }
                var e = s.entry
                e.timeout = t
                es.append(e)
            }
            var xs: [Expectation] = []
            for s in expectations.values {
                guard let t = left(s.expectation.timeout, s.received) else { continue }
                var x = s.expectation
                x.timeout = t
                xs.append(x)
            }
            return (es, xs)
        }
    }
}

/// Writing the external cache into this node's kernel (`ctsync replicate commit`).
public enum Commit {
    public struct Outcome: Sendable {
        public var written = 0
        public var failed = 0
        public var expectationsWritten = 0
        public var seconds = 0.0
        public var firstError: String?
    }

    /// TCP entries get IP_CT_TCP_FLAG_BE_LIBERAL in both directions, as conntrackd does:
    /// the window data of the active node is not carried, so the first packets after the
    /// takeover must not be judged out of window.
    static let beLiberal: UInt8 = 0x08

    /// The create request for one cached entry. NAT is requested from the reply tuple.
    public static func write(for entry: ConntrackEntry) -> TableWrite {
        var e = entry
        if case .tcp(var t) = e.protoInfo {
            t.flagsOriginal = TCPFlagsMask(flags: (t.flagsOriginal?.flags ?? 0) | beLiberal, mask: beLiberal)
            t.flagsReply = TCPFlagsMask(flags: (t.flagsReply?.flags ?? 0) | beLiberal, mask: beLiberal)
            e.protoInfo = .tcp(t)
        }
        // Counters, ids and use counts are the kernel's own; the master link cannot be made.
        e.countersOriginal = nil; e.countersReply = nil; e.id = nil; e.use = nil
        e.timestampStart = nil; e.timestampStop = nil
        var snat: NATRequest?, dnat: NATRequest?
        if e.isSourceNAT { snat = NATRequest(address: e.reply.destination, port: e.original.l4.hasPorts ? e.reply.destinationPort : nil) }
        if e.isDestinationNAT { dnat = NATRequest(address: e.reply.source, port: e.original.l4.hasPorts ? e.reply.sourcePort : nil) }
        return .create(e, sourceNAT: snat, destinationNAT: dnat, ignoreExisting: true)
    }

    /// Creates (or replaces) every cached entry in netlink batches, then the expectations.
    public static func run(_ cache: ExternalCache, allowHostTable: Bool) throws -> Outcome {
        let start = ExternalCache.now()
        let (entries, expectations) = cache.contents(at: start)
        var out = Outcome()
        let table = try ConntrackTable(allowHostTableWrites: allowHostTable)
        let writer = try BatchWriter(table: table)
        for e in entries { try writer.add(write(for: e)) }
        let failures = try writer.finish()
        out.failed = failures.count
        out.written = entries.count - failures.count
        out.firstError = failures.first.map { "\($0.error)" }
        for x in expectations {
            do { try table.createExpectation(x); out.expectationsWritten += 1 } catch { out.failed += 1 }
        }
        out.seconds = Double(ExternalCache.now() - start) / 1e9
        return out
    }
}
