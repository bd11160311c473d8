import ConntrackCore
import XCTest

/// Entries and the lines conntrack 1.4.7 printed for the same entries on this kernel
/// (captured with `conntrack -L` in a namespace; see Tests/IntegrationTests for the live check).
final class FormatTests: XCTestCase {
    static func tcpEntry() -> ConntrackEntry {
        let o = Tuple(source: IPAddress("192.0.2.1")!, destination: IPAddress("198.51.100.2")!, l4proto: 6,
                      sourcePort: 1000, destinationPort: 80)
        var e = ConntrackEntry(original: o, reply: o.inverted())
        e.status = [.assured, .confirmed]
        e.timeout = 99
        e.mark = 7
        e.zone = 3
        e.use = 1
        e.id = 3595601622
        e.protoInfo = .tcp(TCPInfo(state: TCPState.established.rawValue, windowScaleOriginal: 0, windowScaleReply: 0,
                                   flagsOriginal: TCPFlagsMask(flags: 0, mask: 0), flagsReply: TCPFlagsMask(flags: 0, mask: 0)))
        return e
    }

    static func greEntry() -> ConntrackEntry {
        let o = Tuple(source: IPAddress("192.0.2.1")!, destination: IPAddress("192.0.2.2")!, l4proto: 47,
                      sourcePort: 5, destinationPort: 6)
        var e = ConntrackEntry(original: o, reply: o.inverted())
        e.status = [.confirmed]; e.timeout = 29; e.mark = 0; e.use = 1; e.id = 2681919356
        return e
    }

    func text(_ e: ConntrackEntry, _ o: TextFormatOptions = TextFormatOptions(), event: EventKind? = nil) -> String {
        var b: [UInt8] = []
        ConntrackText.write(e, event: event, options: o, to: &b)
        return String(decoding: b, as: UTF8.self)
    }

    func testDefaultLineMatchesConntrack() {
        XCTAssertEqual(text(Self.tcpEntry()),
            "tcp      6 99 ESTABLISHED src=192.0.2.1 dst=198.51.100.2 sport=1000 dport=80 [UNREPLIED] src=198.51.100.2 dst=192.0.2.1 sport=80 dport=1000 [ASSURED] mark=7 zone=3 use=1")
    }

    func testExtendedAndIdMatchConntrack() {
        XCTAssertEqual(text(Self.greEntry(), TextFormatOptions(showLayer3: true, showID: true)),
            "ipv4     2 gre      47 29 src=192.0.2.1 dst=192.0.2.2 srckey=0x5 dstkey=0x6 [UNREPLIED] src=192.0.2.2 dst=192.0.2.1 srckey=0x6 dstkey=0x5 mark=0 use=1 id=2681919356")
    }

    func testEventPrefixIsRightAligned() {
        XCTAssertTrue(text(Self.greEntry(), event: .new).hasPrefix("    [NEW] gre      47 "))
        XCTAssertTrue(text(Self.greEntry(), event: .destroy).hasPrefix("[DESTROY] gre"))
    }

    func testCountersAndDeltaTime() {
        var e = Self.greEntry()
        e.countersOriginal = Counters(packets: 3, bytes: 180)
        e.countersReply = Counters(packets: 1, bytes: 60)
        e.timestampStart = 1_000_000_000_000
        XCTAssertEqual(text(e, TextFormatOptions(now: 1010)),
            "gre      47 29 src=192.0.2.1 dst=192.0.2.2 srckey=0x5 dstkey=0x6 packets=3 bytes=180 [UNREPLIED] src=192.0.2.2 dst=192.0.2.1 srckey=0x6 dstkey=0x5 packets=1 bytes=60 mark=0 delta-time=10 use=1")
    }

    func testSaveIsConntracksLinePlusMark() {
        var b: [UInt8] = []
        ConntrackSave.write(Self.tcpEntry(), to: &b)
        XCTAssertEqual(String(decoding: b, as: UTF8.self),
            "-A -t 99 -u ASSURED -w 3 -m 7 -s 192.0.2.1 -d 198.51.100.2 -r 198.51.100.2 -q 192.0.2.1 -p tcp --sport 1000 --dport 80 --reply-port-src 80 --reply-port-dst 1000 --state ESTABLISHED")
        b.removeAll()
        ConntrackSave.write(Self.tcpEntry(), options: .init(lossless: false), to: &b)
        XCTAssertFalse(String(decoding: b, as: UTF8.self).contains("-m 7"))
    }

    func testXMLMatchesConntrack() {
        var b: [UInt8] = []
        ConntrackXML.write(Self.greEntry(), to: &b)
        XCTAssertEqual(String(decoding: b, as: UTF8.self),
            "<flow><meta direction=\"original\"><layer3 protonum=\"2\" protoname=\"ipv4\"><src>192.0.2.1</src><dst>192.0.2.2</dst></layer3><layer4 protonum=\"47\" protoname=\"gre\"><srckey>0x5</srckey><dstkey>0x6</dstkey></layer4></meta><meta direction=\"reply\"><layer3 protonum=\"2\" protoname=\"ipv4\"><src>192.0.2.2</src><dst>192.0.2.1</dst></layer3><layer4 protonum=\"47\" protoname=\"gre\"><srckey>0x6</srckey><dstkey>0x5</dstkey></layer4></meta><meta direction=\"independent\"><timeout>29</timeout><mark>0</mark><use>1</use><id>2681919356</id><unreplied/></meta></flow>")
    }

    func testCTimeFormat() {
        XCTAssertEqual(CTime.format(seconds: 1_795_573_160), "Wed Nov 25 02:19:20 2026")
        XCTAssertEqual(CTime.format(seconds: 0), "Thu Jan  1 00:00:00 1970")
    }
}

final class JSONTests: XCTestCase {
    func roundTrip(_ e: ConntrackEntry, event: EventKind? = nil) throws {
        var b: [UInt8] = []
        ConntrackJSON.write(e, event: event, to: &b)
        let line = String(decoding: b, as: UTF8.self)
        let (back, ev) = try ConntrackJSON.decode(line: line)
        XCTAssertEqual(back, e, line)
        XCTAssertEqual(ev, event)
        // The fast reader gives the same, or declines (strings with escapes) and the
        // bytes entry point falls back to the full parser.
        try b.withUnsafeBufferPointer { p in
            if !b.contains(92) {
                let fast = try XCTUnwrap(ConntrackJSON.fastDecode(p), line)
                XCTAssertEqual(fast.0, e, line)
                XCTAssertEqual(fast.1, event)
            }
            XCTAssertEqual(try ConntrackJSON.decode(bytes: p).0, e, line)
        }
    }

    func fast(_ line: String) -> ConntrackEntry? {
        Array(line.utf8).withUnsafeBufferPointer { ConntrackJSON.fastDecode($0)?.0 }
    }

    func testFastReaderDeclinesOtherSpellingsAndTheFullParserReadsThem() throws {
        let tuple = #""orig":{"src":"192.0.2.1","dst":"192.0.2.2","sport":1,"dport":2},"reply":{"src":"192.0.2.2","dst":"192.0.2.1","sport":2,"dport":1}"#
        let plain = #"{"v":1,"proto":17,"# + tuple + #","mark":5}"#
        XCTAssertEqual(fast(plain)?.mark, 5)
        let spaced = #"{ "v" : 1 , "proto" : 17 , "# + tuple + #" , "mark" : 5 }"#
        XCTAssertEqual(fast(spaced)?.mark, 5, "JSON whitespace is read")
        for other in [#"{"v":1,"proto":17,"# + tuple + #","mark":5.0}"#,
                      #"{"v":1,"proto":17,"# + tuple + #","mark":5,"extra":1}"#,
                      #"{"v":1,"proto":17,"# + tuple + #","mark":5,"helper":"f\u0074p"}"#] {
            XCTAssertNil(fast(other), other)
            XCTAssertEqual(try ConntrackJSON.decode(line: other).0.mark, 5, other)
        }
    }

    func testFastReaderNeverReadsPastAShortLine() {
        var e = FormatTests.tcpEntry()
        e.helper = "ftp"
        e.master = e.original
        e.countersOriginal = Counters(packets: 1, bytes: 2)
        var b: [UInt8] = []
        ConntrackJSON.write(e, to: &b)
        for n in 0..<b.count {
            // A copy of exactly n bytes: reading past it would be caught by the sanitizer runs.
            let prefix = Array(b[..<n])
            XCTAssertNil(prefix.withUnsafeBufferPointer { ConntrackJSON.fastDecode($0) }, "prefix of \(n) bytes")
        }
    }

    func testOutOfRangeNumbersAreDeclined() {
        let tuple = #""orig":{"src":"192.0.2.1","dst":"192.0.2.2","sport":1,"dport":2},"reply":{"src":"192.0.2.2","dst":"192.0.2.1","sport":2,"dport":1}"#
        for bad in [#","mark":4294967296"#, #","zone":65536"#, #","timeout":99999999999999999999999"#, #","mark":-1"#] {
            let line = #"{"v":1,"proto":17,"# + tuple + bad + "}"
            XCTAssertNil(fast(line), line)
            XCTAssertThrowsError(try ConntrackJSON.decode(line: line), line)
        }
    }

    func testEveryAttributeSurvivesARoundTrip() throws {
        var e = FormatTests.tcpEntry()
        e.original.zone = 4; e.reply.zone = 5
        e.secmark = 9
        e.countersOriginal = Counters(packets: 1 << 40, bytes: 7)
        e.countersReply = Counters(packets: 2, bytes: 3)
        e.timestampStart = 1_700_000_000_123_456_789
        e.timestampStop = 1_700_000_001_000_000_000
        e.helper = "ftp"
        e.labels = Labels(bits: [0, 63, 64, 127])
        e.master = Tuple(source: IPAddress("2001:db8::1")!, destination: IPAddress("2001:db8::2")!, l4proto: 6,
                         sourcePort: 4000, destinationPort: 21)
        e.secctx = "system_u:object_r:x\"y"
        e.seqAdjOriginal = SequenceAdjustment(correctionPosition: 1, offsetBefore: 2, offsetAfter: 3)
        e.seqAdjReply = SequenceAdjustment(correctionPosition: 4, offsetBefore: 5, offsetAfter: 6)
        e.synproxy = Synproxy(isn: 1, its: 2, tsoff: 3)
        try roundTrip(e, event: .update)
        try roundTrip(FormatTests.greEntry())
    }

    func testSCTPAndDCCPAndICMPv6RoundTrip() throws {
        let s = Tuple(source: IPAddress("192.0.2.1")!, destination: IPAddress("192.0.2.2")!, l4proto: 132, sourcePort: 5, destinationPort: 6)
        var e = ConntrackEntry(original: s, reply: s.inverted())
        e.protoInfo = .sctp(SCTPInfo(state: SCTPState.established.rawValue, vtagOriginal: 1, vtagReply: 2))
        try roundTrip(e)
        let d = Tuple(source: IPAddress("192.0.2.1")!, destination: IPAddress("192.0.2.2")!, l4proto: 33, sourcePort: 5, destinationPort: 6)
        var f = ConntrackEntry(original: d, reply: d.inverted())
        f.protoInfo = .dccp(DCCPInfo(state: DCCPState.open.rawValue, role: 1, handshakeSeq: 99))
        try roundTrip(f)
        let i = Tuple(source: IPAddress("2001:db8::1")!, destination: IPAddress("2001:db8::2")!, l4proto: 58, icmpType: 128, icmpCode: 0, icmpID: 9)
        try roundTrip(ConntrackEntry(original: i, reply: i.inverted()))
    }

    func testBadLinesNameTheProblem() {
        let cases: [(String, String)] = [
            ("not json", "not a JSON object"),
            ("{\"proto\":6}", "missing schema version \"v\""),
            ("{\"v\":2,\"proto\":6}", "unsupported schema version 2"),
            ("{\"v\":1,\"proto\":6,\"orig\":{\"src\":\"x\",\"dst\":\"192.0.2.1\"}}", "bad addresses in \"orig\""),
            ("{\"v\":1,\"proto\":17,\"orig\":{\"src\":\"192.0.2.2\",\"dst\":\"192.0.2.1\",\"sport\":70000,\"dport\":1}}", "missing or bad \"sport\" in \"orig\""),
        ]
        for (line, message) in cases {
            XCTAssertThrowsError(try ConntrackJSON.decode(line: line), line) { error in
                XCTAssertEqual((error as? ConntrackJSON.DecodeError)?.message, message)
            }
            XCTAssertThrowsError(try Array(line.utf8).withUnsafeBufferPointer { try ConntrackJSON.decode(bytes: $0) }, line) { error in
                XCTAssertEqual((error as? ConntrackJSON.DecodeError)?.message, message)
            }
        }
    }
}

final class FilterTests: XCTestCase {
    func testFilterFieldsAreANDed() {
        let e = FormatTests.tcpEntry()
        var f = EntryFilter()
        XCTAssertTrue(f.matches(e))
        f.originalSource = IPNetwork("192.0.2.0/24")
        f.l4proto = 6
        f.tcpState = .established
        XCTAssertTrue(f.matches(e))
        f.mark = 6
        XCTAssertFalse(f.matches(e))
        f.markMask = 0x4
        XCTAssertTrue(f.matches(e), "7 & 4 == 6 & 4")
        f.originalDestinationPort = 81
        XCTAssertFalse(f.matches(e))
    }

    func testNATFiltersUseTheReplyTuple() {
        var e = FormatTests.tcpEntry()
        e.reply.destination = IPAddress("203.0.113.1")!
        e.status = [.confirmed, .srcNAT, .srcNATDone]
        var f = EntryFilter()
        f.sourceNAT = .init(address: IPAddress("203.0.113.1")!)
        XCTAssertTrue(f.matches(e))
        f.sourceNAT = nil
        f.destinationNAT = .init()
        XCTAssertFalse(f.matches(e))
    }
}
