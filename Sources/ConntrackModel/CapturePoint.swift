import ConntrackCore
import PacketDecoding

/// What a feeder did with frames other than tracking them once.
public struct FeedCounts: Sendable, Equatable {
    /// Frames not decoded, by reason (ARP and other non-IP frames included).
    public var skipped: [SkipReason: Int] = [:]
    /// Cooked-capture frames for another host (they never reach IP).
    public var otherHost = 0
    /// Outgoing copies of forwarded packets (not tracked again; NAT learnt from them).
    public var forwardedCopies = 0
    /// Received loopback echoes of locally sent packets (tracked once, when sent).
    public var loopbackCopies = 0
    public init() {}

    public mutating func add(_ o: FeedCounts) {
        skipped.merge(o.skipped, uniquingKeysWith: +)
        otherHost += o.otherHost
        forwardedCopies += o.forwardedCopies
        loopbackCopies += o.loopbackCopies
    }
}

/// Feeds frames of one capture to a `Tracker` the way the captured host's conntrack saw
/// them (kernel-conntrack-semantics.md sections 9 and 10; docs/capture-points.md):
///
/// - fragments are reassembled first; the tracker gets the whole datagram at the time its
///   last fragment arrived;
/// - a capture on one interface (Ethernet, raw IP, …) feeds every packet once;
/// - a Linux cooked capture (`-i any`, LINUX_SLL/SLL2) says which frames were received and
///   which were sent. Received frames are tracked. A sent frame that is the forwarded copy
///   of a frame just received is not tracked again: if that frame created an entry, the
///   copy shows the addresses after NAT, i.e. the reply tuple the kernel chose. Any other
///   sent frame was generated locally and is tracked (without a checksum check). A received
///   frame that is the loopback echo of a frame just sent is skipped (loopback is tracked once).
///   Frames for other hosts (PACKET_OTHERHOST) never reach IP and are skipped.
public struct CaptureFeeder {
    public var tracker: Tracker
    let decoder: PacketDecoder
    let cooked: Bool
    var packet = DecodedPacket()
    let defragIn = Defragmenter()
    let defragOut = Defragmenter()

    /// Recently received (forwarded candidates) and recently sent frames, by fingerprint.
    struct Recent { var fingerprint: UInt64; var time: UInt64; var entry: Int32?; var created: Bool }
    var received: [Recent] = []
    var sent: [Recent] = []
    /// How long after its received copy a forwarded packet may leave: neighbour resolution
    /// holds the first packets to a new next hop for up to 3 s (3 probes, 1 s apart).
    static let window: UInt64 = 5_000_000_000
    static let keep = 256

    public private(set) var counts = FeedCounts()

    public init(tracker: Tracker, linkType: Int32) {
        self.tracker = tracker
        decoder = PacketDecoder(linkType: linkType)
        cooked = linkType == LinkType.linuxSLL.rawValue || linkType == LinkType.linuxSLL2.rawValue
    }

    /// Feeds one captured frame.
    public mutating func feed(_ frame: UnsafeRawBufferPointer, originalLength: Int, at time: UInt64) {
        if let skip = decoder.decode(frame, originalLength: originalLength, into: &packet) {
            counts.skipped[skip, default: 0] += 1
            return
        }
        let type = cooked ? packet.link.packetType.flatMap(SLLPacketType.init(rawValue:)) : nil
        if type == .otherHost { counts.otherHost += 1; return }
        let outgoing = type == .outgoing
        if packet.fragment != nil {
            let outcome = (outgoing ? defragOut : defragIn).add(packet, frame: frame, at: time)
            guard case .reassembled(let whole) = outcome else { return }
            whole.withUnsafeBytes { buf in
                var p = DecodedPacket()
                guard PacketDecoder(linkType: LinkType.raw.rawValue).decode(buf, into: &p) == nil else { return }
                p.link = packet.link
                if cooked { handle(p, buf, time: time, outgoing: outgoing) } else { tracker.process(p, frame: buf, at: time) }
            }
            return
        }
        if !cooked {
            tracker.process(packet, frame: frame, at: time)
            return
        }
        let p = packet
        handle(p, frame, time: time, outgoing: outgoing)
    }

    /// A Linux cooked frame (or its reassembled datagram): the capture-point rules.
    mutating func handle(_ p: DecodedPacket, _ frame: UnsafeRawBufferPointer, time: UInt64, outgoing: Bool) {
        let fp = CaptureFeeder.fingerprint(p, frame)
        if outgoing {
            if let i = received.lastIndex(where: { $0.fingerprint == fp && time &- $0.time <= CaptureFeeder.window }) {
                let r = received.remove(at: i)
                counts.forwardedCopies += 1
                if r.created, let id = r.entry { tracker.learnTranslation(entry: id, translated: p.tuple) }
                return
            }
            let v = tracker.process(p, frame: frame, at: time, locallyGenerated: true)
            CaptureFeeder.remember(&sent, Recent(fingerprint: fp, time: time, entry: v.entry, created: v.kind == .new))
        } else {
            if let i = sent.lastIndex(where: { $0.fingerprint == fp && time &- $0.time <= CaptureFeeder.window }) {
                sent.remove(at: i)
                counts.loopbackCopies += 1
                return
            }
            let before = tracker.statistics.created
            let v = tracker.process(p, frame: frame, at: time)
            CaptureFeeder.remember(&received, Recent(fingerprint: fp, time: time, entry: v.entry, created: tracker.statistics.created > before))
        }
    }

    static func remember(_ list: inout [Recent], _ r: Recent) {
        if list.count >= CaptureFeeder.keep { list.removeFirst(list.count / 2) }
        list.append(r)
    }

    /// What stays the same when a router forwards (and NATs) a packet: IP length, IPv4 id,
    /// protocol, TCP sequence/ack/flags, ICMP sequence, and the first payload bytes.
    static func fingerprint(_ p: DecodedPacket, _ frame: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = UInt64(p.l4proto) << 56 ^ UInt64(p.networkLength) << 32 ^ (p.family == .ipv6 ? 1 << 55 : 0)
        func mix(_ v: UInt64) { h = (h ^ v) &* 0x9FB2_1C65_1E98_DF25; h ^= h >> 31 }
        if p.family == .ipv4, p.networkOffset + 6 <= frame.count {
            mix(UInt64(frame[p.networkOffset + 4]) << 8 | UInt64(frame[p.networkOffset + 5]))
        }
        if let t = p.tcp { mix(UInt64(t.sequence) << 32 | UInt64(t.acknowledgement)); mix(UInt64(t.flags)) }
        if p.l4proto == 1 || p.l4proto == 58, p.transportOffset + 8 <= frame.count {
            mix(UInt64(frame[p.transportOffset]) << 16 | UInt64(frame[p.transportOffset + 6]) << 8 | UInt64(frame[p.transportOffset + 7]))
        }
        let start = p.payloadOffset
        let end = min(frame.count, start + min(p.payloadLength, 16))
        if start >= 0 && start < end {
            for b in frame[start..<end] { mix(UInt64(b)) }
        }
        return h
    }
}
