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
    /// Their quantiles as last computed: at most once a second, since sorting 100000 samples
    /// on every `status` call (every 10 ms under a poller) cost a millisecond or more each.
    private var latencySummary: (computed: UInt64, quantiles: LatencyQuantiles)?
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
                if inject || f.payload.first == 2 {
                    let (event, es) = try EntryPayload.decodeBatch(f.payload)
                    cache.apply(event, es, at: now)
                    if inject, !cache.inBulk { for e in es { injectOne(event, e) } }
                } else {
                    try applyBatch(f.payload, at: now)
                }
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

    /// An ENTRY_BATCH of new or updated entries. A re-sent table is mostly entries the cache
    /// holds already, unchanged but for their timeout: those are recognised by key and a
    /// hash of their record, without decoding them. The rest are decoded, every one before
    /// anything is applied, so that a bad record changes nothing.
    func applyBatch(_ payload: [UInt8], at now: UInt64) throws {
        let (_, records) = try EntryBatch.records(payload)
        var summaries: [ExternalCache.RecordSummary] = []
        summaries.reserveCapacity(records.count)
        try payload.withUnsafeBytes { raw in
            for (i, r) in records.enumerated() {
                let a = UnsafeRawBufferPointer(rebasing: raw[r.attributes])
                do {
                    let k = try CtNetlinkCodec.keyFields(in: a)
                    let timeout = k.timeoutOffset.map { at in (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(a[at + $1]) } }
                    summaries.append(.init(key: EntryKey(zone: k.zone, tuple: k.original),
                                           hash: EntryPayload.recordHash(family: r.family, a, maskingTimeoutAt: k.timeoutOffset), timeout: timeout))
                } catch {
                    throw FrameError("entry batch record \(i + 1) of \(records.count): \(error)")
                }
            }
        }
        let held = cache.heldUnchanged(summaries)
        func decode(_ i: Int) throws -> ConntrackEntry {
            do {
                return try payload.withUnsafeBytes { try CtNetlinkCodec.decodeEntry(family: records[i].family, attributes: UnsafeRawBufferPointer(rebasing: $0[records[i].attributes])) }
            } catch {
                throw FrameError("entry batch record \(i + 1) of \(records.count): \(error)")
            }
        }
        // Only when some need decoding (none do when a table in step is sent again).
        var decoded: [ConntrackEntry?] = []
        if held.contains(where: { $0 == nil }) {
            decoded = [ConntrackEntry?](repeating: nil, count: records.count)
            for i in records.indices where held[i] == nil { decoded[i] = try decode(i) }
        }
        for i in cache.applyBatch(summaries, held: held, decoded: decoded, at: now) {
            if let e = try? decode(i) { cache.apply(.new, e, at: now) }
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

    struct LatencyQuantiles {
        var count: Int
        var median, p99, max: UInt64
    }

    /// The latency quantiles, recomputed at most once a second. Sorted outside the lock:
    /// frame handling takes it for every new entry.
    func latencyQuantiles() -> LatencyQuantiles? {
        let now = ExternalCache.now()
        if let s = lock.withLock({ latencySummary }), now &- s.computed < 1_000_000_000 { return s.quantiles }
        let sorted = lock.withLock { latencies }.sorted()
        guard let last = sorted.last else { return nil }
        func q(_ x: Double) -> UInt64 { sorted[min(sorted.count - 1, Int(Double(sorted.count) * x))] }
        let quantiles = LatencyQuantiles(count: sorted.count, median: q(0.5), p99: q(0.99), max: last)
        lock.withLock { latencySummary = (now, quantiles) }
        return quantiles
    }

    public func status(maxLag: UInt64 = 0) -> NodeStatus {
        let latency = latencyQuantiles()
        return lock.withLock {
            var st = NodeStatus()
            let now = ExternalCache.now()
            st.lines.append("role standby, node \(name)")
            st.lines.append("cache \(cache.count) entries, \(cache.expectationCount) expectations, \(cache.bulksCompleted) bulk transfers"
                            + (cache.inBulk ? ", bulk transfer in progress" : ""))
            st.lines.append("anti-entropy: digests sent \(digestsSent), buckets repaired \(cache.bucketsRepaired)")
            st.lines.append("connections accepted \(connections), closed for a bad frame \(rejected)")
            if let l = latency {
                func ms(_ v: UInt64) -> String { String(format: "%.3f", Double(v) / 1e6) }
                st.lines.append("event latency of new entries (read from ctnetlink on the active node to applied here): median \(ms(l.median)) ms, p99 \(ms(l.p99)) ms, max \(ms(l.max)) ms over \(l.count)")
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
            if let l = latency {
                for (q, v) in [(0.5, l.median), (0.99, l.p99)] {
                    st.sample("ctsync_replicate_event_latency_seconds", "summary", "Active node reads an event to standby applies it (new entries).",
                              Double(v) / 1e9, labels: "{quantile=\"\(q)\"}")
                }
            }
            return st
        }
    }
}
