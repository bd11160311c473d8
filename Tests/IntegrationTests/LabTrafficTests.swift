import Foundation
import XCTest

/// Real traffic through the lab's router; the router's table read by ctsync and by conntrack.
final class LabTrafficTests: XCTestCase {
    var lab: LabNodes?

    override func setUpWithError() throws { lab = try LabNodes(prefix: "ctl") }
    override func tearDown() { lab?.down() }

    @discardableResult
    func on(_ node: String, _ command: String) -> Lab.Result { lab!.on(node, command) }

    func makeTraffic() {
        on("server", "timeout 5 nc -l 203.0.113.2 8080 >/dev/null 2>&1 & timeout 5 nc -6 -l 2001:db8:2::2 8081 >/dev/null 2>&1 & timeout 5 nc -u -l 203.0.113.2 5353 >/dev/null 2>&1 &")
        usleep(300_000)
        on("client", "ping -c 2 -i 0.2 -W 1 203.0.113.2")
        on("client", "ping -6 -c 2 -i 0.2 -W 2 2001:db8:2::2")
        on("client", "echo hello | timeout 3 nc -q 1 203.0.113.2 8080")
        on("client", "echo hello6 | timeout 3 nc -6 -q 1 2001:db8:2::2 8081")
        on("client", "echo query | timeout 2 nc -u -q 1 203.0.113.2 5353")
        // A UDP datagram to a closed port: the ICMP error comes back RELATED.
        on("client", "echo x | timeout 2 nc -u -q 1 203.0.113.2 9")
        // A protocol conntrack tracks generically (253, reserved for experiments).
        on("client", "python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_RAW, 253); s.sendto(b\"x\"*8, (\"203.0.113.2\", 0))'")
    }

    func testRouterDumpEqualsConntrackWithAccountingAndTimestamps() throws {
        XCTAssertEqual(on("router", "sysctl -qw net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1").status, 0)
        makeTraffic()
        let theirs = on("router", "conntrack -L -o extended")
        let ours = on("router", "\(Lab.ctsync) dump -o extended")
        XCTAssertEqual(ours.status, 0, ours.stderr)
        // delta-time is computed from the wall clock at print time.
        func stable(_ s: String) -> [String] {
            normalise(s).map { $0.replacingOccurrences(of: #"delta-time=\d+"#, with: "delta-time=D", options: .regularExpression) }
        }
        XCTAssertEqual(stable(ours.stdout), stable(theirs.stdout))
        let protocols = Set(stable(ours.stdout).map { $0.split(separator: " ", omittingEmptySubsequences: true)[2] })
        XCTAssertEqual(protocols, ["tcp", "udp", "icmp", "icmpv6", "unknown"], ours.stdout)
        XCTAssertTrue(ours.stdout.contains("packets="), "accounting shown")

        let json = on("router", "\(Lab.ctsync) dump -o json -p tcp")
        XCTAssertTrue(json.stdout.contains("\"counters\":{\"orig\":{\"packets\":"), json.stdout)
        XCTAssertTrue(json.stdout.contains("\"timestamp\":{\"start\":"), json.stdout)
        XCTAssertTrue(json.stdout.contains("\"wscale_orig\":"), json.stdout)
    }

    func testZeroCountersOnDump() throws {
        XCTAssertEqual(on("router", "sysctl -qw net.netfilter.nf_conntrack_acct=1").status, 0)
        makeTraffic()
        let zeroing = on("router", "\(Lab.ctsync) dump -z").stdout.split(separator: "\n").filter { $0.hasPrefix("icmp ") }
        XCTAssertTrue(zeroing.first?.contains("type=8 code=0") == true && zeroing.first?.contains("packets=2") == true, "\(zeroing)")
        let after = on("router", "\(Lab.ctsync) dump -p icmp").stdout
        XCTAssertTrue(after.contains("packets=0 bytes=0"), after)
    }
}

/// An FTP control connection through the router with the ftp helper makes an expectation;
/// `ctsync dump expect` must print it as conntrack does, and follow it in events.
final class ExpectationTests: XCTestCase {
    var lab: LabNodes?
    var prefix: String { lab!.prefix }

    override func setUpWithError() throws {
        lab = try LabNodes(prefix: "ctx")
        let helper = Lab.run("""
            ip netns exec \(prefix)-router nft -f - <<'NFT'
            table inet h {
              ct helper ftp-std { type "ftp" protocol tcp; }
              chain pre {
                type filter hook prerouting priority 0; policy accept;
                tcp dport 21 ct helper set "ftp-std"
              }
            }
            NFT
            """)
        guard helper.status == 0 else { throw LabError(message: "ftp helper: \(helper.stderr)") }
    }

    override func tearDown() { lab?.down() }

    func router(_ command: String) -> Lab.Result { lab!.on("router", command) }

    func testFTPExpectationIsListedAsConntrackListsIt() throws {
        let eventsFile = "/tmp/ctsync-exp-\(prefix)"
        defer { for f in [eventsFile, eventsFile + ".err"] { try? FileManager.default.removeItem(atPath: f) } }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", "\(prefix)-router", Lab.ctsync, "events", "expect", "-o", "json"]
        FileManager.default.createFile(atPath: eventsFile, contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: eventsFile)
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        usleep(500_000)

        Lab.run("ip netns exec \(prefix)-server bash -c 'timeout 8 nc -l 203.0.113.2 21 >/dev/null 2>&1 &'")
        usleep(300_000)
        // The helper never parses the first segment of a direction: send a line before PORT.
        Lab.run("ip netns exec \(prefix)-client bash -c \"(printf 'USER x\\r\\n'; sleep 0.3; printf 'PORT 198,51,100,2,200,10\\r\\n'; sleep 4) | timeout 6 nc 203.0.113.2 21 >/dev/null 2>&1 &\"")
        usleep(1_200_000)

        for o in ["", "-o xml", "-o id"] {
            let theirs = router("conntrack -L expect \(o)"), ours = router("\(Lab.ctsync) dump expect \(o)")
            XCTAssertEqual(ours.status, 0, ours.stderr)
            XCTAssertEqual(normalise(ours.stdout).map { $0.replacingOccurrences(of: #"^\d+ "#, with: "T ", options: .regularExpression) },
                           normalise(theirs.stdout).map { $0.replacingOccurrences(of: #"^\d+ "#, with: "T ", options: .regularExpression) }, o)
        }
        XCTAssertTrue(router("conntrack -L expect").stdout.contains("dport=51210"), "no expectation was created")
        let json = router("\(Lab.ctsync) dump expect -o json").stdout
        XCTAssertTrue(json.contains("\"kind\":\"expectation\""), json)
        XCTAssertTrue(json.contains("\"master\":{\"src\":\"198.51.100.2\",\"dst\":\"203.0.113.2\""), json)
        XCTAssertTrue(json.contains("\"helper\":\"ftp\""), json)

        p.terminate()
        p.waitUntilExit()
        let events = (try? String(contentsOfFile: eventsFile, encoding: .utf8)) ?? ""
        XCTAssertTrue(events.contains("\"kind\":\"expectation\",\"event\":\"new\""), events)
    }

    func testCreateGetDeleteAnExpectationOnAHelpedMaster() throws {
        Lab.run("ip netns exec \(prefix)-server bash -c 'timeout 8 nc -l 203.0.113.2 21 >/dev/null 2>&1 &'")
        usleep(300_000)
        Lab.run("ip netns exec \(prefix)-client bash -c \"(printf 'USER x\\r\\n'; sleep 5) | timeout 6 nc 203.0.113.2 21 >/dev/null 2>&1 &\"")
        usleep(800_000)
        let control = router("conntrack -L -p tcp --dport 21 2>/dev/null").stdout
        let sport = try XCTUnwrap(control.range(of: #"sport=(\d+) dport=21"#, options: .regularExpression).map {
            control[$0].dropFirst(6).prefix { $0.isNumber } }, control)
        let create = router("\(Lab.ctsync) conntrack -I expect -s 198.51.100.2 -d 203.0.113.2 -p tcp --sport \(sport) --dport 21 --tuple-src 203.0.113.2 --tuple-dst 198.51.100.2 --tuple-port-src 0 --tuple-port-dst 5000 --mask-src 255.255.255.255 --mask-dst 255.255.255.255 --mask-port-src 0 --mask-port-dst 65535 -t 100")
        XCTAssertEqual(create.status, 0, create.stderr)
        let listed = router("conntrack -L expect").stdout
        XCTAssertTrue(listed.contains("proto=6 src=203.0.113.2 dst=198.51.100.2 sport=0 dport=5000 mask-src=255.255.255.255 mask-dst=255.255.255.255 sport=0 dport=65535 master-src=198.51.100.2 master-dst=203.0.113.2 sport=\(sport) dport=21 class=0 helper=ftp"), listed)
        let get = router("\(Lab.ctsync) conntrack -G expect -s 203.0.113.2 -d 198.51.100.2 -p tcp --sport 0 --dport 5000")
        XCTAssertEqual(get.status, 0, get.stderr)
        XCTAssertEqual(normalise(get.stdout).map { $0.replacingOccurrences(of: #"^\d+ "#, with: "T ", options: .regularExpression) },
                       normalise(listed).map { $0.replacingOccurrences(of: #"^\d+ "#, with: "T ", options: .regularExpression) })
        XCTAssertEqual(router("\(Lab.ctsync) conntrack -D expect -s 203.0.113.2 -d 198.51.100.2 -p tcp --sport 0 --dport 5000").status, 0)
        XCTAssertEqual(router("conntrack -L expect 2>/dev/null").stdout, "")
        XCTAssertEqual(router("\(Lab.ctsync) conntrack -G expect -s 203.0.113.2 -d 198.51.100.2 -p tcp --sport 0 --dport 5000").status, 1)
    }
}
