import ConntrackCore
@testable import ConntrackModel
import PacketDecoding
import XCTest

/// Raw IPv4/IPv6 packets with correct checksums, decoded by the real decoder and fed to the
/// tracker: each test is one LIVE case of kernel-conntrack-semantics.md.
struct Wire {
    static func sum(_ b: [UInt8]) -> UInt16 {
        b.withUnsafeBytes { ~Checksum.fold(Checksum.sum($0)) }
    }

    static func ipv4(_ src: String, _ dst: String, proto: UInt8, _ l4: [UInt8], id: UInt16 = 1) -> [UInt8] {
        let s = IPAddress(src)!.bytes, d = IPAddress(dst)!.bytes
        let total = 20 + l4.count
        var h: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), UInt8(id >> 8), UInt8(id & 0xff), 0, 0, 64, proto, 0, 0] + s + d
        let c = sum(h)
        h[10] = UInt8(c >> 8); h[11] = UInt8(c & 0xff)
        var seg = l4
        let ck = checksumOffset(proto)
        if let ck {
            let pseudo = s + d + [0, proto, UInt8(l4.count >> 8), UInt8(l4.count & 0xff)]
            let v = proto == 1 ? sum(seg) : sum(pseudo + seg)
            seg[ck] = UInt8(v >> 8); seg[ck + 1] = UInt8(v & 0xff)
        }
        return h + seg
    }

    static func ipv6(_ src: String, _ dst: String, proto: UInt8, _ l4: [UInt8]) -> [UInt8] {
        let s = IPAddress(src)!.bytes, d = IPAddress(dst)!.bytes
        let h: [UInt8] = [0x60, 0, 0, 0, UInt8(l4.count >> 8), UInt8(l4.count & 0xff), proto, 64] + s + d
        var seg = l4
        if let ck = checksumOffset(proto) {
            let pseudo = s + d + [0, 0, UInt8(l4.count >> 8), UInt8(l4.count & 0xff), 0, 0, 0, proto]
            let v = sum(pseudo + seg)
            seg[ck] = UInt8(v >> 8); seg[ck + 1] = UInt8(v & 0xff)
        }
        return h + seg
    }

    static func checksumOffset(_ proto: UInt8) -> Int? {
        switch proto { case 6: return 16; case 17: return 6; case 1, 58: return 2; default: return nil }
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }

    /// A TCP segment; `options` raw (padded to 4 bytes here).
    static func tcp(_ sport: UInt16, _ dport: UInt16, flags: UInt8, seq: UInt32, ack: UInt32 = 0, window: UInt16 = 64240,
                    options: [UInt8] = [], payload: [UInt8] = []) -> [UInt8] {
        var opts = options
        while opts.count % 4 != 0 { opts.append(1) }
        let hl = 20 + opts.count
        return be16(sport) + be16(dport) + be32(seq) + be32(ack) + [UInt8(hl / 4) << 4, flags] + be16(window) + [0, 0, 0, 0] + opts + payload
    }

    static func udp(_ sport: UInt16, _ dport: UInt16, _ payload: [UInt8], length: UInt16? = nil) -> [UInt8] {
        be16(sport) + be16(dport) + be16(length ?? UInt16(8 + payload.count)) + [0, 0] + payload
    }

    static func icmp(type: UInt8, code: UInt8 = 0, id: UInt16 = 0, seq: UInt16 = 0, body: [UInt8] = []) -> [UInt8] {
        [type, code, 0, 0] + be16(id) + be16(seq) + body
    }

    static let wscale7: [UInt8] = [3, 3, 7], sackPerm: [UInt8] = [4, 2]
}

final class TrackerTests: XCTestCase {
    let C = "198.51.100.2", S = "203.0.113.2"
    let sec: UInt64 = 1_000_000_000
    var tracker = Tracker(configuration: ModelConfiguration(sysctls: Sysctls(["nf_conntrack_acct": 1])))
    var clock: UInt64 = 1_000 * 1_000_000_000

    override func setUp() {
        tracker = Tracker(configuration: ModelConfiguration(sysctls: Sysctls(["nf_conntrack_acct": 1])))
        clock = 1_000 * sec
    }

    func configure(_ c: ModelConfiguration) { tracker = Tracker(configuration: c) }

    @discardableResult
    func feed(_ bytes: [UInt8], after gap: UInt64 = 50_000_000) -> Verdict {
        clock += gap
        return bytes.withUnsafeBytes { buf in
            var p = DecodedPacket()
            XCTAssertNil(PacketDecoder(linkType: LinkType.raw.rawValue).decode(buf, into: &p))
            return tracker.process(p, frame: buf, at: clock)
        }
    }

    func c2s(_ l4: [UInt8], proto: UInt8 = 6) -> [UInt8] { Wire.ipv4(C, S, proto: proto, l4) }
    func s2c(_ l4: [UInt8], proto: UInt8 = 6) -> [UInt8] { Wire.ipv4(S, C, proto: proto, l4) }

    /// The table as a dump 1 ms after the last packet shows it (configured value − 1, as live).
    var only: ConntrackEntry? {
        let e = tracker.entries(at: clock + 1_000_000)
        XCTAssertLessThanOrEqual(e.count, 1)
        return e.first
    }
    var state: String? { if case .tcp(let i)? = only?.protoInfo { return TCPState(rawValue: i.state)?.text } else { return nil } }

    func handshake(sport: UInt16 = 40000) {
        feed(c2s(Wire.tcp(sport, 80, flags: 0x02, seq: 1000, options: Wire.wscale7 + Wire.sackPerm)))
        feed(s2c(Wire.tcp(80, sport, flags: 0x12, seq: 5000, ack: 1001, window: 65160, options: [3, 3, 9] + Wire.sackPerm)))
        feed(c2s(Wire.tcp(sport, 80, flags: 0x10, seq: 1001, ack: 5001, window: 502)))
    }

    // MARK: TCP walk-through (5.11)

    func testHandshakeDataAndCloseFollowTheLiveWalkThrough() {
        feed(c2s(Wire.tcp(40000, 80, flags: 0x02, seq: 1000, options: Wire.wscale7 + Wire.sackPerm)))
        XCTAssertEqual(state, "SYN_SENT"); XCTAssertEqual(only?.timeout, 119)
        guard case .tcp(let i0)? = only?.protoInfo else { return XCTFail() }
        XCTAssertEqual(i0.flagsOriginal?.flags, 0x03)
        feed(s2c(Wire.tcp(80, 40000, flags: 0x12, seq: 5000, ack: 1001, window: 65160, options: [3, 3, 9] + Wire.sackPerm)))
        XCTAssertEqual(state, "SYN_RECV"); XCTAssertEqual(only?.timeout, 59)
        XCTAssertTrue(only!.status!.contains(.seenReply))
        feed(c2s(Wire.tcp(40000, 80, flags: 0x10, seq: 1001, ack: 5001, window: 502)))
        XCTAssertEqual(state, "ESTABLISHED"); XCTAssertEqual(only?.timeout, 431_999)
        XCTAssertTrue(only!.status!.contains(.assured))
        feed(c2s(Wire.tcp(40000, 80, flags: 0x18, seq: 1001, ack: 5001, window: 502, payload: Array("0123456789".utf8))))
        XCTAssertEqual(only?.timeout, 299, "unacknowledged data")
        guard case .tcp(let i1)? = only?.protoInfo else { return XCTFail() }
        XCTAssertEqual(i1.flagsOriginal?.flags, 0x33)
        feed(s2c(Wire.tcp(80, 40000, flags: 0x10, seq: 5001, ack: 1011, window: 509)))
        XCTAssertEqual(only?.timeout, 431_999)
        feed(c2s(Wire.tcp(40000, 80, flags: 0x11, seq: 1011, ack: 5001, window: 502)))
        XCTAssertEqual(state, "FIN_WAIT"); XCTAssertEqual(only?.timeout, 119)
        feed(s2c(Wire.tcp(80, 40000, flags: 0x10, seq: 5001, ack: 1012, window: 509)))
        XCTAssertEqual(state, "CLOSE_WAIT"); XCTAssertEqual(only?.timeout, 59)
        feed(s2c(Wire.tcp(80, 40000, flags: 0x11, seq: 5001, ack: 1012, window: 509)))
        XCTAssertEqual(state, "LAST_ACK"); XCTAssertEqual(only?.timeout, 29)
        feed(c2s(Wire.tcp(40000, 80, flags: 0x10, seq: 1012, ack: 5002, window: 502)))
        XCTAssertEqual(state, "TIME_WAIT"); XCTAssertEqual(only?.timeout, 119)
        XCTAssertEqual(only?.countersOriginal?.packets, 5)
        XCTAssertEqual(only?.countersReply?.packets, 4)
    }

    func testAnRSTBeforeAnyReplyDeletesTheEntry() {
        feed(c2s(Wire.tcp(40002, 40000, flags: 0x02, seq: 1000)))
        XCTAssertEqual(state, "SYN_SENT")
        let v = feed(s2c(Wire.tcp(40000, 40002, flags: 0x14, seq: 0, ack: 1001)))
        XCTAssertEqual(v.kind, .established)
        XCTAssertNil(only)
    }

    func testSYNRetransmissionNeitherRefreshesNorCounts() {
        feed(c2s(Wire.tcp(40003, 80, flags: 0x02, seq: 1000)))
        feed(c2s(Wire.tcp(40003, 80, flags: 0x02, seq: 1000)), after: 3 * sec)
        XCTAssertEqual(only?.timeout, 116)
        XCTAssertEqual(only?.countersOriginal?.packets, 1)
    }

    func testInvalidFirstPacketsMakeNoEntry() {
        for flags: UInt8 in [0x12, 0x01, 0x03, 0x04] {
            XCTAssertEqual(feed(c2s(Wire.tcp(40004, 80, flags: flags, seq: 1))).kind, .invalid, "flags \(flags)")
        }
        XCTAssertNil(only)
    }

    func testMidStreamPickupIsLiberalUnrepliedAt300sAndAssuredOnePacketAfterTheReply() {
        feed(c2s(Wire.tcp(40005, 80, flags: 0x10, seq: 7000, ack: 9000, window: 500)))
        XCTAssertEqual(state, "ESTABLISHED"); XCTAssertEqual(only?.timeout, 299)
        guard case .tcp(let i)? = only?.protoInfo else { return XCTFail() }
        XCTAssertEqual(i.flagsOriginal?.flags, 0x0A)
        XCTAssertEqual(tracker.statistics.pickedUp, 1)
        feed(s2c(Wire.tcp(80, 40005, flags: 0x10, seq: 9000, ack: 7000, window: 500)))
        XCTAssertFalse(only!.status!.contains(.assured))
        feed(c2s(Wire.tcp(40005, 80, flags: 0x10, seq: 7000, ack: 9000, window: 500)))
        XCTAssertTrue(only!.status!.contains(.assured))
    }

    func testMidStreamPickupWithLooseOffIsInvalid() {
        configure(ModelConfiguration(sysctls: Sysctls(["nf_conntrack_tcp_loose": 0])))
        let v = feed(c2s(Wire.tcp(40006, 80, flags: 0x10, seq: 7000, ack: 9000)))
        XCTAssertEqual(v.kind, .invalid)
        XCTAssertEqual(v.reason, .notNewTCP)
        XCTAssertNil(only)
    }

    func testExactRSTClosesAndOldRSTIsInvalid() {
        handshake()
        XCTAssertEqual(feed(s2c(Wire.tcp(80, 40000, flags: 0x14, seq: 4000, ack: 1001))).reason, .invalidRST)
        XCTAssertEqual(state, "ESTABLISHED")
        feed(s2c(Wire.tcp(80, 40000, flags: 0x14, seq: 5001, ack: 1001)))
        XCTAssertEqual(state, "CLOSE"); XCTAssertEqual(only?.timeout, 9)
    }

    func testInexactInWindowRSTKeepsEstablishedWithTheCloseTimeout() {
        handshake()
        feed(s2c(Wire.tcp(80, 40000, flags: 0x14, seq: 5100, ack: 1001)))
        XCTAssertEqual(state, "ESTABLISHED")
        XCTAssertEqual(only?.timeout, 9, "6.18: index rst gives T[CLOSE]")
    }

    func testOn612AnInexactRSTGivesTheUnacknowledgedTimeout() {
        var c = ModelConfiguration(sysctls: Sysctls())
        c.kernel = .v6_12
        configure(c)
        handshake()
        feed(s2c(Wire.tcp(80, 40000, flags: 0x14, seq: 5100, ack: 1001)))
        XCTAssertEqual(state, "ESTABLISHED")
        XCTAssertEqual(only?.timeout, 299)
    }

    func testOutOfWindowDataIsInvalidAndUncountedUnlessLiberal() {
        handshake()
        let far = c2s(Wire.tcp(40000, 80, flags: 0x18, seq: 1001 + 50_000_000, ack: 5001, window: 502, payload: [1, 2, 3]))
        XCTAssertEqual(feed(far).kind, .invalid)
        XCTAssertEqual(only?.countersOriginal?.packets, 2)
        configure(ModelConfiguration(sysctls: Sysctls(["nf_conntrack_acct": 1, "nf_conntrack_tcp_be_liberal": 1])))
        handshake()
        XCTAssertEqual(feed(far).kind, .established)
        XCTAssertEqual(only?.countersOriginal?.packets, 3)
    }

    func testTimeWaitReopensAsANewEntry() {
        handshake()
        feed(c2s(Wire.tcp(40000, 80, flags: 0x11, seq: 1001, ack: 5001, window: 502)))
        feed(s2c(Wire.tcp(80, 40000, flags: 0x11, seq: 5001, ack: 1002, window: 509)))
        feed(c2s(Wire.tcp(40000, 80, flags: 0x10, seq: 1002, ack: 5002, window: 502)))
        XCTAssertEqual(state, "TIME_WAIT")
        let v = feed(c2s(Wire.tcp(40000, 80, flags: 0x02, seq: 90000)))
        XCTAssertEqual(v.kind, .new)
        XCTAssertEqual(state, "SYN_SENT")
        XCTAssertEqual(only?.countersOriginal?.packets, 1)
    }

    func testSYNInEstablishedIsIgnoredThenSYNACKResyncs() {
        handshake()
        let v = feed(c2s(Wire.tcp(40000, 80, flags: 0x02, seq: 777_000)))
        XCTAssertEqual(v.reason, .ignoredInState)
        feed(s2c(Wire.tcp(80, 40000, flags: 0x12, seq: 123, ack: 777_001)))
        XCTAssertEqual(state, "SYN_RECV"); XCTAssertEqual(only?.timeout, 59)
    }

    func testSimultaneousOpenEndsEstablishedAndAssured() {
        feed(c2s(Wire.tcp(40007, 40008, flags: 0x02, seq: 100)))
        feed(s2c(Wire.tcp(40008, 40007, flags: 0x02, seq: 500)))
        XCTAssertEqual(state, "SYN_SENT2")
        feed(c2s(Wire.tcp(40007, 40008, flags: 0x12, seq: 100, ack: 501)))
        feed(s2c(Wire.tcp(40008, 40007, flags: 0x12, seq: 500, ack: 101)))
        feed(s2c(Wire.tcp(40008, 40007, flags: 0x10, seq: 501, ack: 101)))
        XCTAssertEqual(state, "ESTABLISHED")
        XCTAssertTrue(only!.status!.contains(.assured))
    }

    func testFourIdenticalSegmentsSwitchToTheRetransTimeout() {
        handshake()
        let seg = c2s(Wire.tcp(40000, 80, flags: 0x18, seq: 1001, ack: 5001, window: 502, payload: [1]))
        for _ in 0..<4 { feed(seg) }
        XCTAssertEqual(only?.timeout, 299)
        XCTAssertEqual(tracker.table[tracker.table.ids[0]].tcp.retransmissions, 3)
    }

    func testZeroWindowGivesTheRetransTimeout() {
        handshake()
        feed(s2c(Wire.tcp(80, 40000, flags: 0x10, seq: 5001, ack: 1001, window: 0)))
        XCTAssertEqual(only?.timeout, 299)
    }

    func testAnIgnoredReplyACKInSynSentSetsSeenReply() {
        feed(c2s(Wire.tcp(40009, 80, flags: 0x02, seq: 1000)))
        feed(s2c(Wire.tcp(80, 40009, flags: 0x10, seq: 5, ack: 77)))
        XCTAssertEqual(state, "SYN_SENT")
        XCTAssertTrue(only!.status!.contains(.seenReply))
    }

    // MARK: UDP, ICMP, others

    func testUDPTwoSecondRule() {
        feed(c2s(Wire.udp(5000, 53, [1, 2, 3]), proto: 17))
        feed(s2c(Wire.udp(53, 5000, [4]), proto: 17))
        XCTAssertEqual(only?.timeout, 29)
        XCTAssertFalse(only!.status!.contains(.assured))
        feed(c2s(Wire.udp(5000, 53, [5]), proto: 17), after: 2_100_000_000)
        XCTAssertEqual(only?.timeout, 119)
        XCTAssertTrue(only!.status!.contains(.assured))
    }

    func testUDPWithALengthFieldBeyondThePacketIsInvalid() {
        XCTAssertEqual(feed(c2s(Wire.udp(5000, 53, [1, 2], length: 40), proto: 17)).reason, .udpLength)
        XCTAssertNil(only)
    }

    func testICMPEchoEntrySurvivesTheReplyAndIsNeverAssured() {
        feed(c2s(Wire.icmp(type: 8, id: 77, seq: 1), proto: 1))
        feed(s2c(Wire.icmp(type: 0, id: 77, seq: 1), proto: 1))
        XCTAssertEqual(only?.timeout, 29)
        XCTAssertEqual(only?.status, [.confirmed, .seenReply])
    }

    func testEchoReplyAsFirstPacketIsInvalid() {
        XCTAssertEqual(feed(c2s(Wire.icmp(type: 0, id: 1), proto: 1)).kind, .invalid)
        XCTAssertEqual(feed(c2s(Wire.icmp(type: 9), proto: 1)).kind, .invalid)
    }

    func testPortUnreachableIsRelatedAndChangesNothing() {
        let request = c2s(Wire.udp(5000, 40100, [1, 2, 3, 4]), proto: 17)
        feed(request)
        let before = only
        let error = s2c(Wire.icmp(type: 3, code: 3, body: Array(request.prefix(28))), proto: 1)
        let v = feed(error, after: sec)
        XCTAssertEqual(v.kind, .related)
        XCTAssertEqual(v.direction, 1)
        XCTAssertEqual(only?.countersReply?.packets, 0)
        XCTAssertEqual(only?.status, before?.status)
        XCTAssertEqual(only?.timeout, 28, "not refreshed")
    }

    func testAnErrorForNoConnectionIsInvalid() {
        let request = c2s(Wire.udp(5000, 40100, [1, 2, 3, 4]), proto: 17)
        XCTAssertEqual(feed(s2c(Wire.icmp(type: 3, code: 3, body: Array(request.prefix(28))), proto: 1)).reason, .icmpNoEntry)
    }

    func testABadIPv4HeaderChecksumNeverReachesConntrack() {
        var bytes = c2s(Wire.udp(5000, 53, [1]), proto: 17)
        bytes[10] ^= 0xff
        XCTAssertEqual(feed(bytes).reason, .badIPChecksum)
        XCTAssertNil(only)
    }

    func testNeighbourSolicitationIsUntracked() {
        let ns = Wire.ipv6("2001:db8:1::2", "ff02::1:ff00:1", proto: 58, Wire.icmp(type: 135) + [UInt8](repeating: 0, count: 16))
        XCTAssertEqual(feed(ns).kind, .untracked)
    }

    func testGenericProtocolIs600sAndNeverAssured() {
        feed(Wire.ipv4(C, S, proto: 253, [1, 2, 3, 4]))
        feed(Wire.ipv4(S, C, proto: 253, [1, 2, 3, 4]))
        feed(Wire.ipv4(C, S, proto: 253, [1, 2, 3, 4]))
        XCTAssertEqual(only?.timeout, 599)
        XCTAssertEqual(only?.status, [.confirmed, .seenReply])
    }

    // MARK: FTP helper

    func ftpControl() {
        configure(ModelConfiguration(sysctls: Sysctls()))
        var c = tracker.configuration
        c.helpers = [try! ModelConfiguration.helperRule("ftp:tcp/21")]
        configure(c)
        feed(c2s(Wire.tcp(40601, 21, flags: 0x02, seq: 100)))
        feed(s2c(Wire.tcp(21, 40601, flags: 0x12, seq: 900, ack: 101)))
        feed(c2s(Wire.tcp(40601, 21, flags: 0x10, seq: 101, ack: 901)))
    }

    func testTheFirstServerLineIsNeverParsedTheSecondIs() {
        ftpControl()
        let pasv = Array("227 Entering Passive Mode (203,0,113,2,156,64).\r\n".utf8)
        feed(s2c(Wire.tcp(21, 40601, flags: 0x18, seq: 901, ack: 101, payload: pasv)))
        XCTAssertTrue(tracker.expectationList(at: clock).isEmpty, "first segment in this direction")
        feed(s2c(Wire.tcp(21, 40601, flags: 0x18, seq: 901 + UInt32(pasv.count), ack: 101, payload: pasv)))
        let x = tracker.expectationList(at: clock + 1_000_000)
        XCTAssertEqual(x.count, 1)
        XCTAssertEqual(x.first?.tuple.destinationPort, 40000)
        XCTAssertEqual(x.first?.tuple.source, IPAddress(C))
        XCTAssertEqual(x.first?.timeout, 299)
        // The data connection becomes EXPECTED, with the master's mark and no helper.
        let v = feed(c2s(Wire.tcp(41000, 40000, flags: 0x02, seq: 1)))
        XCTAssertEqual(v.kind, .related)
        let child = tracker.entries(at: clock).first { $0.original.destinationPort == 40000 }
        XCTAssertEqual(child?.status, [.confirmed, .expected])
        XCTAssertNotNil(child?.master)
        XCTAssertTrue(tracker.expectationList(at: clock).isEmpty)
        XCTAssertEqual(tracker.entries(at: clock).first { $0.original.destinationPort == 21 }?.use, 2)
    }

    func testANewExpectationEvictsTheOlderOne() {
        ftpControl()
        feed(c2s(Wire.tcp(40601, 21, flags: 0x18, seq: 101, ack: 901, payload: Array("NOOP\r\n".utf8))))
        feed(c2s(Wire.tcp(40601, 21, flags: 0x18, seq: 107, ack: 901, payload: Array("PORT 198,51,100,2,156,65\r\n".utf8))))
        XCTAssertEqual(tracker.expectationList(at: clock).first?.tuple.destinationPort, 40001)
        feed(c2s(Wire.tcp(40601, 21, flags: 0x18, seq: 133, ack: 901, payload: Array("EPRT |1|198.51.100.2|40002|\r\n".utf8))))
        XCTAssertEqual(tracker.expectationList(at: clock).map(\.tuple.destinationPort), [40002])
    }

    func testAPartialCommandIsDroppedByTheHelper() {
        XCTAssertEqual(Array("PORT 1,2,3".utf8).withUnsafeBytes { FTPHelper.parse($0, dir: 0, family: .ipv4) }, .partial)
        XCTAssertEqual(Array("POR".utf8).withUnsafeBytes { FTPHelper.parse($0, dir: 0, family: .ipv4) }, .partial)
        XCTAssertEqual(Array("USER x\r\n".utf8).withUnsafeBytes { FTPHelper.parse($0, dir: 0, family: .ipv4) }, .none)
        XCTAssertEqual(Array("229 Entering Extended Passive Mode (|||40036|)\r\n".utf8).withUnsafeBytes { FTPHelper.parse($0, dir: 1, family: .ipv4) },
                       .command(FTPHelper.Command(address: nil, port: 40036)))
    }

    // MARK: configuration

    func testZoneAndMarkRules() throws {
        var c = ModelConfiguration(sysctls: Sysctls())
        c.zones = [try ModelConfiguration.rule("5") { UInt16($0) }]
        c.marks = [try ModelConfiguration.rule("42:proto=tcp,dport=40010") { UInt32($0) }]
        configure(c)
        feed(c2s(Wire.tcp(1234, 40010, flags: 0x02, seq: 1)))
        feed(c2s(Wire.udp(1234, 40010, [1]), proto: 17))
        let e = tracker.entries(at: clock)
        XCTAssertEqual(e.count, 2)
        XCTAssertTrue(e.allSatisfy { $0.zone == 5 })
        XCTAssertEqual(e.first { $0.original.l4proto == 6 }?.mark, 42)
        XCTAssertEqual(e.first { $0.original.l4proto == 17 }?.mark, 0)
    }

    func testBadRuleTextIsRejectedWithTheReason() {
        XCTAssertThrowsError(try PacketMatch(parsing: "port=80"))
        XCTAssertThrowsError(try ModelConfiguration.helperRule("sip:udp/5060"))
        XCTAssertThrowsError(try ModelConfiguration.helperRule("ftp:tcp"))
    }

    func testTableFullIsFlaggedAsUncertain() {
        configure(ModelConfiguration(sysctls: Sysctls(["nf_conntrack_max": 2])))
        for p: UInt16 in 1...3 { feed(c2s(Wire.udp(p, 53, [1]), proto: 17)) }
        XCTAssertEqual(tracker.entries(at: clock).count, 2)
        XCTAssertTrue(tracker.statistics.nearTableLimit)
    }
}
