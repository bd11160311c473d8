import Foundation
import XCTest

/// `ctsync capture inspect` on the checked-in captures, against golden files beside them.
/// RECORD_GOLDEN=1 rewrites the goldens (and fails, so a recording run is never green).
final class GoldenCaptureTests: XCTestCase {
    static let dir = Lab.packageRoot.appendingPathComponent("Tests/IntegrationTests/Fixtures/captures")

    func check(_ capture: String, format: String) throws {
        try check(capture, command: "capture inspect \(format == "text" ? "--frames" : "-o json")",
                  golden: "\(capture).\(format == "json" ? "golden.json" : "golden.txt")")
    }

    func check(_ capture: String, command: String, golden name: String) throws {
        guard FileManager.default.isExecutableFile(atPath: Lab.ctsync) else { throw XCTSkip("ctsync not built") }
        let r = Lab.run("cd \(Self.dir.path) && \(Lab.ctsync) \(command) \(capture)")
        XCTAssertEqual(r.status, 0, r.stderr)
        let golden = Self.dir.appendingPathComponent(name)
        if ProcessInfo.processInfo.environment["RECORD_GOLDEN"] != nil {
            try r.stdout.write(to: golden, atomically: true, encoding: .utf8)
            XCTFail("recorded \(golden.lastPathComponent); run again without RECORD_GOLDEN")
            return
        }
        let expected = try String(contentsOf: golden, encoding: .utf8)
        XCTAssertEqual(r.stdout, expected, "\(command) \(capture) (RECORD_GOLDEN=1 re-records)")
    }

    /// SLL2 in pcapng with nanosecond times: directions, interfaces, IPv4 and IPv6 fragments
    /// reassembled, an ICMP error, GRE, a snaplen cut and a bad header (make_cooked.py).
    func testCookedPcapng() throws {
        try check("cooked.pcapng", format: "text")
        try check("cooked.pcapng", format: "json")
    }

    /// The other link types (make_cooked.py): VLAN stack, SLL, RAW, NULL and LOOP carrying
    /// SCTP, DCCP, UDPLITE, GRE v1 and an ICMPv6 error behind a hop-by-hop header.
    func testEveryOtherLinkType() throws {
        for link in ["ethernet-vlan", "sll", "raw", "null", "loop"] {
            try check("links.\(link).pcap", format: "text")
        }
    }

    /// Ethernet traffic from gen_pcap.py: TCP handshakes and teardowns, UDP, ICMP, IPv6.
    func testMixedEthernetPcap() throws {
        try check("mixed.pcap", format: "text")
        try check("mixed.pcap", format: "json")
    }

    /// `ctsync track` on the same captures: the predicted table (built-in sysctls, so the host
    /// does not matter) and the per-packet verdicts.
    func testTrackTablesAndVerdicts() throws {
        for capture in ["mixed.pcap", "cooked.pcapng"] {
            try check(capture, command: "track -q --sysctls builtin --sysctl nf_conntrack_acct=1 -o extended",
                      golden: "\(capture).track.golden.txt")
            try check(capture, command: "track -q --sysctls builtin --verdicts", golden: "\(capture).verdicts.golden.txt")
        }
    }
}
