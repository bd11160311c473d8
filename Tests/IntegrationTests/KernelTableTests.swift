import Foundation
import XCTest

/// Every table command against the real kernel, in fresh namespaces, checked with conntrack(8).
final class KernelTableTests: XCTestCase {
    var namespaces: [Namespace] = []

    override func tearDown() {
        for ns in namespaces { ns.close() }
        namespaces = []
    }

    func namespace(nat: Bool = false) throws -> Namespace {
        try Lab.requireRoot()
        let ns = try Namespace(nat: nat)
        namespaces.append(ns)
        return ns
    }

    /// A creation line per protocol and family, with marks and zones.
    static let creates = [
        "-p tcp -s 192.0.2.1 -d 198.51.100.2 --sport 1000 --dport 80 --state ESTABLISHED -t 300 -u ASSURED,SEEN_REPLY -m 7",
        "-p tcp -s 2001:db8::1 -d 2001:db8::2 --sport 3000 --dport 80 --state SYN_SENT -t 100 -w 4",
        "-p udp -s 192.0.2.1 -d 198.51.100.53 --sport 5353 --dport 53 -t 30 -m 0x10",
        "-p udp -s 2001:db8::1 -d 2001:db8::53 --sport 4000 --dport 53 -t 30 --orig-zone 1",
        "-p icmp -s 192.0.2.1 -d 192.0.2.2 --icmp-type 8 --icmp-code 0 --icmp-id 77 -t 30",
        "-p icmpv6 -s 2001:db8::1 -d 2001:db8::2 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 9 -t 30",
        "-p sctp -s 192.0.2.1 -d 192.0.2.2 --sport 5 --dport 6 --state ESTABLISHED --orig-vtag 1 --reply-vtag 2 -t 30",
        "-p gre -s 192.0.2.1 -d 192.0.2.2 --srckey 5 --dstkey 6 -t 30",
        "-p udplite -s 192.0.2.1 -d 192.0.2.3 --sport 7 --dport 8 -t 30",
    ]

    func testCreateMakesTheSameEntriesAsConntrack() throws {
        let a = try namespace(), b = try namespace()
        for line in Self.creates {
            XCTAssertEqual(a.run("conntrack -I \(line)").status, 0, line)
            let r = b.ctsync("create \(line)")
            XCTAssertEqual(r.status, 0, "\(line): \(r.stderr)")
        }
        XCTAssertEqual(normalise(a.run("conntrack -L -o extended").stdout), normalise(b.run("conntrack -L -o extended").stdout))
    }

    func testDumpFormatsEqualConntrackOnTheSameTable() throws {
        let ns = try namespace()
        for line in Self.creates { XCTAssertEqual(ns.ctsync("create \(line)").status, 0, line) }
        for o in ["", "-o extended", "-o xml", "-o id", "-o extended,id"] {
            let theirs = ns.run("conntrack -L \(o)"), ours = ns.ctsync("dump \(o)")
            XCTAssertEqual(ours.status, 0)
            XCTAssertEqual(normalise(ours.stdout), normalise(theirs.stdout), "-L \(o)")
            XCTAssertEqual(ours.stderr, "ctsync: \(Self.creates.count) flow entries have been shown.\n")
        }
    }

    func testGetUpdateDeleteCountStatsFlush() throws {
        let ns = try namespace()
        for line in Self.creates { XCTAssertEqual(ns.ctsync("create \(line)").status, 0, line) }
        XCTAssertEqual(ns.ctsync("count").stdout, "\(Self.creates.count)\n")

        let get = ns.ctsync("get -p udp -s 192.0.2.1 -d 198.51.100.53 --sport 5353 --dport 53 -o json")
        XCTAssertEqual(get.status, 0, get.stderr)
        XCTAssertTrue(get.stdout.contains("\"mark\":16"), get.stdout)
        XCTAssertEqual(ns.ctsync("get -p udp -s 192.0.2.1 -d 198.51.100.53 --sport 5353 --dport 54").status, 1)

        let upd = ns.ctsync("update -p udp --dport 53 -m 99")
        XCTAssertEqual(upd.status, 0, upd.stderr)
        XCTAssertEqual(ns.run("conntrack -L -m 99 2>/dev/null | wc -l").stdout.trimmingCharacters(in: .whitespacesAndNewlines), "2")

        let del = ns.ctsync("delete -p tcp")
        XCTAssertEqual(del.status, 0, del.stderr)
        XCTAssertTrue(del.stderr.contains("2 flow entries have been deleted."), del.stderr)
        XCTAssertEqual(ns.ctsync("delete -p tcp").status, 1, "nothing left to delete")
        XCTAssertEqual(ns.run("conntrack -C").stdout, "\(Self.creates.count - 2)\n")

        let stats = ns.ctsync("stats")
        XCTAssertEqual(stats.status, 0)
        XCTAssertTrue(stats.stdout.hasPrefix("cpu=0"), stats.stdout)
        XCTAssertEqual(stats.stdout.split(separator: "\n").count, ns.run("conntrack -S").stdout.split(separator: "\n").count)
        let json = ns.ctsync("stats -o json").stdout
        XCTAssertTrue(json.hasPrefix("{\"v\":1,\"entries\":\(Self.creates.count - 2),\"max\":"), json)
        XCTAssertTrue(json.contains("\"cpus\":[{\"cpu\":0,\"found\":"), json)

        XCTAssertEqual(ns.ctsync("flush").status, 0)
        XCTAssertEqual(ns.run("conntrack -C").stdout, "0\n")
        for table in ["dying", "unconfirmed", "expect"] {
            XCTAssertEqual(ns.ctsync("dump \(table)").status, 0, table)
        }
    }

    func testNATCreateSetsTheReplyTupleAndStatus() throws {
        let ns = try namespace(nat: true)
        XCTAssertEqual(ns.ctsync("create -p udp -s 192.0.2.1 -d 198.51.100.2 --sport 5 --dport 6 -t 50 -n 203.0.113.9:4000").status, 0)
        XCTAssertEqual(ns.ctsync("create -p tcp -s 192.0.2.1 -d 198.51.100.2 --sport 5 --dport 6 -t 50 --state ESTABLISHED -g 203.0.113.10:80").status, 0)
        let snat = ns.ctsync("dump --src-nat 203.0.113.9 -o json").stdout
        XCTAssertTrue(snat.contains("\"reply\":{\"src\":\"198.51.100.2\",\"dst\":\"203.0.113.9\",\"sport\":6,\"dport\":4000}"), snat)
        XCTAssertTrue(snat.contains("\"SRC_NAT\""), snat)
        XCTAssertEqual(ns.ctsync("dump --dst-nat -o save").stdout.split(separator: "\n").count, 1)
        XCTAssertEqual(ns.ctsync("dump --any-nat").stdout.split(separator: "\n").count, 2)
    }

    /// A NAT namespace holding every protocol, zones, marks, labels and SNAT (the lossless
    /// round-trip tests start from it).
    func seededWithEverything() throws -> Namespace {
        let ns = try namespace(nat: true)
        XCTAssertEqual(ns.run("nft add rule inet t o ct label set 127").status, 0, "labels need a ct label rule")
        for line in Self.creates { XCTAssertEqual(ns.ctsync("create \(line)").status, 0, line) }
        XCTAssertEqual(ns.ctsync("create -p udp -s 192.0.2.7 -d 198.51.100.7 --sport 9 --dport 10 -t 70 --label-add 3,100 -m 5").status, 0)
        XCTAssertEqual(ns.ctsync("create -p udp -s 192.0.2.8 -d 198.51.100.8 --sport 9 --dport 10 -t 70 -n 203.0.113.9:4000").status, 0)
        return ns
    }

    /// A dump without what legitimately changes across a reload (ids, timeouts, order).
    func stable(_ s: String) -> [String] {
        normalise(s).map { $0.replacingOccurrences(of: #""id":\d+"#, with: "\"id\":N", options: .regularExpression) }
    }

    func testSaveFlushLoadRestoresAnIdenticalTable() throws {
        let ns = try seededWithEverything()
        let before = ns.ctsync("dump -o json").stdout
        XCTAssertTrue(before.contains("\"labels\":\"0x10000000000000000000000008\""), before)
        let save = ns.ctsync("dump -o save")
        XCTAssertEqual(ns.ctsync("flush").status, 0)
        let load = ns.ctsync("conntrack -R -", input: save.stdout)
        XCTAssertEqual(load.status, 0, load.stderr)
        let after = ns.ctsync("dump -o json").stdout
        XCTAssertEqual(stable(after), stable(before))
    }

    /// `snapshot save`, flush, `snapshot load`: every protocol, zones, marks, labels, NAT
    /// and timeouts (shortened by the time since the save) come back.
    func testSnapshotRoundTripIsLossless() throws {
        let ns = try seededWithEverything()
        XCTAssertEqual(ns.ctsync("create -p tcp -s 192.0.2.1 -d 198.51.100.2 --sport 5 --dport 6 -t 50 --state ESTABLISHED -g 203.0.113.10:80").status, 0)
        let file = "/tmp/ctsync-snapshot-\(ns.name).jsonl"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let before = ns.ctsync("dump -o json").stdout
        let save = ns.ctsync("snapshot save \(file)")
        XCTAssertEqual(save.status, 0, save.stderr)
        let header = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").first.map(String.init) ?? ""
        XCTAssertTrue(header.hasPrefix("{\"v\":1,\"kind\":\"snapshot\",\"time\":"), header)
        XCTAssertTrue(header.contains("\"nf_conntrack_tcp_loose\":"), header)
        XCTAssertEqual(ns.ctsync("flush").status, 0)
        let load = ns.ctsync("snapshot load \(file)")
        XCTAssertEqual(load.status, 0, load.stderr)
        XCTAssertEqual(stable(ns.ctsync("dump -o json").stdout), stable(before))
        // A diff of the snapshot against the restored table finds nothing (timeouts within 2 s).
        let diff = ns.ctsync("diff snapshot:\(file) kernel")
        XCTAssertEqual(diff.status, 0, diff.stdout)
        // A damaged snapshot changes nothing: one line naming the line, status 2.
        XCTAssertEqual(ns.ctsync("flush").status, 0)
        let bad = ns.ctsync("snapshot load -", input: (try String(contentsOfFile: file, encoding: .utf8)) + "{\"v\":1}\n")
        XCTAssertEqual(bad.status, 2)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
        XCTAssertEqual(ns.ctsync("count").stdout.trimmingCharacters(in: .whitespacesAndNewlines), "0")
    }

    /// `sync snapshot:FILE --apply` repairs a missing entry, a stale one, a changed mark and a
    /// changed NAT binding; `diff` then finds nothing.
    func testSyncApplyEndsWithAnEmptyDiff() throws {
        let ns = try namespace(nat: true)
        XCTAssertEqual(ns.ctsync("create -p tcp -s 192.0.2.1 -d 198.51.100.2 --sport 1000 --dport 80 --state ESTABLISHED -t 300 -u ASSURED,SEEN_REPLY -m 7").status, 0)
        XCTAssertEqual(ns.ctsync("create -p udp -s 192.0.2.1 -d 198.51.100.3 --sport 5 --dport 53 -t 60").status, 0)
        XCTAssertEqual(ns.ctsync("create -p udp -s 192.0.2.8 -d 198.51.100.8 --sport 9 --dport 10 -t 70 -n 203.0.113.9:4000").status, 0)
        let file = "/tmp/ctsync-sync-\(ns.name).jsonl"
        defer { try? FileManager.default.removeItem(atPath: file) }
        XCTAssertEqual(ns.ctsync("snapshot save \(file)").status, 0)
        XCTAssertEqual(ns.ctsync("delete -p udp -s 192.0.2.1").status, 0)
        XCTAssertEqual(ns.ctsync("update -p tcp -m 9").status, 0)
        XCTAssertEqual(ns.ctsync("delete -p udp -s 192.0.2.8").status, 0)
        XCTAssertEqual(ns.ctsync("create -p udp -s 192.0.2.8 -d 198.51.100.8 --sport 9 --dport 10 -t 70 -n 203.0.113.10:4001").status, 0)
        XCTAssertEqual(ns.ctsync("create -p udp -s 192.0.2.9 -d 198.51.100.9 --sport 6 --dport 53 -t 60").status, 0)

        let dry = ns.ctsync("sync snapshot:\(file)")
        XCTAssertEqual(dry.status, 1, "a plan, nothing written")
        XCTAssertEqual(dry.stdout.split(separator: "\n").filter { $0.hasPrefix("create") || $0.hasPrefix("delete") || $0.hasPrefix("update") || $0.hasPrefix("recreate") }.count, 4, dry.stdout)
        XCTAssertEqual(ns.ctsync("diff snapshot:\(file) kernel").status, 1)

        let applied = ns.ctsync("sync snapshot:\(file) --apply")
        XCTAssertEqual(applied.status, 0, applied.stdout + applied.stderr)
        XCTAssertFalse(applied.stderr.contains("write "), "no write failed: \(applied.stderr)")
        let after = ns.ctsync("diff snapshot:\(file) kernel")
        XCTAssertEqual(after.status, 0, after.stdout)
    }

    func testLabelsTheNamespaceCannotStoreAreReportedNotCountedAsApplied() throws {
        // No rule of this namespace uses ct label: its entries have no room for labels.
        let ns = try namespace()
        XCTAssertEqual(ns.ctsync("create -p udp -s 192.0.2.1 -d 198.51.100.3 --sport 5 --dport 53 -t 60").status, 0)
        let file = "/tmp/ctsync-labels-\(ns.name).jsonl"
        defer { try? FileManager.default.removeItem(atPath: file) }
        XCTAssertEqual(ns.ctsync("snapshot save \(file)").status, 0)
        let saved = try String(contentsOfFile: file, encoding: .utf8)
        try saved.replacingOccurrences(of: "\"mark\":0", with: "\"mark\":0,\"labels\":\"0x2\"").write(toFile: file, atomically: true, encoding: .utf8)
        let sync = ns.ctsync("sync snapshot:\(file) --apply")
        XCTAssertEqual(sync.status, 1, sync.stderr)
        XCTAssertTrue(sync.stderr.contains("labels cannot be stored"), sync.stderr)
        XCTAssertTrue(sync.stderr.contains("0 writes applied, 1 failed"), sync.stderr)
        XCTAssertEqual(ns.ctsync("flush").status, 0)
        let load = ns.ctsync("snapshot load \(file)")
        XCTAssertTrue(load.stderr.contains("warning: labels were not kept"), load.stderr)
    }

    /// Every class ctnetlink can repair, made on purpose between a snapshot and the kernel:
    /// one `sync --apply` and the diff is empty.
    func testSyncRepairsEveryRepairableClass() throws {
        let ns = try namespace(nat: true)
        // Room for labels, and the FTP helper loaded, as a router with such rules has.
        XCTAssertEqual(ns.run("nft add table inet x; nft add chain inet x c '{ type filter hook prerouting priority 0; }'; " +
                              "nft add rule inet x c meta mark 0x7fffffff ct label set 127; " +
                              "nft add ct helper inet x ftp-std '{ type \"ftp\" protocol tcp; }'").status, 0)
        // Status bits as a dump shows them: SRC_NAT (16) with NAT, HELPER (8192) with a helper.
        func tcp(_ sport: Int, _ dport: Int, status: Int = 14, extra: String = "") -> String {
            #"{"v":1,"family":"ipv4","proto":6,"orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":\#(sport),"dport":\#(dport)},"# +
            #""reply":{"src":"198.51.100.2","dst":"192.0.2.1","sport":\#(dport),"dport":\#(sport)},"status":\#(status),"timeout":300,"# +
            #""mark":0,"tcp":{"state":"ESTABLISHED"}\#(extra)}"#
        }
        func udp(_ sport: Int, timeout: Int = 300, status: Int = 10, extra: String = "", reply: String? = nil) -> String {
            #"{"v":1,"family":"ipv4","proto":17,"orig":{"src":"192.0.2.1","dst":"198.51.100.3","sport":\#(sport),"dport":53},"# +
            #""reply":\#(reply ?? #"{"src":"198.51.100.3","dst":"192.0.2.1","sport":53,"dport":\#(sport)}"#),"status":\#(status),"# +
            #""timeout":\#(timeout),"mark":0\#(extra)}"#
        }
        let now = UInt64(Date().timeIntervalSince1970 * 1e9)
        let snapshot = [
            #"{"v":1,"kind":"snapshot","time":\#(now),"kernel":"test","sysctls":{}}"#,
            udp(1001, extra: #","labels":"0x2""#).replacingOccurrences(of: #""mark":0"#, with: #""mark":7"#),   // mark, labels
            tcp(1002, 80),                                                                                     // tcp-state, status
            udp(1003, timeout: 600),                                                                           // timeout
            udp(1004, extra: #","zone":3"#),                                                                   // zone
            udp(1005, status: 26, reply: #"{"src":"198.51.100.3","dst":"203.0.113.9","sport":53,"dport":4000}"#), // reply (SNAT)
            tcp(1006, 21, status: 8206, extra: #","helper":"ftp""#),                                           // helper
            udp(1007),                                                                                         // deleted: only-in-a
            #"{"v":1,"kind":"expectation","family":"ipv4","proto":6,"tuple":{"src":"198.51.100.2","dst":"192.0.2.1","sport":0,"dport":5000},"# +
                #""mask":{"src":"255.255.255.255","dst":"255.255.255.255","sport":0,"dport":65535},"# +
                #""master":{"src":"192.0.2.1","dst":"198.51.100.2","sport":1006,"dport":21,"proto":6},"timeout":300,"helper":"ftp"}"#,
        ].joined(separator: "\n") + "\n"
        let file = "/tmp/ctsync-classes-\(ns.name).jsonl"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try snapshot.write(toFile: file, atomically: true, encoding: .utf8)
        let load = ns.ctsync("snapshot load --keep-timeouts \(file)")
        XCTAssertEqual(load.status, 0, load.stderr)
        let loaded = ns.ctsync("diff snapshot:\(file) kernel --tolerance 60")
        XCTAssertEqual(loaded.status, 0, "loaded as saved: " + loaded.stdout)

        // Behind the snapshot's back: one change per class.
        for change in [
            "update -p udp --sport 1001 -m 9", "update -p udp --sport 1001 --label-del 1",
            "delete -p tcp --sport 1002", "create -p tcp -s 192.0.2.1 -d 198.51.100.2 --sport 1002 --dport 80 --state SYN_SENT -t 300",
            "update -p udp --sport 1003 -t 30",
            "delete -p udp --sport 1004 -w 3", "create -p udp -s 192.0.2.1 -d 198.51.100.3 --sport 1004 --dport 53 -t 300",
            "delete -p udp --sport 1005", "create -p udp -s 192.0.2.1 -d 198.51.100.3 --sport 1005 --dport 53 -t 300 -n 203.0.113.10:4001",
            "delete -p tcp --sport 1006", "create -p tcp -s 192.0.2.1 -d 198.51.100.2 --sport 1006 --dport 21 --state ESTABLISHED -t 300 -u ASSURED,SEEN_REPLY",
            "delete -p udp --sport 1007",
            "create -p udp -s 192.0.2.1 -d 198.51.100.3 --sport 1008 --dport 53 -t 300",
        ] {
            XCTAssertEqual(ns.ctsync(change).status, 0, change)
        }
        let before = ns.ctsync("diff snapshot:\(file) kernel --tolerance 60 -o json")
        XCTAssertEqual(before.status, 1)
        let summary = before.stdout.split(separator: "\n").first.map(String.init) ?? ""
        for c in ["only-in-a", "only-in-b", "zone", "reply", "tcp-state", "status", "mark", "labels", "helper", "timeout", "expectation"] {
            XCTAssertTrue(summary.contains("\"\(c)\":"), "\(c) missing from \(summary)")
        }
        let sync = ns.ctsync("sync snapshot:\(file) --apply --tolerance 60")
        XCTAssertEqual(sync.status, 0, sync.stdout + sync.stderr)
        let after = ns.ctsync("diff snapshot:\(file) kernel --tolerance 60")
        XCTAssertEqual(after.status, 0, after.stdout)
    }

    /// What ctnetlink cannot write is planned as `cannot`, with the reason, and leaves the
    /// sync with nothing repairable (exit 0).
    func testSyncListsWhatCtnetlinkCannotRepair() throws {
        let ns = try namespace()
        XCTAssertEqual(ns.run("sysctl -qw net.netfilter.nf_conntrack_acct=1").status, 0)
        XCTAssertEqual(ns.ctsync("create -p udp -s 192.0.2.1 -d 198.51.100.3 --sport 2001 --dport 53 -t 300").status, 0)
        let now = UInt64(Date().timeIntervalSince1970 * 1e9)
        let lines = [
            #"{"v":1,"kind":"snapshot","time":\#(now),"kernel":"test","sysctls":{}}"#,
            // The kernel's entry, with packets counted that the kernel's copy does not have.
            #"{"v":1,"family":"ipv4","proto":17,"orig":{"src":"192.0.2.1","dst":"198.51.100.3","sport":2001,"dport":53},"# +
                #""reply":{"src":"198.51.100.3","dst":"192.0.2.1","sport":53,"dport":2001},"status":8,"timeout":300,"mark":0,"# +
                #""counters":{"orig":{"packets":5,"bytes":300},"reply":{"packets":0,"bytes":0}}}"#,
            // An expected connection (a helper's child): its master link cannot be created.
            #"{"v":1,"family":"ipv4","proto":6,"orig":{"src":"198.51.100.2","dst":"192.0.2.1","sport":20,"dport":5000},"# +
                #""reply":{"src":"192.0.2.1","dst":"198.51.100.2","sport":5000,"dport":20},"status":9,"timeout":100,"mark":0,"# +
                #""tcp":{"state":"SYN_SENT"},"master":{"src":"192.0.2.1","dst":"198.51.100.2","sport":1006,"dport":21,"proto":6}}"#,
        ]
        let file = "/tmp/ctsync-cannot-\(ns.name).jsonl"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let plan = ns.ctsync("sync snapshot:\(file) --tolerance 60")
        XCTAssertTrue(plan.stdout.contains("counters cannot be written"), plan.stdout)
        XCTAssertTrue(plan.stdout.contains("ctnetlink cannot create its master link (EXPECTED)"), plan.stdout)
        let apply = ns.ctsync("sync snapshot:\(file) --tolerance 60 --apply")
        XCTAssertEqual(apply.status, 0, "nothing repairable is left: " + apply.stderr)
        XCTAssertTrue(apply.stderr.contains("0 repairable"), apply.stderr)
    }

    func testEventsAreSeenForCreateUpdateDelete() throws {
        let ns = try namespace()
        let out = "/tmp/ctsync-events-\(ns.name).jsonl"
        defer { for f in [out, out + ".err"] { try? FileManager.default.removeItem(atPath: f) } }
        let listener = try ns.spawnCtsync(["events", "-o", "json"], stdout: out, stderr: out + ".err")
        defer { if listener.isRunning { kill(listener.processIdentifier, SIGCONT); listener.terminate() } }
        try ns.waitForListener(writingTo: out)
        ns.ctsync("create -p udp -s 192.0.2.1 -d 198.51.100.2 --sport 1 --dport 2 -t 50")
        ns.ctsync("update -p udp -m 5")
        ns.ctsync("delete -p udp")
        usleep(300_000)
        listener.terminate()
        listener.waitUntilExit()
        XCTAssertEqual(listener.terminationStatus, 0, "events exits 0 on SIGTERM")
        let events = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let kinds = events.split(separator: "\n").filter { $0.contains("\"proto\":17") }.compactMap { line -> String? in
            line.range(of: #""event":"\w+""#, options: .regularExpression).map { String(line[$0].dropFirst(9).dropLast()) }
        }
        XCTAssertEqual(kinds, ["new", "update", "destroy"], events)
    }

    /// Stops the listener, loads `count` UDP entries in one batch (far more events than its
    /// tiny buffer holds), and lets it run again.
    func burst(_ count: Int, into ns: Namespace, while listener: Process, scratch: String) throws {
        kill(listener.processIdentifier, SIGSTOP)
        let lines = (0..<count).map { "-I -p udp -s 192.0.2.1 -d 198.51.100.2 --sport \(1000 + $0) --dport 53 -t 60" }
        try lines.joined(separator: "\n").write(toFile: scratch, atomically: true, encoding: .utf8)
        XCTAssertEqual(ns.ctsync("conntrack -R \(scratch)").status, 0)
        kill(listener.processIdentifier, SIGCONT)
    }

    func testAnEventOverflowIsReportedAndSurvived() throws {
        let ns = try namespace()
        let out = "/tmp/ctsync-overflow-\(ns.name)"
        defer { for f in [out, out + ".err", out + ".load"] { try? FileManager.default.removeItem(atPath: f) } }
        // A tiny receive buffer, and the reader stopped while a burst arrives.
        let listener = try ns.spawnCtsync(["events", "-b", "4096", "-o", "json"], stdout: out, stderr: out + ".err")
        defer { if listener.isRunning { kill(listener.processIdentifier, SIGCONT); listener.terminate() } }
        try ns.waitForListener(writingTo: out)
        try burst(3000, into: ns, while: listener, scratch: out + ".load")
        usleep(500_000)
        // After the gap the stream goes on: a later event still arrives.
        ns.ctsync("create -p tcp -s 192.0.2.9 -d 198.51.100.9 --sport 1 --dport 2 --state ESTABLISHED -t 60")
        usleep(500_000)
        listener.terminate()
        listener.waitUntilExit()
        let events = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let errors = (try? String(contentsOfFile: out + ".err", encoding: .utf8)) ?? ""
        XCTAssertTrue(events.contains("{\"v\":1,\"gap\":true}"), "no gap reported")
        XCTAssertTrue(errors.contains("event overflow (ENOBUFS)"), errors)
        XCTAssertTrue(events.contains("\"sport\":1,\"dport\":2"), "stream did not go on after the gap")
    }

    func testEventResyncReportsWhatTheGapHid() throws {
        let ns = try namespace()
        let out = "/tmp/ctsync-resync-\(ns.name)"
        defer { for f in [out, out + ".err", out + ".load"] { try? FileManager.default.removeItem(atPath: f) } }
        let listener = try ns.spawnCtsync(["events", "-b", "4096", "--resync", "-o", "json"], stdout: out, stderr: out + ".err")
        defer { if listener.isRunning { kill(listener.processIdentifier, SIGCONT); listener.terminate() } }
        try ns.waitForListener(writingTo: out)
        try burst(3000, into: ns, while: listener, scratch: out + ".load")
        usleep(1_500_000)
        listener.terminate()
        listener.waitUntilExit()
        let lines = ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n")
        // Every created entry is reported, by its event or by the resync after the gap.
        let ports = Set(lines.compactMap { l -> Substring? in
            guard l.contains("\"event\":\"new\"") else { return nil }
            return l.range(of: #""sport":\d+"#, options: .regularExpression).map { l[$0] }
        })
        XCTAssertEqual(ports.count, 3000)
    }

    func testWritesToTheHostTableAreRefused() throws {
        try Lab.requireRoot()
        let r = Lab.run("\(Lab.ctsync) create -p udp -s 192.0.2.250 -d 198.51.100.250 --sport 9 --dport 9 -t 5")
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("refusing to change the host's conntrack table"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1)
    }
}
