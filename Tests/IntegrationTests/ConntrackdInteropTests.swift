import Foundation
import XCTest

/// conntrackd interoperability (issue 6): a stock conntrackd 1.4.x active node replicates
/// into a ctsync standby, and a ctsync active node into a stock conntrackd standby, FTFW over
/// UDP on the lab's sync link; after each side's commit the standby's kernel holds the
/// router's entries (what conntrackd's format carries: no counters, timeouts recomputed).
final class ConntrackdInteropTests: XCTestCase {
    var lab: LabNodes!
    var dir = ""

    override func setUpWithError() throws {
        try Conntrackd.require()
        lab = try LabNodes(prefix: "cd")
        dir = NSTemporaryDirectory() + "conntrackd-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // conntrackd 1.4.7's configuration parser refuses the interface name "b2".
        for (node, from, to) in [("router", "r2", "sync0"), ("standby", "b2", "sync1")] {
            XCTAssertEqual(lab.on(node, "ip link set \(from) down && ip link set \(from) name \(to) && ip link set \(to) up").status, 0)
        }
        for (node, me, peer, dev) in [("router", "192.0.2.1", "192.0.2.2", "sync0"), ("standby", "192.0.2.2", "192.0.2.1", "sync1")] {
            try Conntrackd.config(dir: dir, node: node, address: me, peer: peer, interface: dev)
                .write(toFile: "\(dir)/\(node).conf", atomically: true, encoding: .utf8)
        }
    }

    override func tearDown() {
        // "[c]" keeps the pattern from matching the shell that runs pkill.
        Lab.run("pkill -f '[c]onntrackd -C \(dir)/'; pkill -f '[r]eplicate .*\(dir)/'")
        usleep(200_000)
        lab?.down()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func createEntries(_ range: Range<Int>) {
        for sport in range {
            XCTAssertEqual(lab.on("router", "\(Lab.ctsync) create -p udp -s 198.51.100.2 -d 203.0.113.2 --sport \(sport) --dport 53 -t 600 -m \(sport)").status, 0)
        }
    }

    func routerEntries() -> Int {
        lab.on("router", "\(Lab.ctsync) dump").stdout.split(separator: "\n").filter { !$0.contains("src=192.0.2.") }.count
    }

    func poll(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end { if condition() { return true }; usleep(200_000) }
        return condition()
    }

    /// The standby's kernel equals the router's table, as far as conntrackd's format carries.
    func assertStandbyKernelEqualsRouter(file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) snapshot save \(dir)/router.jsonl").status, 0)
        let diff = lab.on("standby", "\(Lab.ctsync) diff snapshot:\(dir)/router.jsonl kernel --ignore timeout,counters --where '-p udp --dport 53'")
        XCTAssertEqual(diff.status, 0, String(diff.stdout.prefix(2000)), file: file, line: line)
    }

    func testAConntrackdActiveNodeReplicatesIntoACtsyncStandby() throws {
        createEntries(1000..<1020)
        // The sync link is captured for `ctsync replicate decode`.
        XCTAssertEqual(lab.on("standby", "tcpdump -q -U --immediate-mode -s 65535 -B 65536 -i sync1 -w \(dir)/sync.pcap udp port 3780 >/dev/null 2>\(dir)/tcpdump.err & echo $! > \(dir)/tcpdump.pid").status, 0)
        for _ in 0..<50 where !((try? String(contentsOfFile: dir + "/tcpdump.err", encoding: .utf8)) ?? "").contains("listening") { usleep(100_000) }
        XCTAssertEqual(lab.on("standby", "\(Lab.ctsync) replicate standby --conntrackd 192.0.2.2:3780,192.0.2.1:3780 --control \(dir)/standby.sock > \(dir)/ctsync.log 2>&1 &").status, 0)
        usleep(300_000)
        XCTAssertEqual(lab.on("router", "conntrackd -C \(dir)/router.conf > \(dir)/router.out 2>&1 &").status, 0)
        usleep(1_000_000)
        createEntries(1020..<1025)                                   // events after the resync
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) delete -p udp --sport 1024").status, 0)
        func cached() -> Int? {
            let s = lab.on("standby", "\(Lab.ctsync) replicate status --control \(dir)/standby.sock").stdout
            return s.range(of: #"cache (\d+) entries"#, options: .regularExpression).flatMap { Int(s[$0].dropFirst(6).prefix { $0.isNumber }) }
        }
        let want = routerEntries()
        XCTAssertTrue(poll(10) { cached() == want }, "ctsync's cache holds \(cached() ?? -1) of the router's \(want) entries")
        let commit = lab.on("standby", "\(Lab.ctsync) replicate commit --control \(dir)/standby.sock")
        XCTAssertEqual(commit.status, 0, commit.stdout + commit.stderr)
        assertStandbyKernelEqualsRouter()

        lab.on("standby", "kill -INT $(cat \(dir)/tcpdump.pid); sleep 0.5")
        let decoded = Lab.run("\(Lab.ctsync) replicate decode \(dir)/sync.pcap")
        XCTAssertEqual(decoded.status, 0, decoded.stderr)
        XCTAssertTrue(decoded.stdout.contains("192.0.2.2 seq="), decoded.stdout)
        XCTAssertTrue(decoded.stdout.contains(" CT_NEW"), String(decoded.stdout.suffix(3000)))
        XCTAssertTrue(decoded.stdout.contains("192.0.2.1: 0 sequence gaps"), decoded.stdout)
        XCTAssertTrue(decoded.stdout.contains("192.0.2.2: 0 sequence gaps"), decoded.stdout)
        XCTAssertTrue(decoded.stdout.contains("RESYNC"), "the ctsync standby asked for a resync")
    }

    func testACtsyncActiveNodeReplicatesIntoAConntrackdStandby() throws {
        createEntries(2000..<2020)
        XCTAssertEqual(lab.on("standby", "conntrackd -C \(dir)/standby.conf > \(dir)/standby.out 2>&1 &").status, 0)
        XCTAssertTrue(poll(5) { lab.on("standby", "test -S \(dir)/standby.ctl").status == 0 }, "conntrackd started")
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) replicate active --conntrackd 192.0.2.1:3780,192.0.2.2:3780 --control \(dir)/active.sock --refresh 1 > \(dir)/ctsync.log 2>&1 &").status, 0)
        usleep(1_000_000)
        createEntries(2020..<2025)                                   // events
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) delete -p udp --sport 2024").status, 0)
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) update -p udp --sport 2001 -m 99").status, 0)
        func external() -> Int? {
            let s = lab.on("standby", "conntrackd -C \(dir)/standby.conf -s cache").stdout
            guard let r = s.range(of: #"cache:external\s+active objects:\s+(\d+)"#, options: .regularExpression) else { return nil }
            return Int(s[r].split(separator: " ").last ?? "")
        }
        let want = routerEntries()
        XCTAssertTrue(poll(10) { external() == want }, "conntrackd's external cache holds \(external() ?? -1) of the router's \(want) entries: "
                      + lab.on("standby", "conntrackd -C \(dir)/standby.conf -e").stdout)
        usleep(1_500_000)                                             // the refresh carries the mark change of an older entry
        XCTAssertEqual(lab.on("standby", "conntrackd -C \(dir)/standby.conf -c").status, 0)
        assertStandbyKernelEqualsRouter()
    }
}
