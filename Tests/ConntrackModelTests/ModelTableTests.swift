import ConntrackCore
import ConntrackModel
import XCTest

final class ModelTableTests: XCTestCase {
    let s = UInt64(1_000_000_000)

    func entry(zone: UInt16? = nil) -> ConntrackEntry {
        let o = Tuple(source: IPAddress("198.51.100.2")!, destination: IPAddress("203.0.113.2")!, l4proto: 17,
                      sourcePort: 4000, destinationPort: 53)
        var e = ConntrackEntry(original: o, reply: o.inverted())
        e.zone = zone
        return e
    }

    func testBothTuplesFindTheEntryWithTheirDirection() throws {
        var t = ModelTable()
        let e = entry()
        let id = try XCTUnwrap(t.insert(e, zone: 0, expires: 30 * s, firstSeen: 0, now: 0))
        XCTAssertEqual(t.lookup(e.original, zone: 0, now: s)?.id, id)
        XCTAssertEqual(t.lookup(e.original, zone: 0, now: s)?.direction, .original)
        XCTAssertEqual(t.lookup(e.reply, zone: 0, now: s)?.direction, .reply)
        XCTAssertNil(t.lookup(e.original, zone: 1, now: s), "zones are part of the identity")
        XCTAssertNil(t.insert(e, zone: 0, expires: 30 * s, firstSeen: 0, now: s), "a live tuple cannot be inserted twice")
        XCTAssertNotNil(t.insert(entry(zone: 1), zone: 1, expires: 30 * s, firstSeen: 0, now: s))
    }

    func testExpiryAndDisplayedTimeoutRoundDown() throws {
        var t = ModelTable()
        let e = entry()
        _ = try XCTUnwrap(t.insert(e, zone: 0, expires: 30 * s, firstSeen: 0, now: 0))
        // Right after a 30 s refresh a dump shows 29 (semantics 7.2).
        XCTAssertEqual(t.snapshot(now: 1).first?.timeout, 29)
        XCTAssertEqual(t.snapshot(now: 10 * s).first?.timeout, 20)
        // Gone at the expiry instant, and a lookup then finds nothing.
        XCTAssertTrue(t.snapshot(now: 30 * s).isEmpty)
        XCTAssertNil(t.lookup(e.original, zone: 0, now: 30 * s))
        XCTAssertEqual(t.count, 0)
        XCTAssertNotNil(t.insert(e, zone: 0, expires: 90 * s, firstSeen: 31 * s, now: 31 * s), "a new flow with the same tuple")
    }
}
