import Foundation
import XCTest

/// `ctsync capture inspect` on files (no root) and live in the lab (root).
final class CaptureTests: XCTestCase {
    func testDamagedAndNonPcapFilesGiveOneLineAndStatus2() throws {
        guard FileManager.default.isExecutableFile(atPath: Lab.ctsync) else { throw XCTSkip("ctsync not built") }
        let dir = NSTemporaryDirectory() + "ctsync-cap-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A valid pcap header and one record header that promises more bytes than follow.
        var cut = Data([0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0])
        cut.append(contentsOf: [0, 0, 0, 0, 0, 0, 0, 0, 60, 0, 0, 0, 60, 0, 0, 0, 1, 2, 3])
        try cut.write(to: URL(fileURLWithPath: dir + "/cut.pcap"))
        try Data("hello\n".utf8).write(to: URL(fileURLWithPath: dir + "/text.pcap"))
        for (file, expected) in [("cut.pcap", "damaged or cut-off capture after frame 0 (reading frame 1)"),
                                 ("text.pcap", "cannot open capture: unknown file format"),
                                 ("missing.pcap", "cannot open capture")] {
            let r = Lab.run("\(Lab.ctsync) capture inspect \(dir)/\(file)")
            XCTAssertEqual(r.status, 2, file)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(expected), r.stderr)
        }
    }

    func testLiveCaptureOnAnyInTheLabSeesBothDirectionsOfForwardedTraffic() throws {
        let lab = try LabNodes(prefix: "ctc")
        defer { lab.down() }
        let out = "/tmp/ctsync-live-\(lab.prefix).json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        lab.on("router", "\(Lab.ctsync) capture inspect -i any --filter icmp --count 8 --duration 10 -o json > \(out) 2>&1 &")
        usleep(700_000)
        lab.on("client", "ping -c 2 -i 0.2 203.0.113.2")
        usleep(500_000)
        let json = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        // A router sees each forwarded packet twice on "any": in on one veth, out on the other.
        XCTAssertTrue(json.contains("\"link_type_name\":\"LINUX_SLL2\""), json)
        XCTAssertTrue(json.contains("\"frames\":8"), json)
        XCTAssertTrue(json.contains("\"directions\":{\"incoming\":4,\"outgoing\":4}"), json)
        XCTAssertTrue(json.contains("\"dropped_kernel\":0"), json)
    }
}
