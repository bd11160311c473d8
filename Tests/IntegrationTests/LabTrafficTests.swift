import Foundation
import XCTest

/// Real traffic through the lab's router; the router's table read by ctsync and by conntrack.
final class LabTrafficTests: XCTestCase {
    var prefix = ""
    let lab = Lab.packageRoot.appendingPathComponent("contrib/lab/lab.sh").path

    override func setUpWithError() throws {
        try Lab.requireRoot()
        prefix = "ctl\(getpid() % 100000)"
        let up = Lab.run("bash \(lab) up \(prefix)")
        guard up.status == 0 else { throw LabError(message: "lab up: \(up.stderr)") }
    }

    override func tearDown() {
        if !prefix.isEmpty { Lab.run("bash \(lab) down \(prefix)") }
    }

    @discardableResult
    func on(_ node: String, _ command: String) -> Lab.Result {
        Lab.run("ip netns exec \(prefix)-\(node) bash -c \(Namespace.quote(command))")
    }

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
