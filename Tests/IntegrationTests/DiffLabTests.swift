import Foundation
import XCTest

/// `ctsync diff` in the lab: a capture of the router, the model of it against the router's
/// kernel, then divergences made on purpose, each with its class and cause.
final class DiffLabTests: XCTestCase {
    func testDivergencesMadeOnPurposeAreClassifiedWithTheirCause() throws {
        let lab = try LabNodes(prefix: "df")
        defer { lab.down() }
        let dir = NSTemporaryDirectory() + "difflab-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        lab.on("router", "sysctl -qw net.netfilter.nf_conntrack_acct=1")
        lab.on("router", "tcpdump -q -U --immediate-mode -s 65535 -B 65536 -i r0 -w \(dir)/cap.pcap >/dev/null 2>\(dir)/tcpdump.err & echo $! > \(dir)/tcpdump.pid")
        for _ in 0..<50 where !((try? String(contentsOfFile: dir + "/tcpdump.err", encoding: .utf8)) ?? "").contains("listening") {
            usleep(100_000)
        }
        lab.on("server", "timeout 5 nc -l 203.0.113.2 8080 >/dev/null 2>&1 &")
        usleep(300_000)
        lab.on("client", "ping -c 2 -i 0.2 203.0.113.2 >/dev/null; echo hi | nc -q 1 -w 2 203.0.113.2 8080; echo q | nc -u -q 1 -w 1 203.0.113.2 5353")
        usleep(500_000)
        lab.on("router", "kill -INT $(cat \(dir)/tcpdump.pid); sleep 0.5")
        let model = "\(Lab.ctsync) diff --pcap \(dir)/cap.pcap --sysctls builtin --sysctl nf_conntrack_acct=1"

        let same = lab.on("router", model)
        XCTAssertEqual(same.status, 0, "model and kernel agree before anything is changed: \(same.stdout)")
        XCTAssertTrue(same.stdout.contains("no divergence"), same.stdout)

        // Save a snapshot, then change the kernel's table behind the model's back.
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) dump -o json > \(dir)/before.jsonl").status, 0)
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) delete -p udp").status, 0)
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) update -p icmp -m 7").status, 0)

        let r = lab.on("router", model + " -o json")
        XCTAssertEqual(r.status, 1, r.stderr)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines[0].contains("\"by_class\":{\"only-in-a\":1,\"mark\":1}"), lines[0])
        XCTAssertTrue(lines.contains { $0.contains("\"classes\":[\"only-in-a\"],\"cause\":\"gone-from-kernel\"") && $0.contains("\"proto\":17") }, r.stdout)
        XCTAssertTrue(lines.contains { $0.contains("\"classes\":[\"mark\"],\"cause\":\"mark\"") }, r.stdout)

        let snap = lab.on("router", "\(Lab.ctsync) diff snapshot:\(dir)/before.jsonl kernel --ignore timeout")
        XCTAssertEqual(snap.status, 1)
        XCTAssertTrue(snap.stdout.contains("cause: in the snapshot but not in the kernel"), snap.stdout)

        let bad = lab.on("router", "\(Lab.ctsync) diff snapshot:/nonexistent kernel")
        XCTAssertEqual(bad.status, 2)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
    }
}

/// `ctsync diff` on snapshot files (no root needed).
final class SnapshotDiffTests: XCTestCase {
    func line(_ sport: Int, proto: Int = 17, mark: Int = 0) -> String {
        #"{"v":1,"family":"ipv4","proto":\#(proto),"orig":{"src":"192.0.2.1","dst":"192.0.2.2","sport":\#(sport),"dport":53},"# +
            #""reply":{"src":"192.0.2.2","dst":"192.0.2.1","sport":53,"dport":\#(sport)},"status":8,"timeout":30,"mark":\#(mark)}"#
    }

    func testWhereLimitsTheComparedEntries() throws {
        let dir = NSTemporaryDirectory() + "snapdiff-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try [line(1000), line(1001), line(1002, proto: 6)].joined(separator: "\n").write(toFile: dir + "/a", atomically: true, encoding: .utf8)
        try [line(1000, mark: 7), line(1002, proto: 6, mark: 1)].joined(separator: "\n").write(toFile: dir + "/b", atomically: true, encoding: .utf8)
        let all = Lab.run("\(Lab.ctsync) diff snapshot:\(dir)/a snapshot:\(dir)/b -o json")
        XCTAssertEqual(all.status, 1)
        XCTAssertTrue(all.stdout.contains(#""by_class":{"only-in-a":1,"mark":2}"#), all.stdout)
        let one = Lab.run("\(Lab.ctsync) diff snapshot:\(dir)/a snapshot:\(dir)/b -o json --where '-p udp --sport 1001'")
        XCTAssertEqual(one.status, 1)
        XCTAssertTrue(one.stdout.contains(#""count_a":1,"count_b":0"#), one.stdout)
        XCTAssertTrue(one.stdout.contains(#""by_class":{"only-in-a":1}"#), one.stdout)
        let bad = Lab.run("\(Lab.ctsync) diff snapshot:\(dir)/a snapshot:\(dir)/b --where '-p nosuchproto'")
        XCTAssertEqual(bad.status, 2)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
        try "{\"v\":1,\"proto\":17}\n".write(toFile: dir + "/broken", atomically: true, encoding: .utf8)
        let broken = Lab.run("\(Lab.ctsync) diff snapshot:\(dir)/a snapshot:\(dir)/broken")
        XCTAssertEqual(broken.status, 2)
        XCTAssertEqual(broken.stderr, "ctsync diff: \(dir)/broken:1: missing or bad \"orig\"\n")
    }
}
