import ConntrackCore
import PacketDecoding

/// How nft's `ct state` would classify a packet (semantics 4, ctinfo).
public enum VerdictKind: UInt8, Sendable {
    case new, established, related, invalid, untracked

    public var name: String {
        switch self {
        case .new: return "NEW"
        case .established: return "ESTABLISHED"
        case .related: return "RELATED"
        case .invalid: return "INVALID"
        case .untracked: return "UNTRACKED"
        }
    }
}

/// The model's answer for one packet.
public struct Verdict: Sendable, Equatable {
    public var kind: VerdictKind
    /// The entry the packet was attached to (nil for invalid/untracked, or a deleted entry).
    public var entry: Int32?
    /// 0 original, 1 reply.
    public var direction: UInt8 = 0
    /// Why the packet was invalid, or why it changed nothing.
    public var reason: InvalidReason?
    public init(kind: VerdictKind, entry: Int32? = nil, direction: UInt8 = 0, reason: InvalidReason? = nil) {
        self.kind = kind; self.entry = entry; self.direction = direction; self.reason = reason
    }
}

/// What the model is unsure about, for the summary: a model that missed packets says so.
public struct TrackerStatistics: Sendable, Equatable {
    public var packets = 0
    public var byVerdict = [Int](repeating: 0, count: 5)
    public var invalidReasons: [InvalidReason: Int] = [:]
    public var created = 0
    /// TCP connections first seen mid-stream (nf_conntrack_tcp_loose pickup): they began
    /// before the capture, or their first packets were not captured.
    public var pickedUp = 0
    /// Peak table size, and whether it came within 5% of nf_conntrack_max (early drop is unpredictable).
    public var peakEntries = 0
    public var nearTableLimit = false
    public var expectationsCreated = 0
    public var natLearnt = 0
    public init() {}
}

/// The tracker: feed it decoded (and reassembled) packets in capture order with their
/// timestamps; it keeps the table the kernel would hold (semantics 3, the pipeline).
/// Pure and deterministic: time comes only from the packets.
public struct Tracker {
    public var table = ModelTable()
    public var expectations = ExpectationTable()
    public let configuration: ModelConfiguration
    public let timeouts: Timeouts
    public var statistics = TrackerStatistics()
    /// Timestamp of the last packet.
    public private(set) var now: UInt64 = 0
    /// Called for every packet with its verdict (for --verdicts and --timeline).
    public var observer: ((Verdict, DecodedPacket, UInt64, ModelEntry?) -> Void)?
    private var gcCursor = 0
    private var gcCountdown = 256

    public init(configuration: ModelConfiguration) {
        self.configuration = configuration
        var t = Timeouts(configuration.sysctls)
        t.kernel612 = configuration.kernel == .v6_12
        timeouts = t
    }

    // MARK: the pipeline

    /// Processes one whole (reassembled) packet. `frame` is the buffer `p`'s offsets point into.
    @discardableResult
    public mutating func process(_ p: DecodedPacket, frame: UnsafeRawBufferPointer, at time: UInt64,
                                 locallyGenerated: Bool = false) -> Verdict {
        if time > now { now = time }
        statistics.packets += 1
        gcCountdown -= 1
        if gcCountdown == 0 {
            gcCountdown = 256
            for id in table.collect(now: now, cursor: &gcCursor, budget: 64) { entryGone(id) }
        }
        let v = classify(p, frame: frame, local: locallyGenerated)
        statistics.byVerdict[Int(v.kind.rawValue)] += 1
        if v.kind == .invalid, let r = v.reason { statistics.invalidReasons[r, default: 0] += 1 }
        if let observer { observer(v, p, time, v.entry.flatMap { table.isLive($0) ? table[$0] : nil }) }
        return v
    }

    mutating func entryGone(_ id: Int32) {
        expectations.removeAll(master: id)
    }

    mutating func delete(_ id: Int32) {
        table.remove(id)
        entryGone(id)
    }

    func zone(for t: Tuple) -> UInt16 {
        for r in configuration.zones where r.match.matches(t) { return r.value }
        return 0
    }

    mutating func classify(_ p: DecodedPacket, frame: UnsafeRawBufferPointer, local: Bool) -> Verdict {
        guard p.hasTransport || !L4Protocol(number: p.l4proto).hasPorts && p.l4proto != 1 && p.l4proto != 58 else {
            return Verdict(kind: .invalid, reason: .noTuple)
        }
        if p.family == .ipv6 && p.l4proto == 59 { return Verdict(kind: .invalid, reason: .noNextHeader) }
        // ip_rcv drops a received IPv4 packet with a bad header checksum before netfilter.
        if !local, p.ipChecksumValid == false { return Verdict(kind: .invalid, reason: .badIPChecksum) }
        let tuple = p.tuple
        let zone = configuration.zones.isEmpty ? 0 : self.zone(for: tuple)
        let checkChecksum = timeouts.checksum && !local

        switch p.l4proto {
        case 1, 58:
            let v6 = p.l4proto == 58
            if checkChecksum, Checksum.verifyTransport(p, in: frame) == false, !Tracker.partialChecksum(p, frame) {
                return Verdict(kind: .invalid, reason: .badChecksum)
            }
            if v6 {
                if [130, 131, 132, 133, 134, 135, 136, 143, 151, 152].contains(p.icmpType) { return Verdict(kind: .untracked) }
                if p.icmpType < 128 { return related(p, zone: zone) }
                if p.icmpType == 137 { return Verdict(kind: .invalid, reason: .icmpType) }
            } else {
                if p.icmpType > 18 { return Verdict(kind: .invalid, reason: .icmpType) }
                if [3, 4, 5, 11, 12].contains(p.icmpType) { return related(p, zone: zone) }
            }
            let hasInverse = v6 ? ICMPTypes.replyType(icmpv6: p.icmpType) != nil : ICMPTypes.replyType(icmp: p.icmpType) != nil
            guard hasInverse else { return Verdict(kind: .invalid, reason: .icmpType) }
        case 17, 136:
            let l4len = p.networkOffset + p.networkLength - p.transportOffset
            guard p.transportOffset + 8 <= frame.count else { return Verdict(kind: .invalid, reason: .noTuple) }
            let field = Int(UInt16(frame[p.transportOffset + 4]) << 8 | UInt16(frame[p.transportOffset + 5]))
            if p.l4proto == 17 {
                if field > l4len || field < 8 { return Verdict(kind: .invalid, reason: .udpLength) }
            } else {
                let sum = UInt16(frame[p.transportOffset + 6]) << 8 | UInt16(frame[p.transportOffset + 7])
                if !(field == 0 || (field >= 8 && field <= l4len)) || sum == 0 { return Verdict(kind: .invalid, reason: .udpliteCoverage) }
            }
            if p.l4proto == 136 {
                if checkChecksum, !Tracker.udpliteChecksumValid(p, frame, coverage: field == 0 ? l4len : field) {
                    return Verdict(kind: .invalid, reason: .badChecksum)
                }
            } else {
                // A zero UDP checksum means "none" to conntrack, over IPv6 too (udp_error).
                let zero = frame[p.transportOffset + 6] == 0 && frame[p.transportOffset + 7] == 0
                if checkChecksum, !zero, Checksum.verifyTransport(p, in: frame) == false, !Tracker.partialChecksum(p, frame) {
                    return Verdict(kind: .invalid, reason: .badChecksum)
                }
            }
        case 6:
            guard let h = p.tcp else { return Verdict(kind: .invalid, reason: .noTuple) }
            if h.headerLength < 20 || p.networkOffset + p.networkLength - p.transportOffset < h.headerLength {
                return Verdict(kind: .invalid, reason: .badHeader)
            }
            if checkChecksum, Checksum.verifyTransport(p, in: frame) == false, !Tracker.partialChecksum(p, frame) {
                return Verdict(kind: .invalid, reason: .badChecksum)
            }
            if !TCPRules.flagsValid(h.flags) { return Verdict(kind: .invalid, reason: .badFlags) }
        case 47:
            if p.greVersion == 1 && p.greKey == nil { return Verdict(kind: .invalid, reason: .greVersion) }
            if p.greVersion > 1 { return Verdict(kind: .invalid, reason: .greVersion) }
        default:
            break
        }
        return track(p, tuple: tuple, zone: zone, frame: frame, attempt: 0)
    }

    /// The checksum field of a packet whose checksum the sender left to the NIC
    /// (CHECKSUM_PARTIAL: veth and local traffic): it holds the folded pseudo-header sum.
    /// The kernel does not verify those, so neither does the model.
    static func partialChecksum(_ p: DecodedPacket, _ frame: UnsafeRawBufferPointer) -> Bool {
        let l4Length = p.networkOffset + p.networkLength - p.transportOffset
        let at: Int
        switch p.l4proto {
        case 6: at = 16
        case 17, 136: at = 6
        case 58: at = 2
        default: return false
        }
        guard p.transportOffset + at + 2 <= frame.count else { return false }
        let field = UInt16(frame[p.transportOffset + at]) << 8 | UInt16(frame[p.transportOffset + at + 1])
        let a = p.networkOffset + (p.family == .ipv4 ? 12 : 8)
        let b = p.networkOffset + (p.family == .ipv4 ? 20 : 40)
        guard b <= frame.count else { return false }
        var s = Checksum.sum(UnsafeRawBufferPointer(rebasing: frame[a..<b]))
        s &+= UInt64(p.l4proto) + UInt64(l4Length)
        return field == Checksum.fold(s)
    }

    /// UDP-Lite as conntrack checks it (udplite_error → nf_checksum_partial): the covered
    /// bytes only, with protocol 17 (UDP), not 136, in the pseudo-header, so a datagram
    /// checksummed as RFC 3828 says is invalid to conntrack (verified on 6.18).
    static func udpliteChecksumValid(_ p: DecodedPacket, _ frame: UnsafeRawBufferPointer, coverage: Int) -> Bool {
        let l4Length = p.networkOffset + p.networkLength - p.transportOffset
        guard coverage <= l4Length, p.transportOffset + coverage <= frame.count else { return false }
        let a = p.networkOffset + (p.family == .ipv4 ? 12 : 8)
        let b = p.networkOffset + (p.family == .ipv4 ? 20 : 40)
        guard b <= frame.count else { return false }
        var s = Checksum.sum(UnsafeRawBufferPointer(rebasing: frame[a..<b]))
        s &+= 17 + UInt64(l4Length)
        let covered = UnsafeRawBufferPointer(rebasing: frame[p.transportOffset..<(p.transportOffset + coverage)])
        return Checksum.fold(Checksum.sum(covered, initial: s)) == 0xffff
    }

    /// ICMP/ICMPv6 errors (2.4): RELATED to the entry the quoted packet belongs to, or invalid.
    /// Nothing in the entry changes.
    mutating func related(_ p: DecodedPacket, zone: UInt16) -> Verdict {
        guard let inner = p.inner else { return Verdict(kind: .invalid, reason: .icmpNoEntry) }
        var t = Tuple(source: inner.source, destination: inner.destination, l4proto: inner.l4proto)
        switch L4Protocol(number: inner.l4proto) {
        case .tcp, .udp, .udplite, .sctp, .dccp:
            guard inner.hasTransport else { return Verdict(kind: .invalid, reason: .icmpNoEntry) }
            t.sourcePort = inner.sourcePort
            t.destinationPort = inner.destinationPort
        case .icmp, .icmpv6:
            guard inner.hasTransport else { return Verdict(kind: .invalid, reason: .icmpNoEntry) }
            t.icmpType = inner.icmpType
            t.icmpCode = inner.icmpCode
            t.icmpID = inner.icmpID
            let v6 = inner.l4proto == 58
            guard (v6 ? ICMPTypes.replyType(icmpv6: inner.icmpType) : ICMPTypes.replyType(icmp: inner.icmpType)) != nil else {
                return Verdict(kind: .invalid, reason: .icmpNoEntry)
            }
        default: break
        }
        guard let (id, dir) = table.lookup(t.inverted(), zone: zone, now: now) else {
            return Verdict(kind: .invalid, reason: .icmpNoEntry)
        }
        let tupleDir = dir == .original ? table[id].original : table.reply(id)
        guard tupleDir.destination == p.destination else { return Verdict(kind: .invalid, reason: .icmpWrongDestination) }
        return Verdict(kind: .related, entry: id, direction: dir.rawValue)
    }

    /// Steps 4–10 of the pipeline: lookup or create, the protocol tracker, confirmation.
    mutating func track(_ p: DecodedPacket, tuple: Tuple, zone: UInt16, frame: UnsafeRawBufferPointer, attempt: Int) -> Verdict {
        let bytes = UInt64(p.networkLength)
        if let (id, d) = table.lookup(tuple, zone: zone, now: now) {
            let dir = d.rawValue
            let status = table[id].status
            let kind: VerdictKind = dir == 1 || status.contains(.seenReply) ? .established
                : (status.contains(.expected) ? .related : .new)
            let result = l4(p, frame: frame, id: id, dir: dir)
            switch result {
            case .invalid(let why):
                return Verdict(kind: .invalid, reason: why)
            case .reopen:
                guard attempt == 0 else { return Verdict(kind: .invalid, reason: .stateTable) }
                delete(id)
                return track(p, tuple: tuple, zone: zone, frame: frame, attempt: 1)
            case .acceptAndDelete:
                count(id, dir: dir, bytes: bytes)
                if dir == 1 { table[id].status.insert(.seenReply) }
                applyMarks(id, tuple: tuple)
                delete(id)
                return Verdict(kind: kind, entry: nil, direction: dir)
            case .ignore(let why):
                if dir == 1 { table[id].status.insert(.seenReply) }
                applyMarks(id, tuple: tuple)
                return Verdict(kind: kind, entry: id, direction: dir, reason: why)
            case .accept(let timeout, let assure):
                if let timeout {
                    if !table[id].status.contains(.fixedTimeout) { table[id].expires = now + timeout }
                    count(id, dir: dir, bytes: bytes)
                }
                if assure { table[id].status.insert(.assured) }
                if dir == 1 { table[id].status.insert(.seenReply) }
                applyMarks(id, tuple: tuple)
                if kind != .related, table[id].options & ModelEntry.Options.extra != 0, table.extras[id]?.helper == "ftp" {
                    if ftp(p, frame: frame, id: id, dir: dir) == false {
                        return Verdict(kind: kind, entry: id, direction: dir, reason: .helperDrop)
                    }
                }
                return Verdict(kind: kind, entry: id, direction: dir)
            }
        }
        return create(p, tuple: tuple, zone: zone, frame: frame)
    }

    /// A packet with no entry: a new, unconfirmed entry, confirmed if the tracker accepts it.
    mutating func create(_ p: DecodedPacket, tuple: Tuple, zone: UInt16, frame: UnsafeRawBufferPointer) -> Verdict {
        let v6 = p.family == .ipv6
        switch p.l4proto {
        case 1, 58:
            guard ICMPTracker.createsEntry(type: p.icmpType, v6: v6) else { return Verdict(kind: .invalid, reason: .icmpType) }
        default: break
        }
        if table.count >= timeouts.maxEntries {
            statistics.nearTableLimit = true
            return Verdict(kind: .invalid, reason: .tableFull)
        }
        if table.count * 20 >= timeouts.maxEntries * 19 { statistics.nearTableLimit = true }

        var status: Status = [.confirmed]
        if configuration.natHooks { status.formUnion([.srcNATDone, .dstNATDone]) }
        var entry = ModelEntry(original: tuple, zone: zone, status: status, expires: now, firstSeen: now)
        if timeouts.accounting { entry.options |= ModelEntry.Options.accounting }
        if timeouts.timestamps { entry.options |= ModelEntry.Options.timestamp }

        var extra = EntryExtra()
        var expected: ModelExpectation?
        if let x = expectations.take(tuple, zone: zone, now: now), table.isLive(x.master) {
            expected = x
            entry.status.insert(.expected)
            extra.master = x.master
            entry.mark = table[x.master].mark
        } else {
            for r in configuration.helpers where r.match.matches(tuple) {
                extra.helper = r.value
                entry.status.insert(.helper)
                extra.ftp = FTPState()
                break
            }
        }

        // The protocol's first-packet rules and its timeout.
        let timeout: UInt64
        switch p.l4proto {
        case 6:
            let h = p.tcp!
            let seg = TCPTracker.Segment(h, payloadLength: tcpPayload(p))
            guard let c = TCPTracker.start(seg, timeouts) else {
                return Verdict(kind: .invalid, reason: TCPRules.index(h.flags) == .ack ? .notNewTCP : .cannotCreate)
            }
            entry.tcp = c
            var conn = c
            let (r, _) = TCPTracker.packet(seg, dir: 0, conn: &conn, status: entry.status, remaining: 0, timeouts)
            guard case .accept(let t?, _) = r else {
                if case .invalid(let why) = r { return Verdict(kind: .invalid, reason: why) }
                return Verdict(kind: .invalid, reason: .cannotCreate)
            }
            entry.tcp = conn
            timeout = t
            if conn.state == .established { statistics.pickedUp += 1 }
        case 17: timeout = timeouts.udp
        case 136: timeout = timeouts.udp
        case 1: timeout = timeouts.icmp
        case 58: timeout = timeouts.icmpv6
        case 47: timeout = timeouts.gre
        case 132:
            var c = SCTPConnection()
            guard let (st, _, _) = SCTPRules.packet(transportBytes(p, frame), dir: 0, conn: &c, isNew: true) else {
                return Verdict(kind: .invalid, reason: .sctpChunks)
            }
            extra.sctp = c
            timeout = timeouts.sctp[Int(st.rawValue)]
        default: timeout = timeouts.generic
        }
        entry.expires = now + timeout
        if entry.options & ModelEntry.Options.accounting != 0 {
            entry.packets.0 = 1
            entry.bytes.0 = UInt64(p.networkLength)
        }
        guard let id = table.insert(entry, now: now) else {
            // Same tuple confirmed meanwhile (a clash): the packet is dropped.
            return Verdict(kind: .invalid, reason: .stateTable)
        }
        if !extra.isEmpty {
            var e = table.extras[id] ?? EntryExtra()
            e.helper = extra.helper; e.master = extra.master; e.ftp = extra.ftp; e.sctp = extra.sctp
            table.extras[id] = e
            table[id].options |= ModelEntry.Options.extra
        }
        statistics.created += 1
        if table.count > statistics.peakEntries { statistics.peakEntries = table.count }
        applyMarks(id, tuple: tuple)
        return Verdict(kind: expected != nil ? .related : .new, entry: id, direction: 0)
    }

    @inline(__always) func tcpPayload(_ p: DecodedPacket) -> Int {
        max(0, p.networkOffset + p.networkLength - p.transportOffset - (p.tcp?.headerLength ?? 20))
    }

    func transportBytes(_ p: DecodedPacket, _ frame: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        let end = min(frame.count, p.networkOffset + p.networkLength)
        guard p.transportOffset <= end else { return UnsafeRawBufferPointer(rebasing: frame[0..<0]) }
        return UnsafeRawBufferPointer(rebasing: frame[p.transportOffset..<end])
    }

    @inline(__always) mutating func count(_ id: Int32, dir: UInt8, bytes: UInt64) {
        guard table[id].options & ModelEntry.Options.accounting != 0 else { return }
        if dir == 0 {
            table[id].packets.0 += 1
            table[id].bytes.0 += bytes
        } else {
            table[id].packets.1 += 1
            table[id].bytes.1 += bytes
        }
    }

    @inline(__always) mutating func applyMarks(_ id: Int32, tuple: Tuple) {
        if !configuration.marks.isEmpty {
            for r in configuration.marks where r.match.matches(tuple) {
                table[id].mark = r.value
                break
            }
        }
        if !configuration.labels.isEmpty {
            for r in configuration.labels where r.match.matches(tuple) {
                var l = table.extras[id]?.labels ?? Labels(low: 0, high: 0)
                l.set(r.value)
                table.extras[id, default: EntryExtra()].labels = l
                table[id].options |= ModelEntry.Options.extra
            }
        }
    }

    /// The protocol tracker for a packet of an existing entry.
    mutating func l4(_ p: DecodedPacket, frame: UnsafeRawBufferPointer, id: Int32, dir: UInt8) -> L4Result {
        let status = table[id].status
        switch p.l4proto {
        case 6:
            let seg = TCPTracker.Segment(p.tcp!, payloadLength: tcpPayload(p))
            let remaining = table[id].expires > now ? table[id].expires - now : 0
            var conn = table[id].tcp
            let (r, lower) = TCPTracker.packet(seg, dir: dir, conn: &conn, status: status, remaining: remaining, timeouts)
            table[id].tcp = conn
            if let lower { table[id].expires = now + lower }
            return r
        case 17, 136:
            return UDPTracker.decide(seenReplyBefore: status.contains(.seenReply), firstPacketAt: table[id].firstSeen,
                                     now: now, lite: p.l4proto == 136, clash: status.contains(.natClash), timeouts)
        case 1, 58:
            // An entry only ever matches request/reply types; the first packet's type decides (6.2).
            return ICMPTracker.decide(v6: p.l4proto == 58, timeouts)
        case 47:
            return GRETracker.decide(seenReplyBefore: status.contains(.seenReply), timeouts)
        case 132:
            var c = table.extras[id]?.sctp ?? SCTPConnection()
            guard let (st, assure, refresh) = SCTPRules.packet(transportBytes(p, frame), dir: dir, conn: &c, isNew: false) else {
                return .invalid(.sctpChunks)
            }
            table.extras[id, default: EntryExtra()].sctp = c
            return .accept(timeout: refresh ? timeouts.sctp[Int(st.rawValue)] : nil, assure: assure)
        default:
            return GenericTracker.decide(timeouts)
        }
    }

    // MARK: FTP

    /// The FTP helper for an accepted packet of an entry that has it. Returns false when
    /// the helper would drop the packet.
    mutating func ftp(_ p: DecodedPacket, frame: UnsafeRawBufferPointer, id: Int32, dir: UInt8) -> Bool {
        guard let h = p.tcp else { return true }
        let len = tcpPayload(p)
        let start = p.transportOffset + h.headerLength
        guard len > 0, start + len <= frame.count else { return true }
        let data = UnsafeRawBufferPointer(rebasing: frame[start..<(start + len)])
        var state = table.extras[id]?.ftp ?? FTPState()
        defer { table.extras[id, default: EntryExtra()].ftp = state }
        let endsInNewline = data[len - 1] == 10
        let nextLine = h.sequence &+ UInt32(len)
        let d = Int(dir)
        guard FTPHelper.startsLine(h.sequence, state, dir: d) else {
            if endsInNewline { FTPHelper.rememberLineStart(nextLine, &state, dir: d) }
            return true
        }
        switch FTPHelper.parse(data, dir: d, family: p.family) {
        case .partial:
            return false
        case .none:
            break
        case .command(let cmd):
            let senderTuple = dir == 0 ? table[id].original : table.reply(id)
            let peerTuple = dir == 0 ? table.reply(id) : table[id].original
            if let a = cmd.address, a != senderTuple.source {
                break     // the helper's `loose` is off: no expectation for another address
            }
            var t = Tuple(source: peerTuple.source, destination: peerTuple.destination, l4proto: 6)
            t.destinationPort = cmd.port
            let x = ModelExpectation(tuple: t, wildcardSourcePort: true, master: id, zone: table[id].zone,
                                     helper: "ftp", created: now, expires: now + 300 * 1_000_000_000, serial: 0)
            if !expectations.add(x, now: now) { return false }
            statistics.expectationsCreated += 1
        }
        if endsInNewline { FTPHelper.rememberLineStart(nextLine, &state, dir: d) }
        return true
    }

    // MARK: NAT learnt from a capture

    /// Records the reply tuple the kernel chose for a new entry, learnt from the outgoing
    /// copy of its first packet (`seen` = that packet's tuple after NAT).
    public mutating func learnTranslation(entry id: Int32, translated seen: Tuple) {
        guard table.isLive(id) else { return }
        let original = table[id].original
        let reply = seen.inverted()
        guard reply != table.reply(id) else { return }
        table.setReply(id, reply)
        if seen.source != original.source || seen.sourcePort != original.sourcePort || seen.icmpID != original.icmpID {
            table[id].status.insert(.srcNAT)
        }
        if seen.destination != original.destination || seen.destinationPort != original.destinationPort {
            table[id].status.insert(.dstNAT)
        }
        statistics.natLearnt += 1
    }

    // MARK: output

    /// How many entries a dump at `time` would show.
    public func liveCount(at time: UInt64) -> Int {
        table.ids.reduce(0) { $0 + (time < table[$1].expires ? 1 : 0) }
    }

    /// The table as a dump at `time` would show it (expired entries hidden, timeouts rounded down).
    public func entries(at time: UInt64) -> [ConntrackEntry] {
        var children: [Int32: UInt32] = [:]
        for (_, x) in table.extras { if let m = x.master, table.isLive(m) { children[m, default: 0] += 1 } }
        return table.ids.compactMap { id -> ConntrackEntry? in
            let m = table[id]
            guard time < m.expires else { return nil }
            return entry(id, m, at: time, use: 1 + (children[id] ?? 0))
        }
    }

    func entry(_ id: Int32, _ m: ModelEntry, at time: UInt64, use: UInt32) -> ConntrackEntry {
        var e = ConntrackEntry(original: m.original, reply: table.reply(id))
        e.status = m.status
        e.timeout = UInt32(clamping: (m.expires - time) / 1_000_000_000)
        e.mark = m.mark
        e.zone = m.zone == 0 ? nil : m.zone
        e.use = use
        e.id = UInt32(truncatingIfNeeded: (UInt64(UInt32(bitPattern: id)) &* 0x9E37_79B1) ^ m.firstSeen)
        switch m.original.l4proto {
        case 6:
            let c = m.tcp
            e.protoInfo = .tcp(TCPInfo(state: c.state.rawValue, windowScaleOriginal: c.original.scale, windowScaleReply: c.reply.scale,
                                       flagsOriginal: TCPFlagsMask(flags: c.original.flags, mask: 0),
                                       flagsReply: TCPFlagsMask(flags: c.reply.flags, mask: 0)))
        case 132:
            let c = table.extras[id]?.sctp ?? SCTPConnection()
            e.protoInfo = .sctp(SCTPInfo(state: c.state.rawValue, vtagOriginal: c.vtag.0, vtagReply: c.vtag.1))
        default: break
        }
        if m.options & ModelEntry.Options.accounting != 0 {
            e.countersOriginal = Counters(packets: m.packets.0, bytes: m.bytes.0)
            e.countersReply = Counters(packets: m.packets.1, bytes: m.bytes.1)
        }
        if m.options & ModelEntry.Options.timestamp != 0 { e.timestampStart = m.firstSeen }
        if let x = table.extras[id] {
            e.helper = x.helper
            e.labels = x.labels
            if let master = x.master, table.isLive(master) { e.master = table[master].original }
        }
        return e
    }

    /// The expectation table at `time`, as `conntrack -L expect` would show it.
    public func expectationList(at time: UInt64) -> [Expectation] {
        expectations.live(now: time).compactMap { x in
            guard table.isLive(x.master) else { return nil }
            var mask = Tuple(source: x.tuple.family == .ipv4 ? .v4(~0) : .v6(~0, ~0),
                             destination: x.tuple.family == .ipv4 ? .v4(~0) : .v6(~0, ~0), l4proto: x.tuple.l4proto)
            mask.sourcePort = x.wildcardSourcePort ? 0 : 0xffff
            mask.destinationPort = 0xffff
            var e = Expectation(master: table[x.master].original, tuple: x.tuple, mask: mask)
            e.timeout = UInt32(clamping: (x.expires - time) / 1_000_000_000)
            e.helper = x.helper
            e.zone = x.zone == 0 ? nil : x.zone
            e.flags = 0
            e.expectClass = 0
            e.id = UInt32(truncatingIfNeeded: x.serial)
            return e
        }
    }
}
