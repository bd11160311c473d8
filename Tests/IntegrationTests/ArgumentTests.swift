import Foundation
import XCTest

/// Bad arguments to ctsync's own commands: one line on stderr, exit status 2. Needs no root.
final class ArgumentTests: XCTestCase {
    static let bad = [
        "dump -p nosuchproto", "dump -s 300.1.1.1", "dump -s 192.0.2.0/40", "dump -o bogus", "dump -m zz",
        "dump -w 70000", "dump -t 5", "dump nosuchtable", "dump --state ESTABLISHED", "dump -f ipx",
        "get -p tcp -s 192.0.2.1", "create -p tcp -s 192.0.2.1 -d 192.0.2.2 --sport 1 --dport 2 -t 5",
        "create -p udp -s 192.0.2.1 -d 192.0.2.2 --sport 1 --dport 70000 -t 5", "create -p udp -s 192.0.2.1 -d 2001:db8::1",
        "delete -e NEW", "events -t 5", "events -e BOGUS", "flush -p tcp", "count -s 192.0.2.1", "dump -u NOSUCHBIT",
        "dump -s", "dump --nosuchoption", "update -p tcp --sport x",
        "track", "track F -o xml", "track F --at yesterday", "track F --sysctl nosuch=1",
        "track F --sysctl nf_conntrack_tcp_loose=x", "track F --zone x", "track F --mark 1:port=80",
        "track F --helper sip:udp/5060", "track F --label 200", "track F --sysctls /nonexistent",
        "track /nonexistent.pcap", "track F --timeline proto=nosuch", "track F -i lo",
    ].map { $0.replacingOccurrences(of: " F", with: " " + Lab.packageRoot.path + "/Tests/IntegrationTests/Fixtures/captures/mixed.pcap") }

    func testEveryBadArgumentGetsOneLineAndStatus2() throws {
        guard FileManager.default.isExecutableFile(atPath: Lab.ctsync) else { throw XCTSkip("ctsync not built") }
        for args in Self.bad {
            let r = Lab.run("\(Lab.ctsync) \(args)")
            XCTAssertEqual(r.status, 2, "`\(args)`: \(r.stderr)")
            XCTAssertEqual(r.stdout, "", args)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "`\(args)`: \(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("ctsync: ") || r.stderr.hasPrefix("ctsync track: "), r.stderr)
        }
    }

    func testTableSubcommandsAnswerHelp() {
        for sub in ["dump", "count", "create"] {
            let r = Lab.run("\(Lab.ctsync) \(sub) --help")
            XCTAssertEqual(r.status, 0, sub)
            XCTAssertTrue(r.stdout.contains("USAGE: ctsync \(sub)"), r.stdout)
        }
    }

    func testShowRejectsABadSnapshotWithItsLineNumber() throws {
        guard FileManager.default.isExecutableFile(atPath: Lab.ctsync) else { throw XCTSkip("ctsync not built") }
        let good = try String(contentsOfFile: Lab.packageRoot.appendingPathComponent("contrib/demo/snapshot.jsonl").path, encoding: .utf8)
        let r = Lab.run("\(Lab.ctsync) show -", input: good + "{\"v\":1,\"proto\":6}\n")
        XCTAssertEqual(r.status, 2)
        XCTAssertEqual(r.stderr, "ctsync show: -:\(good.split(separator: "\n").count + 1): missing or bad \"orig\"\n")
    }

    func testShowPrintsABundledSnapshotAsConntrackText() throws {
        guard FileManager.default.isExecutableFile(atPath: Lab.ctsync) else { throw XCTSkip("ctsync not built") }
        let r = Lab.run("\(Lab.ctsync) show \(Lab.packageRoot.path)/contrib/demo/snapshot.jsonl -o extended")
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.stdout.contains("ipv4     2 tcp      6 3599 ESTABLISHED src=192.0.2.1 dst=198.51.100.2 sport=1000 dport=80 src=198.51.100.2"), r.stdout)
    }
}

/// What `ctsync track` cannot know, it says: a capture that starts mid-connection.
final class TrackSummaryTests: XCTestCase {
    /// A classic pcap (LINKTYPE_RAW) of the given IPv4 packets, one per millisecond.
    static func pcap(_ packets: [[UInt8]]) -> Data {
        func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
        var d = le32(0xa1b2c3d4) + [2, 0, 4, 0] + le32(0) + le32(0) + le32(65535) + le32(101)
        for (i, p) in packets.enumerated() {
            d += le32(1_700_000_000) + le32(UInt32(i * 1000)) + le32(UInt32(p.count)) + le32(UInt32(p.count)) + p
        }
        return Data(d)
    }

    /// IPv4 + TCP with the ACK flag: a correct IP header checksum (the IP layer drops bad
    /// ones before conntrack), the TCP checksum left zero (the test turns checking off).
    static func midStreamACK() -> [UInt8] {
        var ip: [UInt8] = [0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0, 198, 51, 100, 2, 203, 0, 113, 2]
        var sum = stride(from: 0, to: 20, by: 2).reduce(UInt32(0)) { $0 + (UInt32(ip[$1]) << 8 | UInt32(ip[$1 + 1])) }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        ip[10] = UInt8((~sum >> 8) & 0xff)
        ip[11] = UInt8(~sum & 0xff)
        let tcp: [UInt8] = [0x9c, 0x40, 0, 80, 0, 0, 0x10, 0, 0, 0, 0x20, 0, 0x50, 0x10, 0x01, 0xf5, 0, 0, 0, 0]
        return ip + tcp
    }

    func testAConnectionOpenBeforeTheCaptureIsReportedAsUncertain() throws {
        guard FileManager.default.isExecutableFile(atPath: Lab.ctsync) else { throw XCTSkip("ctsync not built") }
        let file = NSTemporaryDirectory() + "midstream-\(getpid()).pcap"
        try Self.pcap([Self.midStreamACK()]).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = Lab.run("\(Lab.ctsync) track \(file) --sysctls builtin --sysctl nf_conntrack_checksum=0 -o extended")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("ESTABLISHED src=198.51.100.2 dst=203.0.113.2 sport=40000 dport=80"), r.stdout)
        XCTAssertTrue(r.stderr.contains("uncertain: 1 TCP connections were picked up mid-stream"), r.stderr)
        let strict = Lab.run("\(Lab.ctsync) track \(file) --sysctls builtin --sysctl nf_conntrack_checksum=0 --sysctl nf_conntrack_tcp_loose=0 --verdicts -q")
        XCTAssertTrue(strict.stdout.contains("INVALID reason=\"not a SYN and nf_conntrack_tcp_loose=0\""), strict.stdout)
    }
}
