import ConntrackCore
@testable import KernelConntrack
@testable import Replication
import ReplicationProtocol
import XCTest

/// Netlink attributes of an entry, as the kernel would dump them (the fields these tests need).
func attributes(_ e: ConntrackEntry) -> [UInt8] { CtNetlinkCodec.encodeEntryAttributes(e) }

func entry(port: UInt16, timeout: UInt32? = 120, mark: UInt32? = nil) -> ConntrackEntry {
    let o = Tuple(source: IPAddress("192.0.2.1")!, destination: IPAddress("198.51.100.7")!, l4proto: 17,
                  sourcePort: port, destinationPort: 53)
    var e = ConntrackEntry(original: o, reply: o.inverted())
    e.status = [.seenReply, .confirmed]
    e.timeout = timeout
    e.mark = mark
    return e
}

final class CopyTests: XCTestCase {
    let second: UInt64 = 1_000_000_000

    func change(_ e: ConntrackEntry, recorded: UInt64) -> Change {
        attributes(e).withUnsafeBytes { ActiveNode.change(e, family: 2, attributes: $0, at: recorded) }
    }

    /// What a standby decodes from the copy re-sent at `now` (nil: left out).
    func resent(_ copy: SentCopy, now: UInt64) throws -> [ConntrackEntry] {
        var batch = EntryBatch(event: .new)
        var cursor = RecordArena.Cursor()
        _ = copy.arena.forEachLive(from: &cursor, limit: .max) { slot in
            let r = slot.record
            let timeout = slot.timeoutOffset.map { at in (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(r[at + $1]) } }
            guard let left = ActiveNode.timeoutLeft(timeout, recorded: slot.recorded, now: now) else { return }
            let at = batch.append(family: r[0], attributes: UnsafeRawBufferPointer(rebasing: r[1...]))
            if let left, let t = slot.timeoutOffset { batch.setUInt32(left, at: at + t - 1) }
        }
        return try EntryPayload.decodeBatch(batch.payload).1
    }

    func copy(_ entries: [ConntrackEntry], recorded: UInt64) -> SentCopy {
        var c = SentCopy()
        for e in entries { c.put(EntryKey(e), change(e, recorded: recorded)) }
        return c
    }

    func testTheCopyGivesBackTheEntriesItWasGiven() throws {
        let es = [entry(port: 1000, mark: 7), entry(port: 1001, timeout: nil)]
        XCTAssertEqual(Set(try resent(copy(es, recorded: 50 * second), now: 50 * second).map(\.original.sourcePort)), [1000, 1001])
        XCTAssertEqual(try resent(copy(es, recorded: 50 * second), now: 50 * second).sorted { $0.original.sourcePort < $1.original.sourcePort }, es)
    }

    func testAReSentCopyHasItsTimeoutShortenedByTheTimeSince() throws {
        let c = copy([entry(port: 1000, timeout: 100)], recorded: 10 * second)
        XCTAssertEqual(try resent(c, now: 40 * second + 5).first?.timeout, 70)
    }

    func testAnEntryWhoseTimeoutRanOutIsLeftOut() throws {
        XCTAssertEqual(try resent(copy([entry(port: 1000, timeout: 20)], recorded: 10 * second), now: 40 * second), [])
    }

    func testAReplacedOrRemovedEntryIsNoLongerInTheCopy() throws {
        var c = copy([entry(port: 1), entry(port: 2)], recorded: 0)
        c.put(EntryKey(entry(port: 1)), change(entry(port: 1, mark: 9), recorded: 0))
        c.put(EntryKey(entry(port: 2)), nil)
        XCTAssertEqual(try resent(c, now: 0), [entry(port: 1, mark: 9)])
        XCTAssertEqual(c.count, 1)
    }

    func testARenewedTimeoutIsWhatAReSendStartsFrom() throws {
        var c = copy([entry(port: 1, timeout: 30)], recorded: 0)
        c.renew(EntryKey(entry(port: 1)), timeout: 120, recorded: 20 * second)
        XCTAssertEqual(try resent(c, now: 30 * second).first?.timeout, 110)
    }

    func testCompactionKeepsEveryLiveEntry() throws {
        // 200000 updates of 1000 entries (about 28 MiB of slots) leave far more dead slots
        // than live ones: chunks are compacted as it goes, and the copy still holds exactly
        // the last version of each.
        var c = SentCopy()
        for round in 0..<200 {
            for p in 0..<1000 { c.put(EntryKey(entry(port: UInt16(p))), change(entry(port: UInt16(p), mark: UInt32(round)), recorded: 0)) }
        }
        XCTAssertLessThan(c.arena.usedBytes, 7 << 20)
        let got = try resent(c, now: 0)
        XCTAssertEqual(got.count, 1000)
        XCTAssertEqual(Set(got.map(\.mark)), [199])
        XCTAssertEqual(Set(got.map(\.original.sourcePort)).count, 1000)
    }

    func testAnEntryKeptAliveByTrafficIsSentAgainBeforeTheStandbysCopyRunsOut() {
        let old = SentCopy.deadline(120, 0)                      // runs out at 120 s
        let fresh = SentCopy.deadline(118, 100 * second)         // the kernel: 218 s
        XCTAssertTrue(ActiveNode.needsRenewal(old, fresh, now: 100 * second, horizon: 30 * second))
        XCTAssertFalse(ActiveNode.needsRenewal(old, fresh, now: 50 * second, horizon: 30 * second), "not yet near its end")
    }

    func testAnEntryCountingDownIsNotSentAgain() {
        let old = SentCopy.deadline(120, 0)
        let fresh = SentCopy.deadline(20, 100 * second + second / 2)   // rounding: 120.5 s
        XCTAssertFalse(ActiveNode.needsRenewal(old, fresh, now: 100 * second, horizon: 30 * second))
    }
}

final class ExternalCacheTests: XCTestCase {
    func testABulkTransferReplacesWhatItDidNotDeliver() {
        let c = ExternalCache()
        for p in [1, 2, 3] as [UInt16] { c.apply(.new, entry(port: p)) }
        c.beginBulk()
        c.apply(.new, [entry(port: 2, mark: 9), entry(port: 4)])
        XCTAssertEqual(c.count, 4, "until the transfer ends, the previous copy stays")
        c.endBulk()
        XCTAssertEqual(Set(c.contents().entries.map { $0.original.sourcePort }), [2, 4])
        XCTAssertEqual(c.contents().entries.first { $0.original.sourcePort == 2 }?.mark, 9)
    }

    func testABucketRepairReplacesOnlyItsBucket() {
        let c = ExternalCache()
        let all = (1...40).map { entry(port: UInt16($0)) }
        c.apply(.new, all)
        let b = TableDigest.bucket(zone: nil, tuple: all[0].original)
        let inBucket = all.filter { TableDigest.bucket(zone: nil, tuple: $0.original) == b }
        c.beginBulk(bucket: b)
        c.endBulk()                              // the bucket is empty on the active node now
        XCTAssertEqual(c.count, all.count - inBucket.count)
        XCTAssertEqual(c.bucketsRepaired, 1)
    }

    func testAnAbandonedBulkTransferRemovesNothing() {
        let c = ExternalCache()
        for p in [1, 2] as [UInt16] { c.apply(.new, entry(port: p)) }
        c.beginBulk()
        c.apply(.new, [entry(port: 3)])
        c.abandonBulk()
        XCTAssertEqual(c.count, 3)
        XCTAssertFalse(c.inBulk)
        XCTAssertEqual(c.bulksCompleted, 0)
    }

    func testADestroyRemovesAtOnce() {
        let c = ExternalCache()
        c.apply(.new, entry(port: 1))
        c.apply(.destroy, entry(port: 1))
        XCTAssertEqual(c.count, 0)
    }
}

final class ShardedTableTests: XCTestCase {
    func testItHoldsWhatADictionaryHolds() {
        var t = ShardedTable<Int>()
        var d: [EntryKey: Int] = [:]
        for i in 0..<5000 {
            let k = EntryKey(entry(port: UInt16(i % 3000)))
            if i % 7 == 0 { t[k] = nil; d[k] = nil } else { t[k] = i; d[k] = i }
        }
        XCTAssertEqual(t.count, d.count)
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: t.map { ($0.key, $0.value) }), d)
        t.removeAll { _, v in v % 2 == 0 }
        XCTAssertEqual(t.count, d.values.filter { $0 % 2 == 1 }.count)
    }

    func testAWalkInStepsSeesEveryEntryOnce() {
        var t = ShardedTable<Int>()
        for i in 0..<1000 { t[EntryKey(entry(port: UInt16(i)))] = i }
        var p = ShardedTable<Int>.Position()
        var seen: [Int] = []
        while let (_, v) = t.next(after: &p) { seen.append(v) }
        XCTAssertEqual(seen.sorted(), Array(0..<1000))
        XCTAssertGreaterThan(Set((0..<1000).map { ShardedTable<Int>.shard(EntryKey(entry(port: UInt16($0)))) }).count, 60,
                             "keys spread over the shards")
    }
}

final class StandbyBatchTests: XCTestCase {
    func batch(_ entries: [ConntrackEntry], corrupt: Bool = false) -> [UInt8] {
        var b = EntryBatch(event: .new)
        var last = 0
        for e in entries { last = attributes(e).withUnsafeBytes { b.append(family: 2, attributes: $0) } }
        var p = b.payload
        if corrupt { p[last] = 0xff; p[last + 1] = 0x7f }   // the last record's first attribute overruns it
        return p
    }

    func testAnEntryThatComesAgainUnchangedTakesOnlyItsNewTimeout() throws {
        let node = StandbyNode(psk: [1, 2, 3], name: "test")
        try node.applyBatch(batch([entry(port: 1, timeout: 100), entry(port: 2, timeout: 100)]), at: 1)
        try node.applyBatch(batch([entry(port: 1, timeout: 40), entry(port: 2, timeout: 40, mark: 5)]), at: 2)
        let got = Dictionary(uniqueKeysWithValues: node.cache.contents(at: 2).entries.map { ($0.original.sourcePort, $0) })
        XCTAssertEqual(got[1], entry(port: 1, timeout: 40))
        XCTAssertEqual(got[2], entry(port: 2, timeout: 40, mark: 5), "a changed entry is decoded and replaced")
    }

    func testABatchWithABadRecordChangesNothing() throws {
        let node = StandbyNode(psk: [1, 2, 3], name: "test")
        try node.applyBatch(batch([entry(port: 1, timeout: 100)]), at: 1)
        XCTAssertThrowsError(try node.applyBatch(batch([entry(port: 1, timeout: 50), entry(port: 3)], corrupt: true), at: 2))
        XCTAssertEqual(node.cache.contents(at: 1).entries, [entry(port: 1, timeout: 100)])
    }
}
