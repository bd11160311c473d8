import Foundation
import XCTest

/// `ctsync capture inspect` on the checked-in captures, against golden files beside them.
/// RECORD_GOLDEN=1 rewrites the goldens (and fails, so a recording run is never green).
final class GoldenCaptureTests: XCTestCase {
    static let dir = Lab.packageRoot.appendingPathComponent("Tests/IntegrationTests/Fixtures/captures")

    func check(_ capture: String, format: String) throws {
        guard FileManager.default.isExecutableFile(atPath: Lab.ctsync) else { throw XCTSkip("ctsync not built") }
        let r = Lab.run("cd \(Self.dir.path) && \(Lab.ctsync) capture inspect \(format == "text" ? "--frames" : "-o json") \(capture)")
        XCTAssertEqual(r.status, 0, r.stderr)
        let golden = Self.dir.appendingPathComponent("\(capture).\(format == "json" ? "golden.json" : "golden.txt")")
        if ProcessInfo.processInfo.environment["RECORD_GOLDEN"] != nil {
            try r.stdout.write(to: golden, atomically: true, encoding: .utf8)
            XCTFail("recorded \(golden.lastPathComponent); run again without RECORD_GOLDEN")
            return
        }
        let expected = try String(contentsOf: golden, encoding: .utf8)
        XCTAssertEqual(r.stdout, expected, "\(capture) -o \(format) (RECORD_GOLDEN=1 re-records)")
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
}
