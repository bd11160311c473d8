import ConntrackCore
import Foundation
import KernelConntrack
import Logging
import NIOCore
import NIOPosix
import ReplicationProtocol

/// The active node: follows its kernel's table (a bulk dump, then ctnetlink events) and
/// streams it to every standby, reconnecting and re-sending everything after a break or
/// when its event socket overflowed.
///
/// It keeps what it sent (`copy`, `SentCopy`): each entry's netlink record as last sent. A standby that
/// reconnects or asks for everything again gets that copy, timeouts shortened by the time
/// since (as conntrackd re-sends its internal cache), without dumping the kernel; a lost
/// event (socket overflow) or `resync` on this node dumps the kernel instead, and every
/// `refresh` seconds a dump is compared with the copy.
public final class ActiveNode: @unchecked Sendable {
    final class Peer: @unchecked Sendable {
        let host: String
        let port: Int
        var session: Session?
        var acked: UInt64 = 0
        var bulks = 0
        var resends = 0
        var reconnects = 0
        var bulkInProgress = false
        var pending: [[UInt8]] = []      // events queued during a bulk transfer (frame payloads with type)
        var pendingTypes: [FrameType] = []
        init(host: String, port: Int) { self.host = host; self.port = port }
    }

    /// Whether an entry the kernel still holds, unchanged but for its timeout, should be
    /// sent again: the standbys' copy would run out within `horizon` ns (their commit would
    /// leave it out) while the kernel's timeout, renewed by traffic that sends no events,
    /// goes further (by more than the 2 s that rounding timeouts to seconds can make up, so
    /// that an entry merely counting down is not sent again).
    static func needsRenewal(_ oldDeadline: UInt64, _ freshDeadline: UInt64, now: UInt64, horizon: UInt64) -> Bool {
        oldDeadline < now &+ horizon && freshDeadline > oldDeadline &+ 2_000_000_000
    }

    let psk: HMACKey
    let name: String
    let filter: (ConntrackEntry) -> Bool
    /// Seconds between comparisons of the kernel's table with what the standbys were sent.
    let refresh: Int64
    /// What the standbys hold when in step. Event-loop only, like everything below it.
    var copy = SentCopy()
    /// `copy` is the whole table: a full dump went into it and no event was lost since.
    var sentComplete = false
    /// Changes made to `sent` while full dumps are under way, replayed onto each dump's
    /// result in the order the standbys get them (the dump first, then the events queued
    /// behind it); `dumpLogStart` holds each running dump's starting index.
    var dumpLog: [(EntryKey, Change?)] = []
    var dumpLogStart: [ObjectIdentifier: Int] = [:]
    /// Event socket overflows so far, as the event loop learnt of them.
    var gapsSeen = 0
    private var refreshes = 0
    private var repaired = 0
    private var timeoutsRenewed = 0
    let logger = Logger(label: "ctsync.replicate.active")
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let peers: [Peer]
    private let lock = NSLock()
    private var events = 0
    private var overflows = 0
    private var stopped = false

    /// The event socket's receive buffer in bytes.
    let eventBuffer: Int

    /// `udpLinks`: conntrackd sync peers (address, port), left out like the TCP links.
    public init(psk: [UInt8], name: String, peers: [(String, Int)], udpLinks: [(String, Int)] = [], refresh: Int64 = 10,
                eventBuffer: Int = 8 << 20, filter: @escaping (ConntrackEntry) -> Bool = { _ in true }) {
        FastHMAC.install()
        self.psk = HMACKey(psk)
        self.name = name
        self.refresh = refresh
        self.eventBuffer = eventBuffer
        self.peers = peers.map { Peer(host: $0.0, port: $0.1) }
        // The replication connections themselves are left out (conntrackd needs them listed
        // by hand in IgnoreTrafficFor): a standby has no use for them.
        let links = peers.compactMap { p in IPAddress(p.0).map { ($0, UInt16(p.1), UInt8(6)) } }
            + udpLinks.compactMap { p in IPAddress(p.0).map { ($0, UInt16(p.1), UInt8(17)) } }
        self.filter = { e in
            let o = e.original
            // The peer at either end, its port at either end (conntrackd sends from an
            // ephemeral port to the sync port).
            if links.contains(where: { $0.2 == o.l4proto && ($0.0 == o.destination || $0.0 == o.source)
                                        && ($0.1 == o.destinationPort || $0.1 == o.sourcePort) }) {
                return false
            }
            return filter(e)
        }
    }

    public func start() throws {
        let stream = try EventStream(mask: [.new, .update, .destroy, .expectNew, .expectDestroy], bufferSize: eventBuffer)
        stream.keepsRecords = true
        for p in peers { connect(p) }
        let t = Thread { [self] in follow(stream) }
        t.start()
        // ALIVE every second with the number of frames sent, so a standby can tell its lag.
        group.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in
            for p in peers { if let s = p.session, s.isReady { s.send(.alive, s.sent.bigEndianBytes) } }
        }
        // Events are not the whole truth: with nf_conntrack_events=2 (the default) entries
        // older than the event socket never report changes, and an overflow loses some.
        // Every `refresh` seconds the table is compared with what was sent and the
        // difference is sent.
        group.next().scheduleRepeatedTask(initialDelay: .seconds(refresh), delay: .seconds(refresh)) { [self] _ in compareWithKernel() }
    }

    static func monotonic() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// An entry's record (family byte, then attributes) in one allocation of the exact size.
    static func record(family: UInt8, _ attributes: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: attributes.count + 1) { b, n in
            b[0] = family
            if let src = attributes.baseAddress { (b.baseAddress! + 1).update(from: src.assumingMemoryBound(to: UInt8.self), count: attributes.count) }
            n = attributes.count + 1
        }
    }

    /// A dumped entry as a change.
    static func change(_ e: ConntrackEntry, family: UInt8, attributes: UnsafeRawBufferPointer, at now: UInt64) -> Change {
        Change(e, record: record(family: family, attributes), recorded: now)
    }

    /// Records a change the standbys are sent (nil: the entry is gone). Event loop.
    func note(_ change: Change?, for key: EntryKey) {
        copy.put(key, change)
        if !dumpLogStart.isEmpty { dumpLog.append((key, change)) }
    }

    /// A dump for a full transfer begins (event loop): changes from now on are logged.
    func dumpBegins(_ id: ObjectIdentifier) -> Int {
        dumpLogStart[id] = dumpLog.count
        return gapsSeen
    }

    /// A full dump's entries become the copy, with the changes since it began replayed on top.
    func dumpEnds(_ id: ObjectIdentifier, entries: SentCopy, gapsAtStart: Int) {
        var fresh = entries
        for (k, v) in dumpLog[(dumpLogStart[id] ?? dumpLog.count)...] { fresh.put(k, v) }
        copy = fresh
        dumpLogStart[id] = nil
        if let first = dumpLogStart.values.min() {
            dumpLog.removeFirst(first)
            for (k, v) in dumpLogStart { dumpLogStart[k] = v - first }
        } else {
            dumpLog = []
        }
        // Complete unless an event was lost while the dump ran (another dump follows then).
        sentComplete = gapsSeen == gapsAtStart
    }

    /// Dumps the kernel's table and hands `body` each entry the filter keeps: decoded, and
    /// as the family and attributes it came in.
    func dumpKept(_ table: ConntrackTable, _ body: (ConntrackEntry, UInt8, UnsafeRawBufferPointer) throws -> Void) throws {
        _ = try table.dumpRaw { family, attributes in
            let e = try CtNetlinkCodec.decodeEntry(family: family, attributes: attributes)
            if filter(e) { try body(e, family, attributes) }
        }
    }

    func compareWithKernel() {
        let links = lock.withLock { conntrackd }
        guard !isStopped, !links.isEmpty || peers.contains(where: { $0.session?.isReady == true && !$0.bulkInProgress }) else { return }
        let loop = group.next()
        Thread { [self] in
            var current: [EntryKey: (ConntrackEntry, Change)] = [:]
            do {
                let now = Self.monotonic()
                try dumpKept(ConntrackTable()) { e, family, attributes in
                    current[EntryKey(e)] = (e, Self.change(e, family: family, attributes: attributes, at: now))
                }
            } catch {
                logger.error("refresh dump failed: \(error)")
                return
            }
            loop.execute { [self] in
                guard !peers.contains(where: { $0.bulkInProgress }), dumpLogStart.isEmpty else { return }
                var sends: [[UInt8]] = []
                var changes: [(EventKind, ConntrackEntry)] = []
                var renewals = 0
                let now = Self.monotonic(), horizon = UInt64(max(refresh, 1)) * 3 * 1_000_000_000
                for (k, (e, fresh)) in current {
                    guard let old = copy[k], old.digest == fresh.digest else {
                        let kind: EventKind = copy[k] == nil ? .new : .update
                        sends.append(FramePayload.entryRecord(fresh.record, kind))
                        changes.append((kind, e))
                        note(fresh, for: k)
                        continue
                    }
                    if Self.needsRenewal(old.deadline, fresh.deadline, now: now, horizon: horizon) {
                        sends.append(FramePayload.entryRecord(fresh.record, .update))
                        renewals += 1
                        note(fresh, for: k)
                        continue
                    }
                    // Unchanged: the copy takes the kernel's timeout (a re-send starts from
                    // it); the standbys' copy still runs out when it did.
                    if let t = fresh.timeout { copy.renew(k, timeout: t, recorded: fresh.recorded) }
                }
                for (k, _) in copy.table where current[k] == nil {
                    // Gone from the kernel without a destroy event: rebuild a minimal entry.
                    var e = ConntrackEntry(original: k.tuple, reply: k.tuple.inverted())
                    e.zone = k.zone == 0 ? nil : k.zone
                    sends.append(FramePayload.entry(e, .destroy))
                    changes.append((.destroy, e))
                    note(nil, for: k)
                }
                lock.withLock { refreshes += 1; repaired += sends.count - renewals; timeoutsRenewed += renewals }
                if sends.count > renewals { logger.info("refresh: \(sends.count - renewals) changes the events did not carry") }
                for p in peers { for f in sends { deliver(p, .entry, f) } }
                for l in links {
                    for (kind, e) in changes { l.send(kind, e) }
                    l.flush()
                }
            }
        }.start()
    }

    public func stop() {
        lock.withLock { stopped = true }
        for p in peers { p.session?.close() }
        try? group.syncShutdownGracefully()
    }

    var isStopped: Bool { lock.withLock { stopped } }

    func connect(_ p: Peer) {
        let session = Session(role: .initiator, psk: psk, node: name, logger: logger)
        session.onReady = { [self] s in
            p.session = s
            sendAll(to: p)
        }
        session.onFrame = { [self] _, f in
            switch f.type {
            case .ack: if let n = UInt64(bigEndianBytes: f.payload) { p.acked = n }
            case .digest:
                guard let theirs = try? TableDigest.decode(f.payload), !p.bulkInProgress else { break }
                let ours = TableDigest.digests(copy.table.map { (TableDigest.bucket(zone: $0.key.zone, tuple: $0.key.tuple), $0.value.digest) })
                let differ = (0..<TableDigest.buckets).filter { theirs[$0] != ours[$0] }
                if !differ.isEmpty { repair(buckets: differ, to: p) }
            case .resyncRequest: sendAll(to: p)
            case .error: logger.error("standby reports: \(String(decoding: f.payload, as: UTF8.self))")
            default: break
            }
        }
        session.onClose = { [self] _, failure in
            p.session = nil
            p.bulkInProgress = false
            p.pending = []; p.pendingTypes = []
            logger.notice("standby connection closed", metadata: ["peer": "\(p.host):\(p.port)", "reason": "\(failure ?? "closed")"])
            retry(p)
        }
        ClientBootstrap(group: group)
            .connectTimeout(.seconds(3))
            .channelInitializer { ch in ch.pipeline.addHandler(session) }
            .connect(host: p.host, port: p.port)
            .whenFailure { [self] _ in retry(p) }
    }

    func retry(_ p: Peer) {
        guard !isStopped else { return }
        p.reconnects += 1
        group.next().scheduleTask(in: .seconds(1)) { [self] in connect(p) }
    }

    /// Everything to a standby that connected or asked for it: the copy in memory when it
    /// is complete, otherwise a fresh dump.
    func sendAll(to p: Peer) {
        if sentComplete { resend(to: p) } else { bulk(to: p) }
    }

    /// Sends BULK_END and the events that queued behind the transfer. Event loop.
    func finishTransfer(_ p: Peer, _ s: Session, entries: Int, what: String) {
        s.send(.bulkEnd, flush: false)
        for (i, f) in p.pending.enumerated() { s.send(p.pendingTypes[i], f, flush: false) }
        s.flush()
        p.pending = []; p.pendingTypes = []
        p.bulkInProgress = false
        logger.info("\(what) sent", metadata: ["peer": "\(p.host):\(p.port)", "entries": "\(entries)"])
    }

    /// A full transfer from the copy in memory, no dump: timeouts shortened by the time
    /// since each entry was read, entries whose timeout ran out left out. Sent a few frames
    /// per turn of the event loop, so that events and acknowledgements go on.
    func resend(to p: Peer) {
        guard let s = p.session, !p.bulkInProgress else { return }
        p.bulkInProgress = true
        p.resends += 1
        let loop = s.context!.eventLoop
        // A copy that later events do not change (copy-on-write: a chunk is copied only if
        // an event changes it before the transfer ends).
        let snapshot = copy.arena
        var cursor = RecordArena.Cursor()
        let now = Self.monotonic()
        let batches = (s.peer?.features ?? 0) & Hello.entryBatches != 0
        s.send(.bulkBegin, UInt64(copy.count).bigEndianBytes, flush: false)
        var count = 0
        func step() {
            guard p.session === s else { return }
            var batch = EntryBatch(event: .new)
            let more = snapshot.forEachLive(from: &cursor, limit: 8192) { slot in
                let r = slot.record
                let timeout = slot.timeoutOffset.map { at in (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(r[at + $1]) } }
                guard let left = Self.timeoutLeft(timeout, recorded: slot.recorded, now: now) else { return }
                count += 1
                let attributes = UnsafeRawBufferPointer(rebasing: r[1...])
                if batches && EntryBatch.fits(attributes.count) {
                    if batch.isFull(adding: attributes.count) {
                        s.send(.entryBatch, batch.payload, flush: false)
                        batch = EntryBatch(event: .new)
                    }
                    let at = batch.append(family: r[0], attributes: attributes)
                    if let left, let t = slot.timeoutOffset { batch.setUInt32(left, at: at + t - 1) }
                } else {
                    var record = Array(r)
                    if let left, let t = slot.timeoutOffset { for i in 0..<4 { record[t + i] = UInt8(truncatingIfNeeded: left >> (24 - 8 * UInt32(i))) } }
                    s.send(.entry, FramePayload.entryRecord(record, .new), flush: false)
                }
            }
            if !batch.isEmpty { s.send(.entryBatch, batch.payload, flush: false) }
            s.flush()
            if more { loop.execute(step) } else { finishTransfer(p, s, entries: count, what: "copy") }
        }
        step()
    }

    /// The timeout an entry read at `recorded` with `timeout` has left `now`: nil when it
    /// ran out (the standby would count it as expired); .some(nil) when it needs no change
    /// (no time passed, or no timeout); otherwise the value to send.
    static func timeoutLeft(_ timeout: UInt32?, recorded: UInt64, now: UInt64) -> UInt32?? {
        let elapsed = now > recorded ? (now - recorded) / 1_000_000_000 : 0
        guard elapsed > 0, let timeout else { return .some(nil) }
        guard UInt64(timeout) > elapsed else { return nil }
        return .some(UInt32(UInt64(timeout) - elapsed))
    }

    /// A full transfer from a fresh dump: BULK_BEGIN, every entry and expectation, BULK_END,
    /// then the events that arrived meanwhile. The dump runs off the event loop and is sent
    /// in chunks as it is read, so dumping and sending overlap.
    func bulk(to p: Peer) {
        guard let s = p.session, !p.bulkInProgress else { return }
        p.bulkInProgress = true
        p.bulks += 1
        let loop = s.context!.eventLoop
        let batches = (s.peer?.features ?? 0) & Hello.entryBatches != 0
        let id = ObjectIdentifier(p)
        let gapsAtStart = dumpBegins(id)
        Thread { [self] in
            // How many entries to expect (the kernel's count, read in one request): both ends
            // size their tables once instead of growing them step by step.
            let expected = (try? ConntrackTable().count().entries).map(Int.init) ?? 0
            loop.execute { s.send(.bulkBegin, UInt64(expected).bigEndianBytes, flush: false) }
            var chunk: [[UInt8]] = []
            var types: [FrameType] = []
            var batch = EntryBatch(event: .new)
            var dumped = SentCopy()
            dumped.reserveCapacity(expected)
            var count = 0
            func ship() {
                let (frames, kinds) = (chunk, types)
                chunk = []; types = []
                loop.execute {
                    guard p.session === s else { return }
                    for (i, f) in frames.enumerated() { s.send(kinds[i], f, flush: false) }
                    s.flush()
                }
            }
            var failed = false
            do {
                let table = try ConntrackTable()
                let now = Self.monotonic()
                // Entries travel as the kernel dumped them (no re-encoding); decoded here only
                // for the filter and the digest of what was sent.
                try dumpKept(table) { e, family, attributes in
                    dumped.add(e, family: family, attributes: attributes, recorded: now)
                    if batches && EntryBatch.fits(attributes.count) {
                        if batch.isFull(adding: attributes.count) {
                            chunk.append(batch.payload); types.append(.entryBatch)
                            batch = EntryBatch(event: .new)
                            ship()
                        }
                        batch.append(family: family, attributes: attributes)
                    } else {
                        chunk.append(FramePayload.entryRecord(Self.record(family: family, attributes), .new)); types.append(.entry)
                    }
                    count += 1
                    if chunk.count == 2048 { ship() }
                }
                if !batch.isEmpty { chunk.append(batch.payload); types.append(.entryBatch) }
                _ = try table.dumpExpectations { x in
                    var b: [UInt8] = [0]
                    ConntrackJSON.write(x, to: &b)
                    chunk.append(b); types.append(.expectation)
                }
            } catch {
                failed = true
                logger.error("bulk dump failed: \(error)")
            }
            ship()
            let total = count
            loop.execute { [self] in
                // A failed dump leaves the copy as it was, and not complete.
                if failed { dumpLogStart[id] = nil; sentComplete = false } else { dumpEnds(id, entries: dumped, gapsAtStart: gapsAtStart) }
                guard p.session === s else { return }
                finishTransfer(p, s, entries: total, what: "bulk transfer")
            }
        }.start()
    }

    private var bucketsResent = 0

    /// Sends the entries of these anti-entropy buckets again, from a fresh dump, each bucket
    /// as a bulk transfer of that bucket only.
    func repair(buckets: [Int], to p: Peer) {
        guard let s = p.session else { return }
        let wanted = Set(buckets)
        let loop = s.context!.eventLoop
        Thread { [self] in
            var byBucket: [Int: [(EntryKey, Change)]] = [:]
            do {
                let now = Self.monotonic()
                try dumpKept(ConntrackTable()) { e, family, attributes in
                    let b = TableDigest.bucket(zone: e.zone, tuple: e.original)
                    if wanted.contains(b) { byBucket[b, default: []].append((EntryKey(e), Self.change(e, family: family, attributes: attributes, at: now))) }
                }
            } catch {
                logger.error("anti-entropy dump failed: \(error)")
                return
            }
            loop.execute { [self] in
                guard p.session === s, !p.bulkInProgress else { return }
                for (k, _) in copy.table where wanted.contains(TableDigest.bucket(zone: k.zone, tuple: k.tuple)) { note(nil, for: k) }
                for b in buckets {
                    let items = byBucket[b] ?? []
                    s.send(.bulkBegin, UInt64(items.count).bigEndianBytes + UInt32(b).bigEndianBytes4, flush: false)
                    for (k, e) in items {
                        note(e, for: k)
                        s.send(.entry, FramePayload.entryRecord(e.record, .new), flush: false)
                    }
                    s.send(.bulkEnd, flush: false)
                }
                s.flush()
                lock.withLock { bucketsResent += buckets.count }
                logger.info("anti-entropy: \(buckets.count) buckets differed and were sent again", metadata: ["peer": "\(p.host):\(p.port)"])
            }
        }.start()
    }

    func follow(_ stream: EventStream) {
        while !isStopped {
            guard let ev = try? stream.next(timeoutMilliseconds: 500) else { continue }
            let loop = group.next()
            switch ev {
            case .gap:
                lock.withLock { overflows += 1 }
                logger.warning("event socket overflow: re-sending everything to every standby")
                loop.execute { [self] in
                    gapsSeen += 1
                    sentComplete = false
                    for p in peers { bulk(to: p) }
                }
                for l in lock.withLock({ conntrackd }) { bulk(to: l) }
            case .entry(let kind, let e):
                guard filter(e) else { continue }
                lock.withLock { events += 1 }
                for l in lock.withLock({ conntrackd }) {
                    l.send(kind, e)
                    if !stream.hasBufferedEvents { l.flush() }
                }
                guard let record = stream.lastRecord else { continue }
                let payload = FramePayload.entryRecord(record, kind, observed: ExternalCache.now())
                let key = EntryKey(e)
                let change = kind == .destroy ? nil : Change(e, record: record, recorded: Self.monotonic())
                loop.execute { [self] in
                    note(change, for: key)
                    for p in peers { deliver(p, .entry, payload) }
                }
            case .expectation(let kind, let x):
                for l in lock.withLock({ conntrackd }) { l.send(kind, x); l.flush() }
                var b: [UInt8] = [UInt8([EventKind.new, .update, .destroy].firstIndex(of: kind)!)]
                ConntrackJSON.write(x, to: &b)
                loop.execute { [self] in for p in peers { deliver(p, .expectation, b) } }
            }
        }
    }

    func deliver(_ p: Peer, _ type: FrameType, _ payload: [UInt8]) {
        guard let s = p.session, s.isReady else { return }
        if p.bulkInProgress { p.pending.append(payload); p.pendingTypes.append(type); return }
        s.send(type, payload)
    }

    public func status(maxLag: UInt64 = 0) -> NodeStatus {
        let (ev, ov) = lock.withLock { (events, overflows) }
        var st = NodeStatus()
        st.lines.append("role active, node \(name)")
        let (rf, rp, br, tr) = lock.withLock { (refreshes, repaired, bucketsResent, timeoutsRenewed) }
        st.lines.append("events \(ev), event socket overflows \(ov), refreshes \(rf) (changes they found: \(rp), timeouts renewed: \(tr)), anti-entropy buckets sent again \(br)")
        for l in lock.withLock({ conntrackd }) {
            let c = l.counters
            st.lines.append("conntrackd peer (\(l.mode.rawValue)): messages sent \(c.sent), received \(c.received), resent \(c.resent), resyncs asked \(c.resyncs)")
        }
        var all = !peers.isEmpty || !lock.withLock({ conntrackd.isEmpty })
        for p in peers {
            let sent = p.session?.sent ?? 0
            let lag = sent > p.acked ? sent - p.acked : 0
            let state = p.session?.isReady == true ? (p.bulkInProgress ? "bulk transfer" : "in step") : "not connected"
            st.lines.append("peer \(p.host):\(p.port): \(state), frames sent \(sent), acknowledged \(p.acked), lag \(lag) frames, bulk transfers \(p.bulks), copies re-sent \(p.resends), reconnects \(p.reconnects)")
            if !(p.session?.isReady == true && !p.bulkInProgress && lag <= maxLag) { all = false }
        }
        st.ready = all
        st.sample("ctsync_replicate_ready", "gauge", "1 when every standby is in step (ready --max-lag 0).", all ? 1 : 0)
        st.sample("ctsync_replicate_events_total", "counter", "ctnetlink events read.", Double(ev))
        st.sample("ctsync_replicate_event_overflows_total", "counter", "Event socket overflows (each causes a full re-send).", Double(ov))
        st.sample("ctsync_replicate_refresh_changes_total", "counter", "Changes found by comparing the table with what was sent.", Double(rp))
        st.sample("ctsync_replicate_buckets_resent_total", "counter", "Anti-entropy buckets sent again.", Double(br))
        st.sample("ctsync_replicate_timeouts_renewed_total", "counter", "Unchanged entries sent again before the standbys' copy ran out.", Double(tr))
        for p in peers {
            let sent = p.session?.sent ?? 0
            let peer = "{peer=\"\(p.host):\(p.port)\"}"
            st.sample("ctsync_replicate_peer_connected", "gauge", "1 when the session with this standby is established.", p.session?.isReady == true ? 1 : 0, labels: peer)
            st.sample("ctsync_replicate_peer_lag_frames", "gauge", "Frames sent and not yet acknowledged.", Double(sent > p.acked ? sent - p.acked : 0), labels: peer)
            st.sample("ctsync_replicate_peer_bulk_transfers_total", "counter", "Full transfers from a dump of the kernel.", Double(p.bulks), labels: peer)
            st.sample("ctsync_replicate_peer_copies_resent_total", "counter", "Full transfers from the copy in memory.", Double(p.resends), labels: peer)
            st.sample("ctsync_replicate_peer_reconnects_total", "counter", "Reconnections.", Double(p.reconnects), labels: peer)
        }
        return st
    }

    private var conntrackd: [ConntrackdLink] = []

    /// Sends to a conntrackd standby as well: its whole table now and whenever it asks
    /// (RESYNC) or restarts (HELLO), and every event.
    public func attach(_ link: ConntrackdLink) {
        link.onResyncRequest = { [weak self, weak link] in if let self, let link { bulk(to: link) } }
        link.onPeerHello = { [weak self, weak link] in if let self, let link { bulk(to: link) } }
        lock.withLock { conntrackd.append(link) }
        link.start()
        bulk(to: link)
    }

    func bulk(to link: ConntrackdLink) {
        Thread { [self] in
            var entries: [ConntrackEntry] = []
            var dumped = SentCopy()
            var expectations: [Expectation] = []
            do {
                let table = try ConntrackTable()
                let now = Self.monotonic()
                try dumpKept(table) { e, family, attributes in
                    entries.append(e)
                    dumped.add(e, family: family, attributes: attributes, recorded: now)
                }
                _ = try table.dumpExpectations { expectations.append($0) }
            } catch {
                logger.error("dump for the conntrackd peer failed: \(error)")
                return
            }
            link.sendAll(entries, expectations: expectations)
            group.next().execute { [self] in if peers.isEmpty { copy = dumped } }
            logger.info("sent \(entries.count) entries to the conntrackd peer")
        }.start()
    }

    /// Dumps the kernel and sends everything to every standby (`ctsync replicate resync` on
    /// this node).
    public func resync() -> Int {
        group.next().execute { [self] in for p in peers { bulk(to: p) } }
        let links = lock.withLock { conntrackd }
        for l in links { bulk(to: l) }
        return peers.count + links.count
    }
}
