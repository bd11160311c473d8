import ConntrackCore
@testable import ConntrackModel
import XCTest

/// The per-protocol rules against the cases kernel-conntrack-semantics.md records (LIVE on 6.18).
final class TCPRulesTests: XCTestCase {
    func state(_ s: TCPState, _ flags: UInt8, reply: Bool) -> TCPRules.Outcome {
        TCPRules.next(from: s, index: TCPRules.index(flags), reply: reply)
    }

    func testHandshakeAndTeardownWalkThrough() {
        // 5.11: SYN, SYN/ACK, ACK, data, ACK, FIN, ACK, FIN, ACK.
        var s = TCPState.none
        let steps: [(UInt8, Bool, TCPState)] = [
            (0x02, false, .synSent), (0x12, true, .synRecv), (0x10, false, .established), (0x18, false, .established),
            (0x10, true, .established), (0x11, false, .finWait), (0x10, true, .closeWait), (0x11, true, .lastAck),
            (0x10, false, .timeWait),
        ]
        for (flags, reply, expected) in steps {
            guard case .state(let next) = state(s, flags, reply: reply) else { return XCTFail("\(flags) from \(s)") }
            XCTAssertEqual(next, expected, "flags 0x\(String(flags, radix: 16)) reply=\(reply) from \(s)")
            s = next
        }
    }

    func testFirstPacketsThatCreateNothing() {
        // SYN/ACK, RST and bare FIN (invalid flags anyway) cannot start an entry.
        XCTAssertEqual(state(.none, 0x12, reply: false), .invalid)
        XCTAssertEqual(state(.none, 0x04, reply: false), .invalid)
        XCTAssertEqual(state(.none, 0x11, reply: false), .invalid)
        // A mid-stream ACK picks the connection up (loose mode decides elsewhere).
        XCTAssertEqual(state(.none, 0x10, reply: false), .state(.established))
    }

    func testSimultaneousOpenAndIgnoredPackets() {
        XCTAssertEqual(state(.synSent, 0x02, reply: true), .state(.synSent2))
        XCTAssertEqual(state(.synSent2, 0x12, reply: false), .state(.synRecv))
        XCTAssertEqual(state(.synRecv, 0x12, reply: true), .ignore, "SYN/ACK retransmission")
        XCTAssertEqual(state(.synSent, 0x10, reply: true), .ignore, "reply ACK in SYN_SENT")
        XCTAssertEqual(state(.established, 0x02, reply: false), .ignore, "SYN in ESTABLISHED (resync candidate)")
    }

    func testReopenCandidatesAndRST() {
        XCTAssertEqual(state(.timeWait, 0x02, reply: false), .state(.synSent))
        XCTAssertEqual(state(.close, 0x02, reply: false), .state(.synSent))
        XCTAssertEqual(state(.timeWait, 0x02, reply: true), .state(.synSent))
        XCTAssertEqual(state(.established, 0x14, reply: true), .state(.close))
        XCTAssertEqual(state(.none, 0x00, reply: false), .invalid)
    }

    func testFlagValidity() {
        for ok: UInt8 in [0x02, 0x22, 0x12, 0x04, 0x14, 0x11, 0x31, 0x10, 0x30, 0x18, 0xd2] {
            XCTAssertTrue(TCPRules.flagsValid(ok), String(ok, radix: 16))
        }
        for bad: UInt8 in [0x00, 0x01, 0x03, 0x06, 0x32, 0x05, 0x08] {
            XCTAssertFalse(TCPRules.flagsValid(bad), String(bad, radix: 16))
        }
    }

    func testPerStateTimeoutsFollowTheSysctls() {
        var s = Sysctls()
        XCTAssertEqual(TCPRules.timeout(.established, s), 432_000)
        XCTAssertEqual(TCPRules.timeout(.synSent2, s), 120)
        try? s.apply("net.netfilter.nf_conntrack_tcp_timeout_established=600")
        XCTAssertEqual(TCPRules.timeout(.established, s), 600)
    }
}

final class SimpleTrackerTests: XCTestCase {
    let t = Timeouts(Sysctls())
    let s: UInt64 = 1_000_000_000
    let t0: UInt64 = 1_000_000_000_000

    func testUDPTwoSecondRule() {
        // One-way or the first reply: 30 s, not assured.
        XCTAssertEqual(UDPTracker.decide(seenReplyBefore: false, firstPacketAt: t0, now: t0 + 5_000_000_000, lite: false, t),
                       .accept(timeout: 30 * s, assure: false))
        // A packet after the reply but within 2 s of the first: still 30 s.
        XCTAssertEqual(UDPTracker.decide(seenReplyBefore: true, firstPacketAt: t0, now: t0 + 2_000_000_000, lite: false, t),
                       .accept(timeout: 30 * s, assure: false))
        // Later than 2 s (strictly): 120 s and ASSURED.
        XCTAssertEqual(UDPTracker.decide(seenReplyBefore: true, firstPacketAt: t0, now: t0 + 2_000_000_001, lite: false, t),
                       .accept(timeout: 120 * s, assure: true))
        // UDP-Lite has no 2-second rule.
        XCTAssertEqual(UDPTracker.decide(seenReplyBefore: true, firstPacketAt: t0, now: t0, lite: true, t),
                       .accept(timeout: 120 * s, assure: true))
    }

    func testICMPGREAndGeneric() {
        XCTAssertEqual(ICMPTracker.decide(v6: false, t), .accept(timeout: 30 * s, assure: false))
        XCTAssertTrue(ICMPTracker.createsEntry(type: 8, v6: false))
        XCTAssertFalse(ICMPTracker.createsEntry(type: 0, v6: false), "an echo reply is invalid as a first packet")
        XCTAssertTrue(ICMPTracker.createsEntry(type: 128, v6: true))
        XCTAssertFalse(ICMPTracker.createsEntry(type: 129, v6: true))
        XCTAssertEqual(GRETracker.decide(seenReplyBefore: false, t), .accept(timeout: 30 * s, assure: false))
        XCTAssertEqual(GRETracker.decide(seenReplyBefore: true, t), .accept(timeout: 180 * s, assure: true))
        XCTAssertEqual(GenericTracker.decide(t), .accept(timeout: 600 * s, assure: false))
    }

    func testSysctlAssignmentsAndFiles() throws {
        var s = Sysctls()
        try s.apply("nf_conntrack_udp_timeout = 10")
        XCTAssertEqual(s["nf_conntrack_udp_timeout"], 10)
        XCTAssertThrowsError(try s.apply("nf_conntrack_bogus=1")) { XCTAssertEqual($0 as? Sysctls.ParseError, .unknown("nf_conntrack_bogus")) }
        XCTAssertThrowsError(try s.apply("nf_conntrack_udp_timeout")) { XCTAssertEqual($0 as? Sysctls.ParseError, .malformed("nf_conntrack_udp_timeout")) }
        XCTAssertThrowsError(try s.apply("nf_conntrack_udp_timeout=x")) { XCTAssertEqual($0 as? Sysctls.ParseError, .notANumber("x")) }
        let dir = NSTemporaryDirectory() + "ctsync-sysctl-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "45\n".write(toFile: dir + "/nf_conntrack_udp_timeout_stream", atomically: true, encoding: .utf8)
        let read = Sysctls.read(directory: dir)
        XCTAssertEqual(read["nf_conntrack_udp_timeout_stream"], 45)
        XCTAssertEqual(read["nf_conntrack_generic_timeout"], 600, "missing files keep the built-in default")
    }
}
