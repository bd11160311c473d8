import ConntrackCore

/// ctsync's replication frames (docs/replication-protocol.md), version 1.
///
///     0   4  magic "CTSR"
///     4   1  version (1)
///     5   1  type (FrameType)
///     6   2  flags (0; reserved)
///     8   4  payload length, at most `maxPayload`
///     12  8  sequence: 1 for the first frame a side sends on a connection, then +1
///     20  n  payload
///     20+n 32 HMAC-SHA-256 over bytes 0..<20+n
///
/// All integers big-endian. HELLO frames are authenticated with the pre-shared key; every
/// later frame with the session key both HELLOs derive (`Session`). A frame with a wrong
/// magic, version, type, length or MAC, or a sequence number other than the next one,
/// ends the connection and changes nothing.
public enum FrameType: UInt8, Sendable, CaseIterable {
    /// Payload: 16-byte nonce, u16 protocol version, u32 feature bits, node name (UTF-8).
    case hello = 1
    /// Payload: u8 event (0 new, 1 update, 2 destroy), then one entry as a JSON line (docs/json.md).
    case entry = 2
    /// Payload: u8 event, then one expectation as a JSON line.
    case expectation = 3
    /// Payload: u64 highest sequence number received and applied.
    case ack = 4
    /// Payload: u64 entries to follow; the receiver replaces its copy with what comes before BULK_END.
    case bulkBegin = 5
    case bulkEnd = 6
    /// Ask the peer for a full bulk transfer (after a restart or lost events). No payload.
    case resyncRequest = 7
    /// Anti-entropy: u32 bucket count, then one u64 digest per bucket of the sender's table.
    case digest = 8
    /// The buckets whose digests differ: u32 count, then u32 bucket numbers; the peer re-sends them.
    case bucketsRequest = 9
    /// Keep-alive. No payload.
    case alive = 10
    /// Payload: UTF-8 text; the sender closes the connection after it.
    case error = 11
    /// Ask a standby for its cache (`ctsync diff peer:HOST:PORT`): it answers with a bulk
    /// transfer (timeouts as they stand now). No payload.
    case dumpRequest = 12
    /// Payload: u8 event, then entries as ctnetlink attributes, each a record of u8 address
    /// family, u16 length and that many bytes (`EntryBatch`). Bulk transfers carry their
    /// entries in these when the peer's HELLO has `Hello.entryBatches`: one MAC and one
    /// header for a few hundred entries instead of one each.
    case entryBatch = 13
}

public struct Frame: Sendable, Equatable {
    public var type: FrameType
    public var sequence: UInt64
    public var payload: [UInt8]
    public init(type: FrameType, sequence: UInt64, payload: [UInt8] = []) {
        self.type = type; self.sequence = sequence; self.payload = payload
    }
}

public struct FrameError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(_ m: String) { message = m }
}

public enum FrameCodec {
    public static let magic: [UInt8] = Array("CTSR".utf8)
    public static let version: UInt8 = 1
    public static let headerSize = 20
    public static let macSize = 32
    /// Large enough for any one entry or a digest of 65536 buckets; bulk transfers are many frames.
    public static let maxPayload = 1 << 20

    public static func encode(_ f: Frame, key: HMACKey) -> [UInt8] {
        var out = header(type: f.type, sequence: f.sequence, length: f.payload.count)
        out += f.payload
        out += key.mac([out[...]])
        return out
    }

    /// The 20 header bytes of a frame (the MAC then covers them and the payload).
    public static func header(type: FrameType, sequence: UInt64, length: Int) -> [UInt8] {
        var out = magic + [version, type.rawValue, 0, 0]
        let n = UInt32(length)
        out += [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: sequence >> (56 - 8 * UInt64(i)))) }
        return out
    }
}

/// Reads frames from a byte stream, checking each one's header, length, MAC and sequence
/// number. After the first error it refuses everything (the connection is to be closed).
public struct FrameReader: Sendable {
    var buffer: [UInt8] = []
    var start = 0
    public private(set) var key: HMACKey
    /// The sequence number the next frame must carry.
    public private(set) var expected: UInt64 = 1
    public private(set) var failed: FrameError?

    public init(key: HMACKey) { self.key = key }

    /// Bytes received that do not yet form a whole frame.
    public var pendingBytes: Int { buffer.count - start }

    /// Bytes held, read or not (for tests of the compaction).
    public var bufferCapacityForTests: Int { buffer.count }

    /// After the HELLOs: later frames are checked with the session key.
    public mutating func switchKey(_ k: HMACKey) { key = k }

    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true); start = 0
        } else if start >= 1 << 16 && start * 2 >= buffer.count {
            // Frames read but a partial one left: drop what was read (at most as many bytes
            // as are kept), so that a long stream does not accumulate in memory.
            buffer.removeSubrange(0..<start); start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next whole, valid frame; nil when more bytes are needed; throws (and stays failed)
    /// on anything invalid.
    public mutating func next() throws -> Frame? {
        if let failed { throw failed }
        do {
            return try parse()
        } catch let e as FrameError {
            failed = e
            throw e
        }
    }

    mutating func parse() throws -> Frame? {
        let avail = buffer.count - start
        // Check what has arrived as early as it can be checked: garbage fails fast.
        let m = min(avail, 4)
        if buffer[start..<(start + m)].elementsEqual(FrameCodec.magic[0..<m]) == false { throw FrameError("bad magic") }
        // Each header field is checked as soon as its bytes are in.
        let b = start
        if avail > 4, buffer[b + 4] != FrameCodec.version { throw FrameError("unsupported version \(buffer[b + 4])") }
        if avail > 5, FrameType(rawValue: buffer[b + 5]) == nil { throw FrameError("unknown frame type \(buffer[b + 5])") }
        if avail > 7, buffer[b + 6] != 0 || buffer[b + 7] != 0 { throw FrameError("reserved flags set") }
        var len = 0
        if avail >= 12 {
            for i in 8..<12 { len = len << 8 | Int(buffer[b + i]) }
            guard len <= FrameCodec.maxPayload else { throw FrameError("payload of \(len) bytes is over the \(FrameCodec.maxPayload) limit") }
        }
        guard avail >= FrameCodec.headerSize else { return nil }
        let h = buffer[start..<(start + FrameCodec.headerSize)]
        let type = FrameType(rawValue: h[h.startIndex + 5])!
        var seq: UInt64 = 0
        for i in 12..<20 { seq = seq << 8 | UInt64(h[h.startIndex + i]) }
        let total = FrameCodec.headerSize + len + FrameCodec.macSize
        guard avail >= total else { return nil }
        let body = buffer[start..<(start + FrameCodec.headerSize + len)]
        let mac = buffer[(start + FrameCodec.headerSize + len)..<(start + total)]
        guard HMACKey.equal(mac, key.mac([body])) else { throw FrameError("authentication failed (wrong key or altered frame)") }
        guard seq == expected else {
            throw FrameError(seq < expected ? "replayed frame (sequence \(seq), expected \(expected))" : "sequence gap (\(seq), expected \(expected))")
        }
        expected += 1
        let payload = Array(buffer[(start + FrameCodec.headerSize)..<(start + FrameCodec.headerSize + len)])
        start += total
        return Frame(type: type, sequence: seq, payload: payload)
    }
}

/// The HELLO exchange: each side sends a nonce; both derive the session key from the
/// pre-shared key and the two nonces, so frames of one connection cannot be replayed on
/// another.
public struct Hello: Sendable, Equatable {
    /// Feature bit: the sender accepts ENTRY_BATCH frames.
    public static let entryBatches: UInt32 = 1
    /// The features this implementation offers.
    public static let supported: UInt32 = entryBatches

    public var nonce: [UInt8]
    public var protocolVersion: UInt16
    public var features: UInt32
    public var node: String

    public init(nonce: [UInt8], protocolVersion: UInt16 = 1, features: UInt32 = Hello.supported, node: String) {
        self.nonce = nonce; self.protocolVersion = protocolVersion; self.features = features; self.node = node
    }

    public var payload: [UInt8] {
        nonce + [UInt8(protocolVersion >> 8), UInt8(protocolVersion & 0xff)]
            + [UInt8(features >> 24), UInt8((features >> 16) & 0xff), UInt8((features >> 8) & 0xff), UInt8(features & 0xff)]
            + Array(node.utf8.prefix(255))
    }

    public init(payload p: [UInt8]) throws {
        guard p.count >= 22 else { throw FrameError("HELLO of \(p.count) bytes is too short") }
        nonce = Array(p[0..<16])
        protocolVersion = UInt16(p[16]) << 8 | UInt16(p[17])
        features = UInt32(p[18]) << 24 | UInt32(p[19]) << 16 | UInt32(p[20]) << 8 | UInt32(p[21])
        node = String(decoding: p[22...], as: UTF8.self)
    }

    /// The session key: HMAC(psk, "ctsync session" ‖ initiator nonce ‖ responder nonce).
    public static func sessionKey(psk: HMACKey, initiator: [UInt8], responder: [UInt8]) -> HMACKey {
        HMACKey(psk.mac([ArraySlice(Array("ctsync session".utf8)), initiator[...], responder[...]]))
    }
}

/// Entry and expectation payloads: an event byte (0 new, 1 update, 2 destroy; with 0x80
/// set, an 8-byte time follows: when the active node read the event, in nanoseconds since
/// 1970), then the JSON line; or, with 0x40 set, the address family byte and the entry's
/// ctnetlink attributes as the kernel gave them (what the active node sends; decoded by
/// the Replication target, which has the netlink codec).
public enum FramePayload {
    static let events: [EventKind] = [.new, .update, .destroy]

    /// Bit of the event byte: the payload is ctnetlink attributes, not a JSON line.
    public static let netlinkFormat: UInt8 = 0x40

    /// A bulk entry straight from the kernel's dump: family and attributes as they came.
    /// An entry as a record (address family byte, then its ctnetlink attributes), with the
    /// time the active node read it when given.
    public static func entryRecord(_ record: [UInt8], _ event: EventKind, observed: UInt64? = nil) -> [UInt8] {
        let code = UInt8(events.firstIndex(of: event)!) | netlinkFormat
        var out: [UInt8]
        if let observed { out = [code | 0x80] + observed.bytes8 } else { out = [code] }
        out.append(contentsOf: record)
        return out
    }

    public static func entry(_ e: ConntrackEntry, _ event: EventKind, observed: UInt64? = nil) -> [UInt8] {
        let code = UInt8(events.firstIndex(of: event)!)
        var out: [UInt8]
        if let observed { out = [code | 0x80] + observed.bytes8 } else { out = [code] }
        ConntrackJSON.write(e, to: &out)
        return out
    }

    public static func decodeEntry(_ p: [UInt8]) throws -> (EventKind, ConntrackEntry) {
        let (k, e, _) = try decodeEntryWithTime(p)
        return (k, e)
    }

    /// The event byte and optional time of an entry payload: the event, the time, whether
    /// the entry is netlink attributes (else JSON), and where the entry starts.
    public static func header(_ p: [UInt8]) throws -> (event: EventKind, observed: UInt64?, netlink: Bool, body: Int) {
        guard let first = p.first, Int(first & 0x3f) < events.count else { throw FrameError("entry frame without a valid event byte") }
        guard first & 0x80 != 0 else { return (events[Int(first & 0x3f)], nil, first & netlinkFormat != 0, 1) }
        guard p.count >= 9 else { throw FrameError("entry frame cut off in its time") }
        return (events[Int(first & 0x3f)], p[1..<9].reduce(0) { $0 << 8 | UInt64($1) }, first & netlinkFormat != 0, 9)
    }

    public static func decodeEntryWithTime(_ p: [UInt8]) throws -> (EventKind, ConntrackEntry, UInt64?) {
        let h = try header(p)
        guard !h.netlink else { throw FrameError("entry frame of netlink attributes where JSON was expected") }
        do {
            let (e, _) = try p.withUnsafeBufferPointer { try ConntrackJSON.decode(bytes: UnsafeBufferPointer(rebasing: $0[h.body...])) }
            return (h.event, e, h.observed)
        } catch {
            throw FrameError("entry frame: \(error)")
        }
    }
}

/// The payload of an ENTRY_BATCH frame: an event byte, then records of u8 address family,
/// u16 length and that many bytes of ctnetlink attributes, as the kernel dumped them.
public struct EntryBatch: Sendable {
    /// Payload bytes a batch stops growing at (a record that would pass it starts the next
    /// batch): large enough that the per-frame costs vanish, well under `maxPayload`.
    public static let limit = 64 << 10
    public private(set) var payload: [UInt8]
    public private(set) var count = 0

    public init(event: EventKind) {
        payload = [UInt8(FramePayload.events.firstIndex(of: event)!)]
        payload.reserveCapacity(Self.limit + 1024)
    }

    public var isEmpty: Bool { count == 0 }

    /// Whether a record of this many attribute bytes can go into a batch at all.
    public static func fits(_ attributes: Int) -> Bool { attributes <= Int(UInt16.max) }

    /// Whether adding a record of this many attribute bytes would pass `limit`.
    public func isFull(adding attributes: Int) -> Bool { !isEmpty && payload.count + 3 + attributes > Self.limit }

    /// Appends one entry's record; `attributes` must fit (`fits`). Returns where the
    /// attributes start in `payload`.
    @discardableResult
    public mutating func append(family: UInt8, attributes: UnsafeRawBufferPointer) -> Int {
        precondition(Self.fits(attributes.count))
        payload.append(family)
        payload.append(UInt8(attributes.count >> 8))
        payload.append(UInt8(attributes.count & 0xff))
        let at = payload.count
        payload.append(contentsOf: attributes)
        count += 1
        return at
    }

    /// Overwrites four bytes of `payload` with a big-endian value (a record's timeout).
    public mutating func setUInt32(_ v: UInt32, at i: Int) {
        for k in 0..<4 { payload[i + k] = UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32(k))) }
    }

    /// Splits a received payload into its event and records (family and the range of the
    /// attributes in `payload`); throws on a bad event byte or a record that overruns.
    public static func records(_ payload: [UInt8]) throws -> (EventKind, [(family: UInt8, attributes: Range<Int>)]) {
        guard let first = payload.first, Int(first) < FramePayload.events.count else {
            throw FrameError("entry batch without a valid event byte")
        }
        var out: [(family: UInt8, attributes: Range<Int>)] = []
        var i = 1
        while i < payload.count {
            guard payload.count - i >= 3 else { throw FrameError("entry batch: record header cut off at byte \(i)") }
            let len = Int(payload[i + 1]) << 8 | Int(payload[i + 2])
            guard payload.count - i - 3 >= len else {
                throw FrameError("entry batch: record at byte \(i) claims \(len) bytes, \(payload.count - i - 3) remain")
            }
            out.append((payload[i], (i + 3)..<(i + 3 + len)))
            i += 3 + len
        }
        return (FramePayload.events[Int(first)], out)
    }
}

extension UInt64 {
    var bytes8: [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: self >> (56 - 8 * UInt64($0))) } }
}

/// Anti-entropy digests (DIGEST frames): the table split into 256 buckets by a hash of each
/// entry's zone and original tuple, each bucket summarised by the XOR of its entries' digests.
/// Both ends compute them the same way (FNV-1a over our JSON text, not Swift's seeded Hasher),
/// so a standby can tell an active node which buckets differ and get only those again.
public enum TableDigest {
    public static let buckets = 256

    static func fnv(_ b: [UInt8], seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        var h = seed
        for c in b { h = (h ^ UInt64(c)) &* 0x100_0000_01b3 }
        return h
    }

    /// The bucket of an entry with this zone and original tuple.
    public static func bucket(zone: UInt16?, tuple: Tuple) -> Int {
        var b: [UInt8] = []
        ConntrackJSON.writeTuple(tuple.withoutZone, to: &b)
        return Int(fnv(b, seed: 0x84222325_cbf29ce4 ^ UInt64(zone ?? 0)) % UInt64(buckets))
    }

    /// An entry's digest without what changes with every packet (timeout, counters, use, id,
    /// stop time): a 64-bit mix of its fields, the same on every node.
    public static func entryDigest(_ e: ConntrackEntry) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: UInt64) {
            h = (h ^ v) &* 0x100_0000_01b3
            h ^= h >> 31
        }
        func opt(_ v: UInt64?) { if let v { mix(1); mix(v) } else { mix(0) } }
        func bytes(_ s: String?) {
            guard let s else { mix(0); return }
            mix(UInt64(s.utf8.count) | 1 << 40)
            for b in s.utf8 { mix(UInt64(b)) }
        }
        func tuple(_ t: Tuple?) {
            guard let t else { mix(0); return }
            for a in [t.source, t.destination] {
                switch a {
                case .v4(let x): mix(UInt64(x) | 1 << 32)
                case .v6(let hi, let lo): mix(hi); mix(lo)
                }
            }
            mix(UInt64(t.l4proto) << 48 | UInt64(t.sourcePort) << 32 | UInt64(t.destinationPort) << 16 | UInt64(t.icmpID))
            mix(UInt64(t.icmpType) << 8 | UInt64(t.icmpCode))
            opt(t.zone.map(UInt64.init))
        }
        tuple(e.original)
        tuple(e.reply)
        opt(e.status.map { UInt64($0.rawValue) })
        opt(e.mark.map(UInt64.init))
        opt(e.zone.map(UInt64.init))
        opt(e.secmark.map(UInt64.init))
        switch e.protoInfo {
        case .tcp(let t):
            mix(1); mix(UInt64(t.state))
            opt(t.windowScaleOriginal.map(UInt64.init)); opt(t.windowScaleReply.map(UInt64.init))
            opt(t.flagsOriginal.map { UInt64($0.flags) << 8 | UInt64($0.mask) }); opt(t.flagsReply.map { UInt64($0.flags) << 8 | UInt64($0.mask) })
        case .sctp(let s):
            mix(2); mix(UInt64(s.state)); opt(s.vtagOriginal.map(UInt64.init)); opt(s.vtagReply.map(UInt64.init))
        case .dccp(let d):
            mix(3); mix(UInt64(d.state)); opt(d.role.map(UInt64.init)); opt(d.handshakeSeq)
        case nil:
            mix(0)
        }
        opt(e.labels.map { $0.low }); opt(e.labels.map { $0.high })
        bytes(e.helper)
        tuple(e.master)
        bytes(e.secctx)
        for a in [e.seqAdjOriginal, e.seqAdjReply] {
            opt(a.map { UInt64($0.correctionPosition) << 32 | UInt64($0.offsetBefore) }); opt(a.map { UInt64($0.offsetAfter) })
        }
        opt(e.synproxy.map { UInt64($0.isn) << 32 | UInt64($0.its) }); opt(e.synproxy.map { UInt64($0.tsoff) })
        opt(e.timestampStart)
        return h
    }

    /// Per-bucket digests from (bucket, entry digest) pairs.
    public static func digests<S: Sequence>(_ items: S) -> [UInt64] where S.Element == (Int, UInt64) {
        var out = [UInt64](repeating: 0, count: buckets)
        for (b, d) in items { out[b] ^= d }
        return out
    }

    public static func encode(_ d: [UInt64]) -> [UInt8] {
        UInt32(d.count).bigEndianBytes4 + d.flatMap { v in (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * UInt64($0))) } }
    }

    public static func decode(_ p: [UInt8]) throws -> [UInt64] {
        guard p.count >= 4 else { throw FrameError("DIGEST without its bucket count") }
        let n = Int(UInt32(p[0]) << 24 | UInt32(p[1]) << 16 | UInt32(p[2]) << 8 | UInt32(p[3]))
        guard n == buckets, p.count == 4 + 8 * n else { throw FrameError("DIGEST of \(n) buckets in \(p.count) bytes") }
        return (0..<n).map { i in p[(4 + 8 * i)..<(12 + 8 * i)].reduce(0) { $0 << 8 | UInt64($1) } }
    }
}

extension UInt32 {
    public var bigEndianBytes4: [UInt8] { [UInt8(self >> 24), UInt8((self >> 16) & 0xff), UInt8((self >> 8) & 0xff), UInt8(self & 0xff)] }
}
