import ConntrackCore

/// Reassembles IPv4 and IPv6 fragments the way nf_defrag_ipv4/ipv6 do before conntrack
/// sees a packet (kernel-conntrack-semantics.md section 9): the tracker gets exactly one
/// whole datagram, at the time its last missing fragment arrived; incomplete datagrams
/// never reach it.
///
/// - Queues are keyed by (family, source, destination, identification) plus the protocol
///   for IPv4, as ip_defrag and nf_ct_frag6 do.
/// - A fragment that overlaps another (other than an exact duplicate, which is ignored)
///   discards the whole datagram (RFC 5722; Linux does the same for IPv4).
/// - A queue expires `timeout` after its first fragment (ipfrag_time 30 s for IPv4,
///   nf_conntrack_frag6_timeout 60 s for IPv6), and queued bytes are capped like the
///   kernel's high threshold (4 MiB): past it new fragments are dropped.
///
/// Only fragments allocate (rare); whole packets pass through untouched.
public final class Defragmenter {
    public enum Outcome: Equatable {
        /// Held until the datagram is complete.
        case held
        /// The whole datagram, as raw IP (decode it with link type RAW).
        case reassembled([UInt8])
        /// The fragment (and for overlaps its datagram) was thrown away.
        case dropped(DropReason)
    }

    public enum DropReason: String, Sendable, CaseIterable {
        case overlap = "overlapping fragments"
        case tooLarge = "reassembled datagram over 65535 bytes"
        case memoryLimit = "fragment memory limit reached"
        case malformed = "malformed fragment"
    }

    struct Key: Hashable {
        var family: UInt8
        var source: IPAddress
        var destination: IPAddress
        var identification: UInt32
        var proto: UInt8
    }

    struct Piece {
        var offset: Int
        var bytes: [UInt8]
        var end: Int { offset + bytes.count }
    }

    struct Queue {
        var created: UInt64
        var pieces: [Piece] = []
        /// Total length of the data once the last fragment (MF = 0) has been seen.
        var totalLength: Int?
        /// The first fragment's IP header (IPv6: up to the fragment header), for the result.
        var header: [UInt8]?
        var nextHeader: UInt8 = 0
        var bytes: Int = 0
    }

    public let ipv4Timeout: UInt64
    public let ipv6Timeout: UInt64
    public let memoryLimit: Int
    private var queues: [Key: Queue] = [:]
    private var queuedBytes = 0
    public private(set) var expired = 0

    public init(ipv4TimeoutSeconds: UInt64 = 30, ipv6TimeoutSeconds: UInt64 = 60, memoryLimit: Int = 4 << 20) {
        ipv4Timeout = ipv4TimeoutSeconds * 1_000_000_000
        ipv6Timeout = ipv6TimeoutSeconds * 1_000_000_000
        self.memoryLimit = memoryLimit
    }

    public var pendingDatagrams: Int { queues.count }

    /// Feeds one decoded fragment (`p.fragment != nil`) with the frame it came from.
    public func add(_ p: DecodedPacket, frame: UnsafeRawBufferPointer, at timestamp: UInt64) -> Outcome {
        expire(now: timestamp)
        guard let frag = p.fragment else { return .dropped(.malformed) }
        let key = Key(family: p.family.rawValue, source: p.source, destination: p.destination,
                      identification: frag.identification, proto: p.family == .ipv4 ? p.l4proto : 0)
        // The fragment's data: after the IP header (IPv4) or the fragment header (IPv6).
        // IPv6: the fragmentable part starts right after the fragment header, even when
        // more extension headers follow it (they belong to the reassembled payload).
        let dataStart = p.family == .ipv4 ? p.networkOffset + Int(frame[p.networkOffset] & 0x0f) * 4
            : p.fragmentHeaderOffset + 8
        guard dataStart <= frame.count else { return .dropped(.malformed) }
        let dataEnd = min(p.networkOffset + p.networkLength, frame.count)
        guard dataStart <= dataEnd else { return .dropped(.malformed) }
        let data = Array(frame[dataStart..<dataEnd])
        let end = frag.offset + data.count
        guard end <= 65535 else { queues[key] = nil; return .dropped(.tooLarge) }
        // Non-last fragments carry a multiple of 8 bytes (the kernel drops others).
        if frag.moreFragments && data.count % 8 != 0 { return .dropped(.malformed) }
        guard queuedBytes + data.count <= memoryLimit else { return .dropped(.memoryLimit) }

        var q = queues[key] ?? Queue(created: timestamp)
        if !frag.moreFragments {
            if let t = q.totalLength, t != end { drop(key); return .dropped(.overlap) }
            q.totalLength = end
        }
        for piece in q.pieces where frag.offset < piece.end && piece.offset < end {
            if piece.offset == frag.offset && piece.end == end { return .held }   // exact duplicate
            drop(key)
            return .dropped(.overlap)
        }
        if let t = q.totalLength, end > t { drop(key); return .dropped(.overlap) }
        if frag.offset == 0 {
            q.header = Array(frame[p.networkOffset..<dataStart])
            q.nextHeader = p.family == .ipv4 ? p.l4proto : frame[p.fragmentHeaderOffset]
        }
        q.pieces.append(Piece(offset: frag.offset, bytes: data))
        q.bytes += data.count
        queuedBytes += data.count

        if let total = q.totalLength, let header = q.header, covers(q.pieces, total) {
            queues[key] = nil
            queuedBytes -= q.bytes
            return .reassembled(assemble(header: header, pieces: q.pieces, total: total,
                                         family: p.family, nextHeader: q.nextHeader))
        }
        queues[key] = q
        return .held
    }

    func covers(_ pieces: [Piece], _ total: Int) -> Bool {
        var reached = 0
        for piece in pieces.sorted(by: { $0.offset < $1.offset }) {
            if piece.offset > reached { return false }
            reached = max(reached, piece.end)
        }
        return reached >= total
    }

    func assemble(header: [UInt8], pieces: [Piece], total: Int, family: AddressFamily, nextHeader: UInt8) -> [UInt8] {
        var out = header
        if family == .ipv4 {
            let length = header.count + total
            out[2] = UInt8(length >> 8); out[3] = UInt8(length & 0xff)
            out[6] = 0; out[7] = 0                       // no more fragments, offset 0
            out[10] = 0; out[11] = 0
            var s: UInt32 = 0
            for i in stride(from: 0, to: header.count, by: 2) { s += UInt32(out[i]) << 8 | UInt32(out[i + 1]) }
            while s >> 16 != 0 { s = (s & 0xffff) + (s >> 16) }
            let c = ~UInt16(s)
            out[10] = UInt8(c >> 8); out[11] = UInt8(c & 0xff)
        } else {
            // Drop the fragment header (the last 8 bytes of `header`) and point its
            // predecessor's next-header field at the upper layer.
            out.removeLast(8)
            setNextHeader(&out, to: nextHeader)
            let payload = out.count - 40 + total
            out[4] = UInt8(payload >> 8); out[5] = UInt8(payload & 0xff)
        }
        let start = out.count
        out += [UInt8](repeating: 0, count: total)
        for piece in pieces { out.replaceSubrange((start + piece.offset)..<(start + piece.end), with: piece.bytes) }
        return out
    }

    /// Rewrites the next-header field that pointed at the fragment header (44).
    func setNextHeader(_ h: inout [UInt8], to value: UInt8) {
        var field = 6, off = 40
        while off < h.count {
            guard off + 2 <= h.count else { break }
            field = off
            off += (Int(h[off + 1]) + 1) * 8
        }
        h[field] = value
    }

    func drop(_ key: Key) {
        if let q = queues.removeValue(forKey: key) { queuedBytes -= q.bytes }
    }

    /// Forgets datagrams whose time ran out.
    public func expire(now: UInt64) {
        guard !queues.isEmpty else { return }
        for (key, q) in queues {
            let limit = key.family == AddressFamily.ipv4.rawValue ? ipv4Timeout : ipv6Timeout
            if now >= q.created && now - q.created > limit {
                drop(key)
                expired += 1
            }
        }
    }
}
