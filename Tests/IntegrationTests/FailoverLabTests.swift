import Foundation
import XCTest

/// The failover test of issue 6 (contrib/lab/failover.sh, contrib/lab/ha_traffic.py): a
/// client and a server talk through the active router over 200 long-lived TCP connections
/// and 50 UDP flows; both routers drop what is not established (nf_conntrack_tcp_loose=0);
/// the active node's ctsync is killed with SIGKILL, the standby commits, the virtual
/// addresses move to it, and every connection keeps exchanging data.
final class FailoverLabTests: XCTestCase {
    static let script = Lab.packageRoot.appendingPathComponent("contrib/lab/failover.sh").path
    static let traffic = Lab.packageRoot.appendingPathComponent("contrib/lab/ha_traffic.py").path

    var prefix = ""
    var dir = ""

    override func setUpWithError() throws {
        try Lab.requireRoot()
        prefix = "fo\(getpid() % 100000)"
        let up = Lab.run("bash \(FailoverLabTests.script) up \(prefix)")
        guard up.status == 0 else { throw LabError(message: "failover lab: \(up.stderr)") }
        dir = NSTemporaryDirectory() + "failover-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "the failover lab's pre-shared key, long enough\n".write(toFile: dir + "/key", atomically: true, encoding: .utf8)
    }

    override func tearDown() {
        // "[x]" keeps each pattern from matching the shell that runs pkill.
        Lab.run("pkill -f '[r]eplicate .*\(dir)/'; pkill -f '[h]a_traffic.py serve 203.0.113.2 9000'; pkill -f '[c]onntrackd -C \(dir)'")
        Lab.run("bash \(FailoverLabTests.script) down \(prefix)")
        try? FileManager.default.removeItem(atPath: dir)
    }

    func on(_ node: String, _ command: String) -> Lab.Result {
        Lab.run("ip netns exec \(prefix)-\(node) bash -c \(Namespace.quote(command))")
    }

    /// Starts the echo server and the client; returns the client's process (its last
    /// stdout line is the JSON summary) once every connection is open.
    func startTraffic(tcp: Int, udp: Int, seconds: Int) throws -> (Process, String) {
        XCTAssertEqual(on("server", "python3 \(FailoverLabTests.traffic) serve 203.0.113.2 9000 9001 > \(dir)/server.log 2>&1 &").status, 0)
        for _ in 0..<50 where !((try? String(contentsOfFile: dir + "/server.log", encoding: .utf8)) ?? "").contains("ready") { usleep(100_000) }
        let out = dir + "/client.out"
        FileManager.default.createFile(atPath: out, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", "\(prefix)-client", "python3", FailoverLabTests.traffic, "client", "203.0.113.2", "9000", "9001",
                       "\(tcp)", "\(udp)", "\(seconds)"]
        let handle = FileHandle(forWritingAtPath: out)   // one handle: stderr appends, never overwrites
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        for _ in 0..<100 where !((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").contains("ready") { usleep(100_000) }
        return (p, out)
    }

    func summary(_ p: Process, _ out: String) throws -> [String: Any] {
        p.waitUntilExit()
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").last, line.hasPrefix("{"),
              let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw LabError(message: "traffic client printed no summary: \(text)")
        }
        return o
    }

    func startStandby(extra: String = "") {
        XCTAssertEqual(on("standby", "\(Lab.ctsync) replicate standby --listen 192.0.2.2:7890 --key-file \(dir)/key --control \(dir)/standby.sock \(extra) >> \(dir)/standby.log 2>&1 &").status, 0)
        for _ in 0..<50 where on("standby", "test -S \(dir)/standby.sock").status != 0 { usleep(100_000) }
    }

    /// The failover, with `disturb` run while the traffic flows and before the active dies;
    /// then every connection must keep exchanging data, and right after the commit the two
    /// routers' tables must agree on the user traffic, timeouts aside.
    func failover(activeOptions: String = "", conntrackdActive: Bool = false, disturb: () throws -> Void = {}) throws {
        let ctsync = Lab.ctsync
        if conntrackdActive {
            startStandby(extra: "--conntrackd 192.0.2.2:3780,192.0.2.1:3780")
            XCTAssertEqual(on("router", "conntrackd -C \(try conntrackdConfig()) > \(dir)/conntrackd.out 2>&1 &").status, 0)
        } else {
            startStandby()
            XCTAssertEqual(on("router", "\(ctsync) replicate active --peer 192.0.2.2:7890 --key-file \(dir)/key --control \(dir)/active.sock --refresh 2 \(activeOptions) > \(dir)/active.log 2>&1 &").status, 0)
        }
        let (client, out) = try startTraffic(tcp: 200, udp: 50, seconds: 16)
        usleep(1_500_000)
        try disturb()
        let ready = until("standby", "\(ctsync) replicate ready --control \(dir)/standby.sock", seconds: 8)
        XCTAssertEqual(ready.status, 0, "standby in step before the failover: \(ready.stdout)")
        usleep(2_500_000)   // a comparison (--refresh 2) has repaired what events could not carry

        // The active node dies; the standby commits before the addresses move to it.
        XCTAssertEqual(on("router", conntrackdActive ? "pkill -9 -f 'conntrackd -C \(dir)'" : "pkill -9 -f 'replicate active.*\(dir)'").status, 0)
        let commit = on("standby", "\(ctsync) replicate commit --control \(dir)/standby.sock")
        XCTAssertEqual(commit.status, 0, commit.stdout + commit.stderr)
        // The standby's table now agrees with the router's on the user traffic, timeouts aside.
        XCTAssertEqual(on("router", "\(ctsync) snapshot save \(dir)/router.jsonl").status, 0)
        for flows in ["-p tcp --dport 9000", "-p udp --dport 9001"] {
            let diff = on("standby", "\(ctsync) diff snapshot:\(dir)/router.jsonl kernel --ignore timeout,counters --where '\(flows)'")
            XCTAssertEqual(diff.status, 0, "\(flows): \(diff.stdout.prefix(1500))")
        }
        XCTAssertEqual(Lab.run("bash \(FailoverLabTests.script) takeover \(prefix)").status, 0)

        let s = try summary(client, out)
        XCTAssertEqual(s["reset"] as? Int, 0, "no connection was reset: \(s)")
        XCTAssertEqual(s["tcp_silent_at_end"] as? Int, 0, "every TCP connection still exchanges data: \(s)")
        XCTAssertEqual(s["udp_silent_at_end"] as? Int, 0, "every UDP flow still exchanges data: \(s)")
    }

    func until(_ node: String, _ command: String, seconds: Double) -> Lab.Result {
        let end = Date().addingTimeInterval(seconds)
        var r = on(node, command)
        while r.status != 0 && Date() < end { usleep(200_000); r = on(node, command) }
        return r
    }

    func testEstablishedConnectionsSurviveAFailover() throws {
        try failover()
    }

    func testTheStandbyRestartedMidStreamCatchesUpByResync() throws {
        try failover {
            XCTAssertEqual(on("standby", "pkill -f 'replicate standby.*\(dir)'").status, 0)
            usleep(500_000)
            startStandby()          // empty; the active reconnects and sends its copy again
            XCTAssertEqual(until("standby", "\(Lab.ctsync) replicate ready --control \(dir)/standby.sock", seconds: 8).status, 0)
            let active = on("router", "\(Lab.ctsync) replicate status --control \(dir)/active.sock").stdout
            XCTAssertTrue(active.contains("bulk transfers 1, copies re-sent 1,"),
                          "the copy in memory sent again after the reconnect, no second dump: \(active)")
        }
    }

    func testTheSyncLinkCutForFiveSecondsCatchesUp() throws {
        try failover {
            XCTAssertEqual(on("router", "ip link set sync0 down").status, 0)
            usleep(5_000_000)
            XCTAssertEqual(on("router", "ip link set sync0 up").status, 0)
        }
    }

    func testAnEventOverflowIsRepaired() throws {
        // A 4 KiB event socket overflows with a burst of 3000 entries made in one batch: the
        // active node re-sends everything, and its comparisons catch the rest.
        try failover(activeOptions: "--event-buffer 4096") {
            let lines = (0..<3000).map { "-I -p udp -s 10.9.\($0 / 250).\($0 % 250 + 1) -d 203.0.113.2 --sport 5000 --dport 53 -t 600" }
            try lines.joined(separator: "\n").write(toFile: dir + "/burst.txt", atomically: true, encoding: .utf8)
            XCTAssertEqual(on("router", "\(Lab.ctsync) conntrack -R \(dir)/burst.txt").status, 0)
            let burstReady = until("standby", "test $(\(Lab.ctsync) replicate status --control \(dir)/standby.sock | grep -o 'cache [0-9]*' | cut -d' ' -f2) -ge 3250", seconds: 10)
            XCTAssertEqual(burstReady.status, 0, "the burst reached the standby")
        }
        let log = (try? String(contentsOfFile: dir + "/active.log", encoding: .utf8)) ?? ""
        XCTAssertTrue(log.contains("event socket overflow"), "the burst overflowed the event socket: \(log.suffix(2000))")
    }

    /// conntrackd's configuration for the active router (FTFW over UDP on the sync link).
    func conntrackdConfig() throws -> String {
        let path = dir + "/conntrackd.conf"
        try Conntrackd.config(dir: dir, node: "conntrackd", address: "192.0.2.1", peer: "192.0.2.2", interface: "sync0")
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testTheSameFailoverWithConntrackdAsTheActiveNode() throws {
        try Conntrackd.require()
        try failover(conntrackdActive: true)
    }

    func testWithoutTheCommitTheStandbyDropsTheConnections() throws {
        // The control: the same takeover with nothing committed stalls every TCP connection
        // (the strict ruleset drops what it has no state for), so the test above can fail.
        let (client, out) = try startTraffic(tcp: 20, udp: 5, seconds: 7)
        usleep(2_500_000)
        XCTAssertEqual(Lab.run("bash \(FailoverLabTests.script) takeover \(prefix)").status, 0)
        let s = try summary(client, out)
        XCTAssertEqual(s["tcp_silent_at_end"] as? Int, 20, "\(s)")
    }
}
