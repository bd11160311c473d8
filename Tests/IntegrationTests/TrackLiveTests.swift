import Foundation
import XCTest

/// `ctsync track --interface`: the model follows live traffic on a router, prints its
/// table on SIGUSR1 and again at exit, and agrees with the router's kernel.
final class TrackLiveTests: XCTestCase {
    func testLiveTrackPrintsOnSIGUSR1AndAtExitAndMatchesTheKernel() throws {
        let lab = try LabNodes(prefix: "tk")
        defer { lab.down() }
        let out = NSTemporaryDirectory() + "track-live-\(getpid()).out"
        let err = out + ".err"
        FileManager.default.createFile(atPath: out, contents: nil)
        FileManager.default.createFile(atPath: err, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: out); try? FileManager.default.removeItem(atPath: err) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", "\(lab.prefix)-router", Lab.ctsync, "track", "-i", "any", "--sysctls", "builtin", "-o", "extended"]
        p.standardOutput = FileHandle(forWritingAtPath: out)
        p.standardError = FileHandle(forWritingAtPath: err)
        try p.run()
        usleep(1_000_000)
        XCTAssertEqual(lab.on("client", "ping -c 2 -i 0.2 -W 2 203.0.113.2").status, 0)
        usleep(300_000)
        kill(p.processIdentifier, SIGUSR1)
        usleep(500_000)
        let first = try String(contentsOfFile: out, encoding: .utf8)
        XCTAssertTrue(first.contains("icmp     1 "), "table printed on SIGUSR1: \(first)")
        XCTAssertTrue(p.isRunning, "SIGUSR1 does not stop the model")

        let kernel = lab.on("router", "conntrack -L -o extended -p icmp").stdout
        p.terminate()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let text = try String(contentsOfFile: out, encoding: .utf8)
        let lines = text.split(separator: "\n").filter { $0.contains(" icmp ") }
        XCTAssertEqual(lines.count, 2, "printed twice: on SIGUSR1 and at exit: \(text)")
        // Same entry as the kernel's, timeout aside (seconds pass between the reads).
        XCTAssertEqual(normalise(String(lines[1])), normalise(kernel.split(separator: "\n").first.map(String.init) ?? ""))
        let summary = try String(contentsOfFile: err, encoding: .utf8)
        XCTAssertTrue(summary.contains("ctsync track:"), summary)
    }
}
