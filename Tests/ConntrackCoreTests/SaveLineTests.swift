import ConntrackCore
import XCTest

final class SaveLineTests: XCTestCase {
    /// What a save line carries of an entry (no counters, ids, use, timestamps, helper).
    func carried(_ e: ConntrackEntry) -> ConntrackEntry {
        var c = ConntrackEntry(original: e.original, reply: e.reply)
        c.timeout = e.timeout
        c.status = e.status.map { $0.intersection([.expected, .seenReply, .assured, .fixedTimeout]) }
        c.secmark = e.secmark; c.zone = e.zone
        c.mark = e.mark == 0 ? nil : e.mark
        c.labels = e.labels
        switch e.protoInfo {
        case .tcp(let t): c.protoInfo = .tcp(TCPInfo(state: t.state))
        case .sctp(let s): c.protoInfo = .sctp(SCTPInfo(state: s.state, vtagOriginal: s.vtagOriginal, vtagReply: s.vtagReply))
        default: c.protoInfo = e.protoInfo
        }
        return c
    }

    func testWhatSaveWritesTheFastReaderReadsBack() throws {
        var tcp = FormatTests.tcpEntry()
        tcp.labels = Labels(bits: [2, 99])
        tcp.original.zone = 7
        let gre = FormatTests.greEntry()
        let i6 = Tuple(source: IPAddress("2001:db8::1")!, destination: IPAddress("2001:db8::2")!, l4proto: 58,
                       icmpType: 128, icmpCode: 0, icmpID: 9)
        var icmp6 = ConntrackEntry(original: i6, reply: i6.inverted())
        icmp6.timeout = 30; icmp6.status = [.confirmed]
        for e in [tcp, gre, icmp6] {
            var b: [UInt8] = []
            ConntrackSave.write(e, to: &b)
            let line = try XCTUnwrap(SaveLine.parse(b[...]), String(decoding: b, as: UTF8.self))
            XCTAssertEqual(line.command, .add)
            XCTAssertEqual(line.entry, carried(e), String(decoding: b, as: UTF8.self))
        }
    }

    func testNATLinesCarryAddressAndPort() throws {
        let line = try XCTUnwrap(SaveLine.parse(
            "-A -t 49 -u UNSET -s 192.0.2.1 -d 198.51.100.2 -r 198.51.100.2 -n 203.0.113.9 -p udp --sport 5 --dport 6 --reply-port-src 6 --reply-port-dst 4000"))
        XCTAssertEqual(line.sourceNAT?.address, IPAddress("203.0.113.9"))
        XCTAssertEqual(line.sourceNAT?.port, 4000)
        XCTAssertNil(line.destinationNAT)
    }

    func testAnythingUnusualIsLeftToTheFullParser() {
        for text in ["", "-L", "-A -t", "-A -t 5 -s 192.0.2.1 -d 192.0.2.2 -p tcp --sport 1 --dport 2",   // no --state
                     "-A -t 5 -s 192.0.2.1 -d 2001:db8::1 -p udp --sport 1 --dport 2",
                     "-A -t 99999999999 -s 192.0.2.1 -d 192.0.2.2 -p udp --sport 1 --dport 2",
                     "-A -s 192.0.2.1 -d 192.0.2.2 -p udp --sport 1 --dport 70000",
                     "-A -s 192.0.2.1 -d 192.0.2.2 -p udp --sport 1 --dport 2 --bogus 1",
                     "-A -s 192.0.2.1 -d 192.0.2.2 -p udp --sport 1 --dport 2 -l foo"] {
            XCTAssertNil(SaveLine.parse(Substring(text)), text)
        }
    }
}
