import Foundation
import XCTest

/// `ctsync replicate` between the lab's router (active) and standby over their sync link
/// (192.0.2.1 ↔ 192.0.2.2): bulk transfer, events, commit into the standby's kernel, and
/// what the standby refuses.
final class ReplicationLabTests: XCTestCase {
    final class Daemon {
        let process = Process()
        let log: String
        init(lab: LabNodes, node: String, arguments: [String]) throws {
            log = NSTemporaryDirectory() + "replicate-\(getpid())-\(node)-\(UUID().uuidString).log"
            FileManager.default.createFile(atPath: log, contents: nil)
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", "\(lab.prefix)-\(node)", Lab.ctsync, "replicate"] + arguments
            // One handle for both, so that they append to each other instead of overwriting.
            let out = FileHandle(forWritingAtPath: log)
            process.standardOutput = out
            process.standardError = out
            try process.run()
        }
        var text: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        func stop() {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: log)
        }
    }

    var lab: LabNodes!
    var dir = ""
    var daemons: [Daemon] = []

    override func setUpWithError() throws {
        lab = try LabNodes(prefix: "rp")
        dir = NSTemporaryDirectory() + "replicate-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "a pre-shared key of the lab, 42 bytes long.\n".write(toFile: dir + "/key", atomically: true, encoding: .utf8)
        try "another key, also long enough to be used\n".write(toFile: dir + "/wrong", atomically: true, encoding: .utf8)
    }

    override func tearDown() {
        for d in daemons { d.stop() }
        daemons = []
        lab?.down()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func start(_ node: String, _ args: [String]) throws -> Daemon {
        let d = try Daemon(lab: lab, node: node, arguments: args)
        daemons.append(d)
        return d
    }

    /// Polls a control command until it exits 0 (or the time is up); returns the last result.
    @discardableResult
    func until(_ node: String, _ command: String, seconds: Double = 10) -> Lab.Result {
        let end = Date().addingTimeInterval(seconds)
        var r = lab.on(node, command)
        while r.status != 0 && Date() < end {
            usleep(200_000)
            r = lab.on(node, command)
        }
        return r
    }

    func startPair(standbyOptions: [String] = [], activeOptions: [String] = []) throws {
        _ = try start("standby", ["standby", "--listen", "192.0.2.2:7890", "--key-file", dir + "/key", "--name", "standby",
                                  "--control", dir + "/standby.sock"] + standbyOptions)
        XCTAssertEqual(until("standby", "test -S \(dir)/standby.sock").status, 0, "standby started")
        _ = try start("router", ["active", "--peer", "192.0.2.2:7890", "--key-file", dir + "/key", "--name", "router",
                                 "--control", dir + "/active.sock", "--refresh", "1"] + activeOptions)
    }

    func cacheCount() -> Int? {
        let status = lab.on("standby", "\(Lab.ctsync) replicate status --control \(dir)/standby.sock").stdout
        guard let r = status.range(of: #"cache (\d+) entries"#, options: .regularExpression) else { return nil }
        return Int(status[r].dropFirst(6).prefix { $0.isNumber })
    }

    func testTheStandbyFollowsTheActiveAndCommitsAnEqualTable() throws {
        // Entries made before the active starts travel in the bulk transfer.
        for sport in 1000..<1020 {
            XCTAssertEqual(lab.on("router", "\(Lab.ctsync) create -p udp -s 198.51.100.2 -d 203.0.113.2 --sport \(sport) --dport 53 -t 600 -m \(sport % 3)").status, 0)
        }
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) create -p tcp -s 198.51.100.2 -d 203.0.113.2 --sport 2000 --dport 80 --state ESTABLISHED -t 600 -u ASSURED,SEEN_REPLY").status, 0)
        try startPair()
        let ready = until("standby", "\(Lab.ctsync) replicate ready --control \(dir)/standby.sock")
        XCTAssertEqual(ready.status, 0, ready.stdout + ready.stderr)
        XCTAssertEqual(cacheCount(), 21)

        // Changes after it travel as events.
        lab.on("client", "ping -c 2 -i 0.2 203.0.113.2 >/dev/null")
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) delete -p udp --sport 1000").status, 0)
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) update -p udp --sport 1001 -m 77").status, 0)
        // Entries older than the event socket send no events (nf_conntrack_events=2): their
        // changes travel with the next comparison (--refresh 1). Then every frame sent has
        // been acknowledged: the standby has applied the changes.
        usleep(2_200_000)
        let activeStatus = until("router", "\(Lab.ctsync) replicate ready --max-lag 0 --control \(dir)/active.sock")
        XCTAssertEqual(activeStatus.status, 0, activeStatus.stdout)
        XCTAssertTrue(activeStatus.stdout.contains("in step"), activeStatus.stdout)
        // The replication connection itself is not replicated.
        let expected = lab.on("router", "\(Lab.ctsync) dump").stdout.split(separator: "\n").filter { !$0.contains("dport=7890") }.count
        XCTAssertEqual(cacheCount(), expected, "the cache holds what the router holds")

        // The router's table against the standby's copy, over the replication protocol.
        let peer = lab.on("router", "\(Lab.ctsync) diff peer:192.0.2.2:7890 kernel --key-file \(dir)/key --ignore timeout,counters --where '-p udp'")
        XCTAssertEqual(peer.status, 0, peer.stdout + peer.stderr)
        let wrongKey = lab.on("router", "\(Lab.ctsync) diff peer:192.0.2.2:7890 kernel --key-file \(dir)/wrong")
        XCTAssertEqual(wrongKey.status, 2, wrongKey.stdout)
        XCTAssertEqual(wrongKey.stderr.split(separator: "\n").count, 1, wrongKey.stderr)

        // Commit, then the standby's kernel is the router's, timeouts aside.
        let commit = lab.on("standby", "\(Lab.ctsync) replicate commit --control \(dir)/standby.sock")
        XCTAssertEqual(commit.status, 0, commit.stdout + commit.stderr)
        XCTAssertTrue(commit.stdout.contains("committed \(expected) entries"), commit.stdout)
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) snapshot save \(dir)/router.jsonl").status, 0)
        let diff = lab.on("standby", "\(Lab.ctsync) diff snapshot:\(dir)/router.jsonl kernel --ignore timeout,counters --where '-p udp'")
        XCTAssertEqual(lab.on("standby", "\(Lab.ctsync) diff snapshot:\(dir)/router.jsonl kernel --ignore timeout,counters --where '-p icmp'").status, 0)
        XCTAssertEqual(lab.on("standby", "\(Lab.ctsync) diff snapshot:\(dir)/router.jsonl kernel --ignore timeout,counters --where '-p tcp --dport 80'").status, 0)
        XCTAssertEqual(diff.status, 0, diff.stdout + lab.on("standby", "\(Lab.ctsync) dump").stdout)
    }

    func testAnEntryKeptAliveWithoutEventsStaysAliveOnTheStandby() throws {
        // An entry older than the event socket whose timeout the kernel renews (here by an
        // update, as traffic would) sends no event: without a renewal the standby's copy
        // would run out after 4 s and its commit would leave the entry out.
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) create -p udp -s 198.51.100.2 -d 203.0.113.2 --sport 6000 --dport 53 -t 4").status, 0)
        try startPair()
        XCTAssertEqual(until("standby", "\(Lab.ctsync) replicate ready --control \(dir)/standby.sock").status, 0)
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) update -p udp --sport 6000 -t 600").status, 0)
        usleep(6_000_000)
        let commit = lab.on("standby", "\(Lab.ctsync) replicate commit --control \(dir)/standby.sock")
        XCTAssertTrue(commit.stdout.contains("committed 1 entries"), commit.stdout + commit.stderr)
        let got = lab.on("standby", "\(Lab.ctsync) get -p udp -s 198.51.100.2 -d 203.0.113.2 --sport 6000 --dport 53 -o json").stdout
        let timeout = got.range(of: #""timeout":(\d+)"#, options: .regularExpression).map { Int(got[$0].dropFirst(10)) ?? 0 } ?? 0
        XCTAssertGreaterThan(timeout, 500, got)
        let active = lab.on("router", "\(Lab.ctsync) replicate status --control \(dir)/active.sock").stdout
        XCTAssertTrue(active.contains("timeouts renewed: 1)"), active)
    }

    func testFramesWithAWrongKeyOrRandomBytesAreRefusedAndChangeNothing() throws {
        try startPair()
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) create -p udp -s 198.51.100.2 -d 203.0.113.2 --sport 3000 --dport 53 -t 600").status, 0)
        XCTAssertEqual(until("standby", "\(Lab.ctsync) replicate ready --control \(dir)/standby.sock").status, 0)
        for _ in 0..<50 where cacheCount() != 1 { usleep(100_000) }
        XCTAssertEqual(cacheCount(), 1)

        // An active node with another key, and a stream of random bytes.
        let intruder = try start("router", ["active", "--peer", "192.0.2.2:7890", "--key-file", dir + "/wrong", "--control", dir + "/intruder.sock"])
        lab.on("router", "head -c 4096 /dev/urandom > /dev/tcp/192.0.2.2/7890")
        lab.on("router", "printf 'CTSR\\001\\002\\000\\000\\177\\377\\377\\377' > /dev/tcp/192.0.2.2/7890")   // 2 GiB payload announced
        usleep(1_500_000)
        intruder.stop()
        let status = lab.on("standby", "\(Lab.ctsync) replicate status --control \(dir)/standby.sock").stdout
        XCTAssertEqual(cacheCount(), 1, "the cache is unchanged: \(status)")
        let refused = status.range(of: #"closed for a bad frame (\d+)"#, options: .regularExpression).map { Int(status[$0].split(separator: " ").last!) ?? 0 } ?? 0
        XCTAssertGreaterThanOrEqual(refused, 3, status)
        let log = daemons[0].text
        XCTAssertTrue(log.contains("authentication failed"), log)
        XCTAssertTrue(log.contains("over the 1048576 limit"), log)
        // The real active is still in step.
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) create -p udp -s 198.51.100.2 -d 203.0.113.2 --sport 3001 --dport 53 -t 600").status, 0)
        for _ in 0..<50 where cacheCount() != 2 { usleep(100_000) }
        XCTAssertEqual(cacheCount(), 2)
    }

    func testAReplayedSessionIsRefusedAndChangesNothing() throws {
        // Record the active node's stream to the standby, then play it back on a new
        // connection: its HELLO authenticates (it is signed with the pre-shared key), but
        // every later frame was signed with the old session's key.
        XCTAssertEqual(lab.on("standby", "tcpdump -q -U --immediate-mode -s 65535 -B 65536 -i b2 -w \(dir)/sync.pcap tcp port 7890 >/dev/null 2>\(dir)/tcpdump.err & echo $! > \(dir)/tcpdump.pid").status, 0)
        for _ in 0..<50 where !((try? String(contentsOfFile: dir + "/tcpdump.err", encoding: .utf8)) ?? "").contains("listening") { usleep(100_000) }
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) create -p udp -s 198.51.100.2 -d 203.0.113.2 --sport 5000 --dport 53 -t 600").status, 0)
        try startPair()
        XCTAssertEqual(until("standby", "\(Lab.ctsync) replicate ready --control \(dir)/standby.sock").status, 0)
        for _ in 0..<50 where cacheCount() != 1 { usleep(100_000) }
        lab.on("standby", "kill -INT $(cat \(dir)/tcpdump.pid); sleep 0.5")
        // The bytes the active node sent (tcpdump's payload of 192.0.2.1 → 192.0.2.2).
        let extract = lab.on("standby", "tcpdump -r \(dir)/sync.pcap -w - 'src host 192.0.2.1 and tcp[tcpflags] & tcp-push != 0' 2>/dev/null | wc -c")
        XCTAssertNotEqual(extract.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "0")
        let python = """
        import sys
        from scapy.all import rdpcap, TCP, IP
        data = b''.join(bytes(p[TCP].payload) for p in rdpcap(sys.argv[1]) if IP in p and p[IP].src == '192.0.2.1' and TCP in p)
        open(sys.argv[2], 'wb').write(data)
        """
        try python.write(toFile: dir + "/extract.py", atomically: true, encoding: .utf8)
        XCTAssertEqual(Lab.run("/usr/bin/python3 \(dir)/extract.py \(dir)/sync.pcap \(dir)/stream.bin").status, 0)
        // Remove the entry at the router: a replay that worked would bring it back on the standby.
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) delete -p udp --sport 5000").status, 0)
        usleep(2_500_000)                  // the comparison (--refresh 1) carries the deletion
        XCTAssertEqual(cacheCount(), 0)
        lab.on("router", "cat \(dir)/stream.bin > /dev/tcp/192.0.2.2/7890; sleep 1")
        XCTAssertEqual(cacheCount(), 0, "the replayed stream changed nothing")
        XCTAssertTrue(daemons[0].text.contains("authentication failed"), daemons[0].text)
    }

    func testAntiEntropyRepairsWhatTheStandbyLostBucketByBucket() throws {
        for sport in 4000..<4040 {
            XCTAssertEqual(lab.on("router", "\(Lab.ctsync) create -p udp -s 198.51.100.2 -d 203.0.113.2 --sport \(sport) --dport 53 -t 600").status, 0)
        }
        for sport in 4100..<4103 {       // left out by --ignore-address
            XCTAssertEqual(lab.on("router", "\(Lab.ctsync) create -p udp -s 10.99.0.1 -d 203.0.113.2 --sport \(sport) --dport 53 -t 600").status, 0)
        }
        try startPair(standbyOptions: ["--digest-interval", "1", "--metrics", "127.0.0.1:9475"], activeOptions: ["--ignore-address", "10.99.0.0/16"])
        XCTAssertEqual(until("standby", "\(Lab.ctsync) replicate ready --control \(dir)/standby.sock").status, 0)
        for _ in 0..<50 where cacheCount() != 40 { usleep(100_000) }
        XCTAssertEqual(cacheCount(), 40)
        // The standby loses its copy; its next digests tell the active node which buckets differ.
        XCTAssertEqual(lab.on("standby", "\(Lab.ctsync) replicate flush --control \(dir)/standby.sock").status, 0)
        XCTAssertEqual(cacheCount(), 0)
        for _ in 0..<60 where cacheCount() != 40 { usleep(100_000) }
        XCTAssertEqual(cacheCount(), 40, "repaired by anti-entropy")
        let standby = lab.on("standby", "\(Lab.ctsync) replicate status --control \(dir)/standby.sock").stdout
        XCTAssertNil(standby.range(of: "buckets repaired 0\n"), standby)
        let active = lab.on("router", "\(Lab.ctsync) replicate status --control \(dir)/active.sock").stdout
        XCTAssertTrue(active.contains("bulk transfers 1, copies re-sent 0,"), "no full re-send: \(active)")
        let metrics = lab.on("standby", "exec 3<>/dev/tcp/127.0.0.1/9475; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3").stdout
        XCTAssertTrue(metrics.contains("ctsync_replicate_cache_entries 40\n"), metrics)
        XCTAssertTrue(metrics.contains("ctsync_replicate_ready 1\n"), metrics)
        XCTAssertNil(metrics.range(of: "ctsync_replicate_buckets_repaired_total 0\n"), metrics)
    }

    func testBadArgumentsAreOneLineErrors() throws {
        for args in ["active --peer nowhere --key-file /dev/null", "standby --listen 1.2.3.4 --key-file /dev/null",
                     "standby --listen 127.0.0.1:7 --key-file /nonexistent", "status --control /nonexistent.sock",
                     "active --peer 127.0.0.1:7 --ignore-address nonsense", "active --conntrackd 1.2.3.4"] {
            let r = Lab.run("\(Lab.ctsync) replicate \(args)")
            XCTAssertEqual(r.status, 2, args)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "\(args): \(r.stderr)")
        }
    }
}
