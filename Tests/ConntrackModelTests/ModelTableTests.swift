import ConntrackCore
@testable import ConntrackModel
import XCTest

final class ModelTableTests: XCTestCase {
    let s = UInt64(1_000_000_000)
    let o = Tuple(source: IPAddress("198.51.100.2")!, destination: IPAddress("203.0.113.2")!, l4proto: 17,
                  sourcePort: 4000, destinationPort: 53)

    func entry(zone: UInt16 = 0, expires: UInt64) -> ModelEntry {
        ModelEntry(original: o, zone: zone, status: [.confirmed], expires: expires, firstSeen: 0)
    }

    func testBothTuplesFindTheEntryWithTheirDirection() throws {
        var t = ModelTable()
        let id = try XCTUnwrap(t.insert(entry(expires: 30 * s), now: 0))
        XCTAssertEqual(t.lookup(o, zone: 0, now: s)?.id, id)
        XCTAssertEqual(t.lookup(o, zone: 0, now: s)?.direction, .original)
        XCTAssertEqual(t.lookup(o.inverted(), zone: 0, now: s)?.direction, .reply)
        XCTAssertNil(t.lookup(o, zone: 1, now: s), "zones are part of the identity")
        XCTAssertNil(t.insert(entry(expires: 30 * s), now: s), "a live tuple cannot be inserted twice")
        XCTAssertNotNil(t.insert(entry(zone: 1, expires: 30 * s), now: s))
    }

    func testAnExpiredEntryIsGoneAtTheExactInstant() throws {
        var t = ModelTable()
        _ = try XCTUnwrap(t.insert(entry(expires: 30 * s), now: 0))
        XCTAssertNotNil(t.lookup(o, zone: 0, now: 30 * s - 1))
        XCTAssertNil(t.lookup(o, zone: 0, now: 30 * s))
        XCTAssertEqual(t.count, 0)
        XCTAssertNotNil(t.insert(entry(expires: 90 * s), now: 31 * s), "a new flow with the same tuple")
    }

    func testATranslatedReplyTupleIsFoundAndTheInverseIsNot() throws {
        var t = ModelTable()
        let id = try XCTUnwrap(t.insert(entry(expires: 30 * s), now: 0))
        var nat = o.inverted()
        nat.destination = IPAddress("192.0.2.9")!
        nat.destinationPort = 2000
        t.setReply(id, nat)
        XCTAssertEqual(t.lookup(nat, zone: 0, now: 1)?.direction, .reply)
        XCTAssertNil(t.lookup(o.inverted(), zone: 0, now: 1))
        XCTAssertEqual(t.reply(id), nat)
    }

    /// Many inserts and removals in random order keep every probe chain intact.
    func testIndexSurvivesChurn() throws {
        var t = ModelTable(seed: 7)
        var rng = SystemRandomNumberGenerator()
        var live: [UInt16: Int32] = [:]
        for _ in 0..<20_000 {
            let port = UInt16.random(in: 1...3000, using: &rng)
            var tuple = o
            tuple.sourcePort = port
            if let id = live[port] {
                XCTAssertEqual(t.lookup(tuple, zone: 0, now: 0)?.id, id)
                t.remove(id)
                live[port] = nil
                XCTAssertNil(t.lookup(tuple, zone: 0, now: 0))
            } else {
                let id = try XCTUnwrap(t.insert(ModelEntry(original: tuple, zone: 0, status: [], expires: 10 * s, firstSeen: 0), now: 0))
                live[port] = id
            }
        }
        XCTAssertEqual(t.count, live.count)
        for (port, id) in live {
            var tuple = o
            tuple.sourcePort = port
            XCTAssertEqual(t.lookup(tuple.inverted(), zone: 0, now: 0)?.id, id)
        }
    }

    /// An entry stays within three cache lines (the memory budget is 256 bytes per entry).
    func testAnEntryFitsThreeCacheLines() {
        XCTAssertLessThanOrEqual(ModelTable.slotBytes, 192)
        XCTAssertTrue(_isPOD(ModelEntry.self), "entries hold no references")
        // What a lookup reads is in the first cache line, what each packet updates in the second.
        XCTAssertLessThanOrEqual(MemoryLayout<ModelEntry>.offset(of: \.expires)! + 8, 64)
        XCTAssertGreaterThanOrEqual(MemoryLayout<ModelEntry>.offset(of: \.tcp)!, 64)
        XCTAssertLessThanOrEqual(MemoryLayout<ModelEntry>.offset(of: \.tcp)! + MemoryLayout<TCPConnection>.size, 128)
    }
}
