import ConntrackCore
import Foundation
import KernelConntrack
import Logging
import NIOCore
import NIOPosix
import ReplicationProtocol

/// What a node reports for `ctsync replicate status` and `ready`.
public struct NodeStatus: Sendable {
    public var lines: [String] = []
    public var ready = false
    /// Samples for Prometheus: name, type, help, labels, value.
    public var samples: [(name: String, type: String, help: String, labels: String, value: Double)] = []

    mutating func sample(_ name: String, _ type: String, _ help: String, _ value: Double, labels: String = "") {
        samples.append((name, type, help, labels, value))
    }

    /// Prometheus text exposition (version 0.0.4).
    public var prometheus: String {
        var out = ""
        var described = Set<String>()
        for s in samples {
            if described.insert(s.name).inserted { out += "# HELP \(s.name) \(s.help)\n# TYPE \(s.name) \(s.type)\n" }
            let v = s.value == s.value.rounded() && abs(s.value) < 1e15 ? String(Int64(s.value)) : String(s.value)
            out += "\(s.name)\(s.labels) \(v)\n"
        }
        return out
    }
}

/// The standby: accepts authenticated connections from active nodes and keeps their table
/// in an external cache (or injects each change into its own kernel with `inject`).
public final class StandbyNode: @unchecked Sendable {
    public let cache = ExternalCache()
    let psk: HMACKey
    let name: String
    let inject: Bool
    let allowHostTable: Bool
    let logger = Logger(label: "ctsync.replicate.standby")
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let lock = NSLock()
    private var peers: [ObjectIdentifier: (session: Session, since: UInt64, lastFrame: UInt64, advertised: UInt64)] = [:]
    private var rejected = 0
    private var connections = 0
    /// Event-to-standby latencies (ns) of new entries that carry their kernel start time
    /// (nf_conntrack_timestamp=1 on the active node): the last 100000.
    private var latencies: [UInt64] = []
    private var latencyNext = 0
    private var injector: ConntrackTable?
    private var channel: Channel?

    /// Seconds between anti-entropy digests sent to each active node.
    let digestInterval: Int64
    private var digestsSent = 0

    public init(psk: [UInt8], name: String, inject: Bool = false, allowHostTable: Bool = false, digestInterval: Int64 = 30) {
        self.psk = HMACKey(psk)
        self.name = name
        self.inject = inject
        self.allowHostTable = allowHostTable
        self.digestInterval = digestInterval
        FastHMAC.install()
    }

    /// Anti-entropy: tells every active node what the cache holds, bucket by bucket; the
    /// active node sends the buckets that differ again.
    func sendDigests() {
        guard !cache.inBulk else { return }
        let sessions = lock.withLock { peers.values.map(\.session) }
        guard !sessions.isEmpty else { return }
        let payload = TableDigest.encode(cache.digests())
        for s in sessions where s.isReady {
            s.execute { s.send(.digest, payload) }
            lock.withLock { digestsSent += 1 }
        }
    }

    /// Binds and starts serving; returns the bound address.
    @discardableResult
    public func start(host: String, port: Int) throws -> SocketAddress? {
        if inject { injector = try ConntrackTable(allowHostTableWrites: allowHostTable) }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                let s = makeSession()
                return channel.pipeline.addHandler(s)
            }
        let ch = try bootstrap.bind(host: host, port: port).wait()
        channel = ch
        group.next().scheduleRepeatedTask(initialDelay: .seconds(digestInterval), delay: .seconds(digestInterval)) { [self] _ in sendDigests() }
        logger.info("listening", metadata: ["address": "\(ch.localAddress?.description ?? "?")"])
        return ch.localAddress
    }

    public func stop() {
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
    }

    func makeSession() -> Session {
        let s = Session(role: .responder, psk: psk, node: name, logger: logger)
        let id = ObjectIdentifier(s)
        s.onReady = { [self] s in
            lock.withLock {
                connections += 1
                peers[id] = (s, ExternalCache.now(), ExternalCache.now(), 0)
            }
        }
        s.onFrame = { [self] s, f in handle(f, from: s) }
        s.onReadBatch = { s in s.send(.ack, s.received.bigEndianBytes) }
        s.onClose = { [self] s, failure in
            lock.withLock {
                peers[id] = nil
                if failure != nil { rejected += 1 }
            }
            if cache.inBulk { cache.abandonBulk() }
            logger.notice("connection closed", metadata: ["reason": "\(failure ?? "peer closed")"])
        }
        return s
    }

    func handle(_ f: Frame, from s: Session) {
        let now = ExternalCache.now()
        lock.withLock { if let p = peers[ObjectIdentifier(s)] { peers[ObjectIdentifier(s)] = (p.session, p.since, now, p.advertised) } }
        do {
            switch f.type {
            case .entry:
                let (event, e, observed) = try EntryPayload.decode(f.payload)
                cache.apply(event, e, at: now)
                if event == .new, let start = observed ?? e.timestampStart, now > start, !cache.inBulk {
                    lock.withLock {
                        if latencies.count < 100_000 { latencies.append(now - start) } else { latencies[latencyNext] = now - start }
                        latencyNext = (latencyNext + 1) % 100_000
                    }
                }
                if inject, !cache.inBulk { injectOne(event, e) }
            case .entryBatch:
                let (event, es) = try EntryPayload.decodeBatch(f.payload)
                cache.apply(event, es, at: now)
                if inject, !cache.inBulk { for e in es { injectOne(event, e) } }
            case .expectation:
                guard let first = f.payload.first, first < 3 else { throw FrameError("expectation frame without an event byte") }
                let x = try ConntrackJSON.decodeExpectation(line: String(decoding: f.payload.dropFirst(), as: UTF8.self))
                cache.apply([EventKind.new, .update, .destroy][Int(first)], x, at: now)
            case .bulkBegin:
                // u64 count, then optionally u32 bucket: an anti-entropy repair of one bucket.
                if f.payload.count == 12 {
                    let b = Int(f.payload[8...].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
                    guard b < TableDigest.buckets else { throw FrameError("BULK_BEGIN for bucket \(b)") }
                    cache.beginBulk(bucket: b)
                } else {
                    cache.beginBulk(expected: f.payload.count == 8 ? Int(clamping: f.payload.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }) : 0)
                }
            case .bulkEnd:
                cache.endBulk()
                logger.info("bulk transfer complete", metadata: ["entries": "\(cache.count)"])
                if inject { _ = try? Commit.run(cache, allowHostTable: allowHostTable) }
            case .alive:
                if let n = UInt64(bigEndianBytes: f.payload) {
                    lock.withLock { if let p = peers[ObjectIdentifier(s)] { peers[ObjectIdentifier(s)] = (p.session, p.since, now, n) } }
                }
            case .error:
                logger.error("peer reports: \(String(decoding: f.payload, as: UTF8.self))")
            case .dumpRequest:
                let (entries, expectations) = cache.contents()
                s.send(.bulkBegin, UInt64(entries.count).bigEndianBytes, flush: false)
                for e in entries { s.send(.entry, FramePayload.entry(e, .new), flush: false) }
                for x in expectations {
                    var b: [UInt8] = [0]
                    ConntrackJSON.write(x, to: &b)
                    s.send(.expectation, b, flush: false)
                }
                s.send(.bulkEnd)
            case .ack, .resyncRequest, .digest, .bucketsRequest, .hello:
                break
            }
        } catch {
            // A frame that authenticates but does not decode is still refused: close.
            logger.error("closing connection: \(error)")
            s.context?.close(promise: nil)
        }
    }

    func injectOne(_ event: EventKind, _ e: ConntrackEntry) {
        guard let t = injector else { return }
        do {
            if event == .destroy { try t.perform(.delete(e.original, zone: e.zone, id: nil)) } else { try t.perform(Commit.write(for: e)) }
        } catch {
            logger.debug("inject failed: \(error)")
        }
    }

    private var conntrackd: [ConntrackdLink] = []

    /// Receives from a conntrackd active node as well (its FTFW or NOTRACK messages):
    /// asks it for its table at once and whenever it (re)starts.
    public func attach(_ link: ConntrackdLink) {
        link.onEntry = { [cache] kind, e in cache.apply(kind, e) }
        link.onExpectation = { [cache] kind, x in cache.apply(kind, x) }
        link.onPeerHello = { [weak link] in link?.requestResync() }
        lock.withLock { conntrackd.append(link) }
        link.start()
        link.requestResync()
    }

    /// Asks every connected active node for a full bulk transfer.
    public func requestResync() -> Int {
        let sessions = lock.withLock { peers.values.map(\.session) }
        for s in sessions { s.execute { s.send(.resyncRequest) } }
        let links = lock.withLock { conntrackd }
        for l in links { l.requestResync() }
        return sessions.count + links.count
    }

    public func status(maxLag: UInt64 = 0) -> NodeStatus {
        lock.withLock {
            var st = NodeStatus()
            let now = ExternalCache.now()
            st.lines.append("role standby, node \(name)")
            st.lines.append("cache \(cache.count) entries, \(cache.expectationCount) expectations, \(cache.bulksCompleted) bulk transfers"
                            + (cache.inBulk ? ", bulk transfer in progress" : ""))
            st.lines.append("anti-entropy: digests sent \(digestsSent), buckets repaired \(cache.bucketsRepaired)")
            st.lines.append("connections accepted \(connections), closed for a bad frame \(rejected)")
            if !latencies.isEmpty {
                let sorted = latencies.sorted()
                func ms(_ q: Double) -> String { String(format: "%.3f", Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]) / 1e6) }
                st.lines.append("event latency of new entries (read from ctnetlink on the active node to applied here): median \(ms(0.5)) ms, p99 \(ms(0.99)) ms, max \(ms(1)) ms over \(sorted.count)")
            }
            var fresh = false
            for p in peers.values {
                let lag = p.advertised > p.session.received ? p.advertised - p.session.received : 0
                let idle = Double(now - p.lastFrame) / 1e9
                st.lines.append("peer \(p.session.peer?.node ?? "?") \(p.session.remote): frames \(p.session.received), lag \(lag) frames, last frame \(String(format: "%.1f", idle)) s ago")
                if lag <= maxLag && idle < 3 { fresh = true }
            }
            for l in conntrackd {
                let c = l.counters
                st.lines.append("conntrackd peer (\(l.mode.rawValue)): messages received \(c.received), sent \(c.sent), refused \(c.malformed), gaps \(c.gaps)")
                if c.received > 0 { fresh = true }
            }
            if peers.isEmpty && conntrackd.isEmpty { st.lines.append("no active node connected") }
            st.ready = fresh && (cache.bulksCompleted > 0 || !conntrackd.isEmpty) && !cache.inBulk
            st.sample("ctsync_replicate_ready", "gauge", "1 when in step with an active node (ready --max-lag 0).", st.ready ? 1 : 0)
            st.sample("ctsync_replicate_cache_entries", "gauge", "Entries in the external cache.", Double(cache.count))
            st.sample("ctsync_replicate_cache_expectations", "gauge", "Expectations in the external cache.", Double(cache.expectationCount))
            st.sample("ctsync_replicate_bulk_transfers_total", "counter", "Bulk transfers received.", Double(cache.bulksCompleted))
            st.sample("ctsync_replicate_buckets_repaired_total", "counter", "Anti-entropy buckets received again.", Double(cache.bucketsRepaired))
            st.sample("ctsync_replicate_events_applied_total", "counter", "Entry changes applied to the cache.", Double(cache.eventsApplied))
            st.sample("ctsync_replicate_connections_total", "counter", "Authenticated connections accepted.", Double(connections))
            st.sample("ctsync_replicate_refused_connections_total", "counter", "Connections closed for an invalid, unauthenticated or replayed frame.", Double(rejected))
            st.sample("ctsync_replicate_peers", "gauge", "Active nodes connected.", Double(peers.count + conntrackd.count))
            if !latencies.isEmpty {
                let sorted = latencies.sorted()
                for q in [0.5, 0.99] {
                    st.sample("ctsync_replicate_event_latency_seconds", "summary", "Active node reads an event to standby applies it (new entries).",
                              Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]) / 1e9, labels: "{quantile=\"\(q)\"}")
                }
            }
            return st
        }
    }
}

/// The active node: follows its kernel's table (a bulk dump, then ctnetlink events) and
/// streams it to every standby, reconnecting and re-sending everything after a break or
/// when its event socket overflowed.
public final class ActiveNode: @unchecked Sendable {
    final class Peer: @unchecked Sendable {
        let host: String
        let port: Int
        var session: Session?
        var acked: UInt64 = 0
        var bulks = 0
        var reconnects = 0
        var bulkInProgress = false
        var pending: [[UInt8]] = []      // events queued during a bulk transfer (frame payloads with type)
        var pendingTypes: [FrameType] = []
        init(host: String, port: Int) { self.host = host; self.port = port }
    }

    let psk: HMACKey
    let name: String
    let filter: (ConntrackEntry) -> Bool
    /// Seconds between comparisons of the kernel's table with what the standbys were sent.
    let refresh: Int64
    /// What the standbys hold (when in step): a digest of each entry as last sent, without
    /// the fields that change with every packet. Event-loop only.
    var shadow: [EntryKey: UInt64] = [:]
    private var refreshes = 0
    private var repaired = 0
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

    func compareWithKernel() {
        let links = lock.withLock { conntrackd }
        guard !isStopped, !links.isEmpty || peers.contains(where: { $0.session?.isReady == true && !$0.bulkInProgress }) else { return }
        let loop = group.next()
        Thread { [self] in
            var current: [EntryKey: (ConntrackEntry, UInt64)] = [:]
            do {
                _ = try ConntrackTable().dump { e in
                    if filter(e) { current[EntryKey(e)] = (e, TableDigest.entryDigest(e)) }
                }
            } catch {
                logger.error("refresh dump failed: \(error)")
                return
            }
            loop.execute { [self] in
                guard !peers.contains(where: { $0.bulkInProgress }) else { return }
                var sends: [[UInt8]] = []
                var changes: [(EventKind, ConntrackEntry)] = []
                for (k, (e, d)) in current where shadow[k] != d {
                    let kind: EventKind = shadow[k] == nil ? .new : .update
                    sends.append(FramePayload.entry(e, kind))
                    changes.append((kind, e))
                    shadow[k] = d
                }
                for (k, _) in shadow where current[k] == nil {
                    // Gone from the kernel without a destroy event: rebuild a minimal entry.
                    var e = ConntrackEntry(original: k.tuple, reply: k.tuple.inverted())
                    e.zone = k.zone == 0 ? nil : k.zone
                    sends.append(FramePayload.entry(e, .destroy))
                    changes.append((.destroy, e))
                    shadow[k] = nil
                }
                lock.withLock { refreshes += 1; repaired += sends.count }
                if !sends.isEmpty { logger.info("refresh: \(sends.count) changes the events did not carry") }
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
            bulk(to: p)
        }
        session.onFrame = { [self] _, f in
            switch f.type {
            case .ack: if let n = UInt64(bigEndianBytes: f.payload) { p.acked = n }
            case .digest:
                guard let theirs = try? TableDigest.decode(f.payload), !p.bulkInProgress else { break }
                let ours = TableDigest.digests(shadow.map { (TableDigest.bucket(zone: $0.key.zone, tuple: $0.key.tuple), $0.value) })
                let differ = (0..<TableDigest.buckets).filter { theirs[$0] != ours[$0] }
                if !differ.isEmpty { repair(buckets: differ, to: p) }
            case .resyncRequest: bulk(to: p)
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

    /// A full transfer: BULK_BEGIN, every entry and expectation from a fresh dump, BULK_END,
    /// then the events that arrived meanwhile. The dump runs off the event loop and is sent
    /// in chunks as it is read, so dumping and sending overlap.
    func bulk(to p: Peer) {
        guard let s = p.session, !p.bulkInProgress else { return }
        p.bulkInProgress = true
        p.bulks += 1
        let loop = s.context!.eventLoop
        let batches = (s.peer?.features ?? 0) & Hello.entryBatches != 0
        Thread { [self] in
            // How many entries to expect (the kernel's count, read in one request): both ends
            // size their tables once instead of growing them step by step.
            let expected = (try? ConntrackTable().count().entries).map(Int.init) ?? 0
            loop.execute { s.send(.bulkBegin, UInt64(expected).bigEndianBytes, flush: false) }
            var chunk: [[UInt8]] = []
            var types: [FrameType] = []
            var batch = EntryBatch(event: .new)
            var dumped: [EntryKey: UInt64] = [:]
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
            do {
                let table = try ConntrackTable()
                // Entries travel as the kernel dumped them (no re-encoding); decoded here only
                // for the filter and the digest of what was sent.
                _ = try table.dumpRaw { family, attributes in
                    let e = try CtNetlinkCodec.decodeEntry(family: family, attributes: attributes)
                    guard filter(e) else { return }
                    if batches && EntryBatch.fits(attributes.count) {
                        if batch.isFull(adding: attributes.count) {
                            chunk.append(batch.payload); types.append(.entryBatch)
                            batch = EntryBatch(event: .new)
                            ship()
                        }
                        batch.append(family: family, attributes: attributes)
                    } else {
                        chunk.append(FramePayload.entryAttributes(family: family, attributes, .new)); types.append(.entry)
                    }
                    dumped[EntryKey(e)] = TableDigest.entryDigest(e)
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
                logger.error("bulk dump failed: \(error)")
            }
            ship()
            let total = count
            loop.execute {
                guard p.session === s else { return }
                self.shadow = dumped
                s.send(.bulkEnd, flush: false)
                for (i, f) in p.pending.enumerated() { s.send(p.pendingTypes[i], f, flush: false) }
                s.flush()
                p.pending = []; p.pendingTypes = []
                p.bulkInProgress = false
                self.logger.info("bulk transfer sent", metadata: ["peer": "\(p.host):\(p.port)", "entries": "\(total)"])
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
            var byBucket: [Int: [(EntryKey, ConntrackEntry)]] = [:]
            do {
                _ = try ConntrackTable().dump { e in
                    guard filter(e) else { return }
                    let b = TableDigest.bucket(zone: e.zone, tuple: e.original)
                    if wanted.contains(b) { byBucket[b, default: []].append((EntryKey(e), e)) }
                }
            } catch {
                logger.error("anti-entropy dump failed: \(error)")
                return
            }
            loop.execute { [self] in
                guard p.session === s, !p.bulkInProgress else { return }
                for k in shadow.keys where wanted.contains(TableDigest.bucket(zone: k.zone, tuple: k.tuple)) { shadow[k] = nil }
                for b in buckets {
                    let items = byBucket[b] ?? []
                    s.send(.bulkBegin, UInt64(items.count).bigEndianBytes + UInt32(b).bigEndianBytes4, flush: false)
                    for (k, e) in items {
                        shadow[k] = TableDigest.entryDigest(e)
                        s.send(.entry, FramePayload.entry(e, .new), flush: false)
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
                loop.execute { [self] in for p in peers { bulk(to: p) } }
                for l in lock.withLock({ conntrackd }) { bulk(to: l) }
            case .entry(let kind, let e):
                guard filter(e) else { continue }
                lock.withLock { events += 1 }
                for l in lock.withLock({ conntrackd }) {
                    l.send(kind, e)
                    if !stream.hasBufferedEvents { l.flush() }
                }
                let payload = FramePayload.entry(e, kind, observed: ExternalCache.now())
                let key = EntryKey(e), digest = kind == .destroy ? nil : TableDigest.entryDigest(e)
                loop.execute { [self] in
                    shadow[key] = digest
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
        let (rf, rp, br) = lock.withLock { (refreshes, repaired, bucketsResent) }
        st.lines.append("events \(ev), event socket overflows \(ov), refreshes \(rf) (changes they found: \(rp)), anti-entropy buckets sent again \(br)")
        for l in lock.withLock({ conntrackd }) {
            let c = l.counters
            st.lines.append("conntrackd peer (\(l.mode.rawValue)): messages sent \(c.sent), received \(c.received), resent \(c.resent), resyncs asked \(c.resyncs)")
        }
        var all = !peers.isEmpty || !lock.withLock({ conntrackd.isEmpty })
        for p in peers {
            let sent = p.session?.sent ?? 0
            let lag = sent > p.acked ? sent - p.acked : 0
            let state = p.session?.isReady == true ? (p.bulkInProgress ? "bulk transfer" : "in step") : "not connected"
            st.lines.append("peer \(p.host):\(p.port): \(state), frames sent \(sent), acknowledged \(p.acked), lag \(lag) frames, bulk transfers \(p.bulks), reconnects \(p.reconnects)")
            if !(p.session?.isReady == true && !p.bulkInProgress && lag <= maxLag) { all = false }
        }
        st.ready = all
        st.sample("ctsync_replicate_ready", "gauge", "1 when every standby is in step (ready --max-lag 0).", all ? 1 : 0)
        st.sample("ctsync_replicate_events_total", "counter", "ctnetlink events read.", Double(ev))
        st.sample("ctsync_replicate_event_overflows_total", "counter", "Event socket overflows (each causes a full re-send).", Double(ov))
        st.sample("ctsync_replicate_refresh_changes_total", "counter", "Changes found by comparing the table with what was sent.", Double(rp))
        st.sample("ctsync_replicate_buckets_resent_total", "counter", "Anti-entropy buckets sent again.", Double(br))
        for p in peers {
            let sent = p.session?.sent ?? 0
            let peer = "{peer=\"\(p.host):\(p.port)\"}"
            st.sample("ctsync_replicate_peer_connected", "gauge", "1 when the session with this standby is established.", p.session?.isReady == true ? 1 : 0, labels: peer)
            st.sample("ctsync_replicate_peer_lag_frames", "gauge", "Frames sent and not yet acknowledged.", Double(sent > p.acked ? sent - p.acked : 0), labels: peer)
            st.sample("ctsync_replicate_peer_bulk_transfers_total", "counter", "Bulk transfers sent.", Double(p.bulks), labels: peer)
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
            var expectations: [Expectation] = []
            do {
                let table = try ConntrackTable()
                _ = try table.dump { e in if filter(e) { entries.append(e) } }
                _ = try table.dumpExpectations { expectations.append($0) }
            } catch {
                logger.error("dump for the conntrackd peer failed: \(error)")
                return
            }
            link.sendAll(entries, expectations: expectations)
            var dumped: [EntryKey: UInt64] = [:]
            for e in entries { dumped[EntryKey(e)] = TableDigest.entryDigest(e) }
            group.next().execute { [self] in if peers.isEmpty { shadow = dumped } }
            logger.info("sent \(entries.count) entries to the conntrackd peer")
        }.start()
    }

    public func resync() -> Int {
        group.next().execute { [self] in for p in peers { bulk(to: p) } }
        let links = lock.withLock { conntrackd }
        for l in links { bulk(to: l) }
        return peers.count + links.count
    }
}
