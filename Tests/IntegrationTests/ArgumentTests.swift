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
