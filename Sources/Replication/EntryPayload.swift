import ConntrackCore
import KernelConntrack
import ReplicationProtocol

/// Entry frame payloads in either format (`FramePayload`): JSON lines, or ctnetlink
/// attributes as dumped (decoded here with the netlink codec, bounds-checked).
enum EntryPayload {
    static func decode(_ p: [UInt8]) throws -> (EventKind, ConntrackEntry, UInt64?) {
        let h = try FramePayload.header(p)
        guard h.netlink else { return try FramePayload.decodeEntryWithTime(p) }
        guard p.count > h.body else { throw FrameError("entry frame without its address family") }
        do {
            let e = try p.withUnsafeBytes { try CtNetlinkCodec.decodeEntry(family: p[h.body], attributes: UnsafeRawBufferPointer(rebasing: $0[(h.body + 1)...])) }
            return (h.event, e, h.observed)
        } catch {
            throw FrameError("entry frame (netlink attributes): \(error)")
        }
    }

    /// An ENTRY_BATCH payload: every record decoded before anything is applied, so a bad
    /// record changes nothing.
    static func decodeBatch(_ p: [UInt8]) throws -> (EventKind, [ConntrackEntry]) {
        let (event, records) = try EntryBatch.records(p)
        let entries = try p.withUnsafeBytes { raw in
            try records.enumerated().map { i, r in
                do {
                    return try CtNetlinkCodec.decodeEntry(family: r.family, attributes: UnsafeRawBufferPointer(rebasing: raw[r.attributes]))
                } catch {
                    throw FrameError("entry batch record \(i + 1) of \(records.count): \(error)")
                }
            }
        }
        return (event, entries)
    }

    /// A 64-bit hash of an entry's record without its timeout value: equal for an entry that
    /// came again unchanged but for the time it has left. (Not Swift's seeded hash: the same
    /// in every process is not needed, but cheap and without allocation is.)
    static func recordHash(family: UInt8, _ a: UnsafeRawBufferPointer, maskingTimeoutAt at: Int?) -> UInt64 {
        var h: UInt64 = 0x9e37_79b9_7f4a_7c15 ^ UInt64(family) ^ UInt64(a.count) << 8
        func mix(_ from: Int, _ to: Int) {
            var i = from
            while i + 8 <= to {
                h = (h ^ a.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0xff51_afd7_ed55_8ccd
                h ^= h >> 32
                i += 8
            }
            while i < to {
                h = (h ^ UInt64(a[i])) &* 0xc4ce_b9fe_1a85_ec53
                i += 1
            }
            h ^= h >> 29
        }
        if let at, at + 4 <= a.count {
            mix(0, at)
            mix(at + 4, a.count)
        } else {
            mix(0, a.count)
        }
        return h == 0 ? 1 : h
    }
}
