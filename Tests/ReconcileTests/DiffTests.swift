import ConntrackCore
import Reconcile
import XCTest

final class DiffTests: XCTestCase {
    func entry(_ sport: UInt16, proto: UInt8 = 6, zone: UInt16? = nil, mark: UInt32 = 0, state: TCPState = .established,
               status: Status = [.confirmed, .seenReply, .assured], timeout: UInt32 = 431_999) -> ConntrackEntry {
        let o = Tuple(source: IPAddress("198.51.100.2")!, destination: IPAddress("203.0.113.2")!, l4proto: proto,
                      sourcePort: sport, destinationPort: 80)
        var e = ConntrackEntry(original: o, reply: o.inverted())
        e.zone = zone
        e.mark = mark
        e.status = status
        e.timeout = timeout
        if proto == 6 { e.protoInfo = .tcp(TCPInfo(state: state.rawValue)) }
        return e
    }

    let kernel = SideContext(kind: .kernel, name: "kernel")
    let model = SideContext(kind: .model, name: "model")

    func testEqualTablesHaveNoDivergenceWhateverTheOrder() {
        let a = [entry(1), entry(2), entry(3)]
        let r = Differ.diff(a, a.reversed())
        XCTAssertTrue(r.divergences.isEmpty)
        XCTAssertEqual(r.matched, 3)
    }

    func testAnEntryOnOneSideIsNamedWithTheSide() {
        let r = Differ.diff([entry(1), entry(2)], [entry(1)], contextA: model, contextB: kernel)
        XCTAssertEqual(r.divergences.map(\.classes), [[.onlyInA]])
        XCTAssertEqual(r.divergences.first?.cause.code, "gone-from-kernel")
        let back = Differ.diff([entry(1)], [entry(1), entry(2)], contextA: model, contextB: kernel)
        XCTAssertEqual(back.divergences.first?.classes, [.onlyInB])
        XCTAssertEqual(back.divergences.first?.cause.code, "not-in-capture")
    }

    func testEachFieldIsItsOwnClass() {
        var nat = entry(1)
        nat.reply.destination = IPAddress("192.0.2.1")!
        var labelled = entry(1)
        labelled.labels = Labels(bits: [3])
        var helped = entry(1)
        helped.helper = "ftp"
        var counted = entry(1), counted2 = entry(1)
        counted.countersOriginal = Counters(packets: 1, bytes: 60); counted.countersReply = Counters(packets: 0, bytes: 0)
        counted2.countersOriginal = Counters(packets: 2, bytes: 120); counted2.countersReply = Counters(packets: 0, bytes: 0)
        let cases: [(ConntrackEntry, ConntrackEntry, DivergenceClass)] = [
            (entry(1), entry(1, state: .finWait), .tcpState),
            (entry(1), entry(1, status: [.confirmed, .seenReply]), .status),
            (entry(1), entry(1, mark: 7), .mark),
            (entry(1), entry(1, zone: 5), .zone),
            (entry(1), nat, .reply),
            (entry(1), labelled, .labels),
            (entry(1), helped, .helper),
            (counted, counted2, .counters),
            (entry(1), entry(1, timeout: 300), .timeout),
        ]
        for (x, y, k) in cases {
            let r = Differ.diff([x], [y])
            XCTAssertEqual(r.divergences.count, 1, "\(k)")
            XCTAssertEqual(r.divergences.first?.classes.first, k)
            XCTAssertEqual(r.matched, 1, "\(k): a field difference is still one matched pair")
        }
    }

    func testTimeoutsWithinTheToleranceAreEqual() {
        XCTAssertTrue(Differ.diff([entry(1, timeout: 100)], [entry(1, timeout: 102)]).divergences.isEmpty)
        XCTAssertEqual(Differ.diff([entry(1, timeout: 100)], [entry(1, timeout: 103)]).divergences.first?.classes, [.timeout])
    }

    func testIgnoredClassesAreLeftOut() {
        let r = Differ.diff([entry(1)], [entry(1, mark: 7)], options: DiffOptions(ignore: [.mark]))
        XCTAssertTrue(r.divergences.isEmpty)
    }

    func testAModelPacketJudgedInvalidIsNamedByFrame() {
        var m = model
        m.invalidPackets[entry(1).original] = (frame: 42, reason: "SEQ over upper bound")
        let r = Differ.diff([entry(1, state: .established)], [entry(1, state: .close)], contextA: m, contextB: kernel)
        XCTAssertEqual(r.divergences.first?.cause.code, "invalid-packet")
        XCTAssertTrue(r.divergences.first?.cause.text.contains("frame 42") == true)
    }

    func testNATIsMatchedByTheReplyTupleWhenTheOriginalDiffers() {
        // Same connection, but one side saw it before DNAT changed its original destination.
        var x = entry(1), y = entry(1)
        y.original.destination = IPAddress("203.0.113.9")!
        x.reply = y.reply
        let r = Differ.diff([x], [y])
        XCTAssertEqual(r.matched, 1)
        XCTAssertFalse(r.divergences.contains { $0.classes == [.onlyInA] || $0.classes == [.onlyInB] })
    }

    func expectation(_ dport: UInt16, helper: String = "ftp") -> Expectation {
        let t = Tuple(source: IPAddress("203.0.113.2")!, destination: IPAddress("198.51.100.2")!, l4proto: 6,
                      sourcePort: 0, destinationPort: dport)
        var mask = t
        mask.source = IPAddress("255.255.255.255")!; mask.destination = mask.source
        mask.sourcePort = 0; mask.destinationPort = 0xffff
        var x = Expectation(master: entry(21).original, tuple: t, mask: mask)
        x.helper = helper
        x.timeout = 290
        return x
    }

    func testExpectationsAreComparedWhenBothSidesKnowThem() {
        let r = Differ.diff([entry(21)], [entry(21)], contextA: model, contextB: kernel,
                            expectationsA: [expectation(5000)], expectationsB: [expectation(6000)])
        XCTAssertEqual(r.divergences.map(\.classes), [[.expectation], [.expectation]])
        XCTAssertEqual(r.divergences.map(\.cause.code), ["expectation-gone", "helper-config"])
        XCTAssertNotNil(r.divergences[0].expectationA)
        XCTAssertNotNil(r.divergences[1].expectationB)
        let unknown = Differ.diff([entry(21)], [entry(21)], expectationsA: [expectation(5000)], expectationsB: nil)
        XCTAssertTrue(unknown.divergences.isEmpty, "a side that cannot say is not compared")
    }

    func testAMatchedExpectationDiffersByField() {
        let r = Differ.diff([], [], expectationsA: [expectation(5000)], expectationsB: [expectation(5000, helper: "tftp")])
        XCTAssertEqual(r.divergences.first?.cause.text, "the expectation's helper differs")
        let text = DiffFormat.text(r, a: model, b: kernel, color: false)
        XCTAssertTrue(text.contains("a: expect 290 proto=6 src=203.0.113.2"), text)
        XCTAssertTrue(DiffFormat.json(r, a: model, b: kernel).contains("\"expectation_b\":{\"v\":1,\"kind\":\"expectation\""))
    }

    func testACaptureGapIsNamedBeforeAnInvalidPacket() {
        var m = model
        m.invalidPackets[entry(1).original] = (frame: 42, reason: "ACK over upper bound")
        m.captureGaps[entry(1).original] = 42
        let r = Differ.diff([entry(1, state: .established)], [entry(1, state: .close)], contextA: m, contextB: kernel)
        XCTAssertEqual(r.divergences.first?.cause.code, "capture-dropped")
    }

    func testAFullKernelTableExplainsEntriesOnlyTheModelHas() {
        var k = kernel
        k.tableCount = 99
        k.tableMax = 100
        let r = Differ.diff([entry(1)], [], contextA: model, contextB: k)
        XCTAssertEqual(r.divergences.first?.cause.code, "table-full")
        XCTAssertTrue(r.divergences.first?.cause.text.contains("99 of nf_conntrack_max 100") == true)
        k.tableCount = 10
        XCTAssertEqual(Differ.diff([entry(1)], [], contextA: model, contextB: k).divergences.first?.cause.code, "gone-from-kernel")
        k.tableDrops = 3
        XCTAssertEqual(Differ.diff([entry(1)], [], contextA: model, contextB: k).divergences.first?.cause.code, "table-full",
                       "drops counted by the kernel say the same")
    }

    func testAKernelEntryWithoutPacketsWasCreatedByAProgram() {
        var e = entry(1)
        e.countersOriginal = Counters(packets: 0, bytes: 0)
        e.countersReply = Counters(packets: 0, bytes: 0)
        XCTAssertEqual(Differ.diff([], [e], contextA: model, contextB: kernel).divergences.first?.cause.code, "created-by-program")
    }

    func testTheTimeoutSysctlIsNamedByProtocolAndState() {
        XCTAssertEqual(Causes.timeoutSysctl(entry(1, state: .timeWait)), "nf_conntrack_tcp_timeout_time_wait")
        XCTAssertEqual(Causes.timeoutSysctl(entry(1, state: .synSent2)), "nf_conntrack_tcp_timeout_syn_sent")
        XCTAssertEqual(Causes.timeoutSysctl(entry(1, proto: 17, status: [.confirmed])), "nf_conntrack_udp_timeout")
        XCTAssertEqual(Causes.timeoutSysctl(entry(1, proto: 17)), "nf_conntrack_udp_timeout_stream")
        var m = model, k = kernel
        m.sysctls = ["nf_conntrack_udp_timeout_stream": 120]
        k.sysctls = ["nf_conntrack_udp_timeout_stream": 60]
        let r = Differ.diff([entry(1, proto: 17, timeout: 119)], [entry(1, proto: 17, timeout: 59)], contextA: m, contextB: k)
        XCTAssertEqual(r.divergences.first?.cause.text, "nf_conntrack_udp_timeout_stream is 120 on model and 60 on kernel")
    }

    func testSummaryAndJSONNameEveryClass() {
        let r = Differ.diff([entry(1), entry(2, mark: 1)], [entry(2), entry(3)], contextA: model, contextB: kernel)
        XCTAssertEqual(r.byClass.map(\.0), [.onlyInA, .onlyInB, .mark])
        let json = DiffFormat.json(r, a: model, b: kernel)
        XCTAssertTrue(json.hasPrefix("{\"v\":1,\"kind\":\"summary\""))
        XCTAssertEqual(json.split(separator: "\n").count, 4)
        let text = DiffFormat.text(r, a: model, b: kernel, color: false)
        XCTAssertTrue(text.contains("3 divergences"))
        XCTAssertTrue(text.contains("cause: "))
        XCTAssertFalse(text.contains("\u{1b}["), "no colour unless asked")
    }
}

final class SyncPlanTests: XCTestCase {
    func entry(_ sport: UInt16, mark: UInt32 = 0, status: Status = [.confirmed, .seenReply, .assured]) -> ConntrackEntry {
        let o = Tuple(source: IPAddress("192.0.2.1")!, destination: IPAddress("198.51.100.2")!, l4proto: 17,
                      sourcePort: sport, destinationPort: 53)
        var e = ConntrackEntry(original: o, reply: o.inverted())
        e.mark = mark
        e.status = status
        e.timeout = 60
        return e
    }

    func plan(_ source: [ConntrackEntry], _ target: [ConntrackEntry], _ scopes: Set<SyncScope> = Set(SyncScope.allCases)) -> [SyncAction] {
        SyncPlanner.plan(Differ.diff(source, target), scopes: scopes)
    }

    func testMissingStaleAndChangedBecomeCreateDeleteUpdate() {
        let p = plan([entry(1), entry(2, mark: 7)], [entry(2), entry(3)])
        XCTAssertEqual(p.map(\.verb).sorted(), ["create", "delete", "update"])
        guard case .update(let u, let classes)? = p.first(where: { $0.verb == "update" }) else { return XCTFail() }
        XCTAssertEqual(classes, [.mark])
        XCTAssertEqual(u.mark, 7)
        XCTAssertNil(u.timeout, "only what differs is written")
        XCTAssertNil(u.labels)
    }

    func testExpectationsAreCreatedDeletedOrReplaced() {
        let t = Tuple(source: IPAddress("198.51.100.2")!, destination: IPAddress("192.0.2.1")!, l4proto: 6, destinationPort: 5000)
        var x = Expectation(master: entry(21).original, tuple: t, mask: t)
        x.helper = "ftp"
        var y = x
        y.helper = "other"
        let missing = SyncPlanner.plan(Differ.diff([], [], expectationsA: [x], expectationsB: []))
        XCTAssertEqual(missing, [.createExpectation(x)])
        let stale = SyncPlanner.plan(Differ.diff([], [], expectationsA: [], expectationsB: [x]))
        XCTAssertEqual(stale, [.deleteExpectation(x)])
        let changed = SyncPlanner.plan(Differ.diff([], [], expectationsA: [x], expectationsB: [y]))
        XCTAssertEqual(changed, [.deleteExpectation(y), .createExpectation(x)])
    }

    func testOnlyLimitsThePlan() {
        XCTAssertEqual(plan([entry(1)], [entry(3)], [.missing]).map(\.verb), ["create"])
        XCTAssertEqual(plan([entry(1)], [entry(3)], [.stale]).map(\.verb), ["delete"])
    }

    func testWhatCtnetlinkCannotDoIsListedWithTheReason() {
        var expected = entry(4)
        expected.status = [.confirmed, .expected]
        XCTAssertEqual(plan([expected], []).map(\.verb), ["cannot"])
        // A status bit set on the target and not in the source cannot be cleared.
        let p = plan([entry(5, status: [.confirmed])], [entry(5, status: [.confirmed, .seenReply])])
        guard case .cannot(_, _, let why)? = p.first(where: { $0.verb == "cannot" }) else { return XCTFail("\(p)") }
        XCTAssertTrue(why.contains("cannot be cleared"))
        // NAT (the reply tuple) can only be set by creating the entry again.
        var nat = entry(6)
        nat.reply.destination = IPAddress("203.0.113.9")!
        XCTAssertEqual(plan([nat], [entry(6)]).map(\.verb), ["recreate"])
    }
}

final class DivergenceWatchTests: XCTestCase {
    let s: UInt64 = 1_000_000_000
    func report(_ d: [Divergence]) -> DiffReport { DiffReport(divergences: d, matched: 0, countA: 0, countB: 0) }
    func gone(_ sport: UInt16) -> Divergence {
        let o = Tuple(source: IPAddress("192.0.2.1")!, destination: IPAddress("192.0.2.2")!, l4proto: 17, sourcePort: sport, destinationPort: 53)
        return Divergence(a: ConntrackEntry(original: o, reply: o.inverted()), b: nil, classes: [.onlyInA], cause: Cause("x", "x"))
    }

    func testADivergenceShorterThanTheGraceIsNeverReported() {
        var w = DivergenceWatch(grace: 2 * s)
        XCTAssertEqual(w.update(report([gone(1)]), at: 10 * s), [])
        XCTAssertEqual(w.update(report([gone(1)]), at: 11 * s), [])
        XCTAssertEqual(w.update(report([]), at: 12 * s), [], "ended inside the grace period: no alarm, no resolution")
        XCTAssertEqual(w.appearedTotal, 0)
    }

    func testALastingDivergenceIsReportedOnceThenResolved() {
        var w = DivergenceWatch(grace: 2 * s)
        _ = w.update(report([gone(1)]), at: 10 * s)
        XCTAssertEqual(w.update(report([gone(1)]), at: 12 * s), [.appeared(gone(1), since: 10 * s)])
        XCTAssertEqual(w.update(report([gone(1)]), at: 13 * s), [], "reported once")
        XCTAssertEqual(w.currentByClass[.onlyInA], 1)
        XCTAssertEqual(w.update(report([]), at: 15 * s), [.resolved(gone(1), lasted: 5 * s)])
        XCTAssertEqual(w.currentByClass[.onlyInA], nil)
        let text = WatchMetrics.render(w, WatchMetrics.Gauges())
        XCTAssertTrue(text.contains("ctsync_divergences_resolved_total 1\n"), text)
        XCTAssertTrue(text.contains("# TYPE ctsync_divergences gauge\n"), text)
    }
}
