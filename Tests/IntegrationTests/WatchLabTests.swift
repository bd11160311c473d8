import Foundation
import XCTest

/// `ctsync watch` on the lab's router: live traffic raises no alarm; a divergence made on
/// purpose is reported once it outlasts the grace period, counted in the metrics, and
/// reported again when it ends.
final class WatchLabTests: XCTestCase {
    final class Watcher {
        let process = Process()
        let out: String
        init(lab: LabNodes, arguments: [String]) throws {
            out = NSTemporaryDirectory() + "watch-\(getpid())-\(UUID().uuidString).out"
            FileManager.default.createFile(atPath: out, contents: nil)
            FileManager.default.createFile(atPath: out + ".err", contents: nil)
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", "\(lab.prefix)-router", Lab.ctsync, "watch", "-i", "r0", "--sysctls", "builtin"] + arguments
            process.standardOutput = FileHandle(forWritingAtPath: out)
            process.standardError = FileHandle(forWritingAtPath: out + ".err")
            try process.run()
            // Running once it has read the kernel and said so.
            for _ in 0..<50 where !((try? String(contentsOfFile: out + ".err", encoding: .utf8)) ?? "").contains("watching") {
                usleep(100_000)
            }
        }
        var text: String { (try? String(contentsOfFile: out, encoding: .utf8)) ?? "" }
        var errors: String { (try? String(contentsOfFile: out + ".err", encoding: .utf8)) ?? "" }
        /// Waits up to `seconds` for the output to contain `needle`.
        func wait(for needle: String, seconds: Double = 10) -> Bool {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end { if text.contains(needle) { return true }; usleep(100_000) }
            return false
        }
        func stop() -> Int32 {
            process.terminate()
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: out)
            try? FileManager.default.removeItem(atPath: out + ".err")
            return process.terminationStatus
        }
    }

    func testSteadyTrafficRaisesNoAlarm() throws {
        let lab = try LabNodes(prefix: "wq")
        defer { lab.down() }
        let w = try Watcher(lab: lab, arguments: ["--interval", "0.5", "--grace", "1.5"])
        lab.on("server", "timeout 6 nc -l 203.0.113.2 8080 >/dev/null 2>&1 &")
        usleep(200_000)
        lab.on("client", "ping -c 12 -i 0.2 203.0.113.2 >/dev/null & for i in 1 2 3; do echo hi | nc -u -q 0 -w 1 -p 600$i 203.0.113.2 5353; done; " +
                         "echo hello | nc -q 1 -w 2 203.0.113.2 8080; wait")
        usleep(3_000_000)
        let text = w.text
        XCTAssertEqual(w.stop(), 0)
        XCTAssertFalse(text.contains(" + ["), "no divergence outlasted the grace period: \(text)")
    }

    func testADeletedEntryIsReportedCountedAndResolved() throws {
        let lab = try LabNodes(prefix: "wd")
        defer { lab.down() }
        let w = try Watcher(lab: lab, arguments: ["--interval", "0.5", "--grace", "1", "--metrics", "127.0.0.1:9473"])
        let send = "echo x | nc -u -q 0 -w 1 -p 6100 203.0.113.2 5353"
        lab.on("client", send)
        usleep(1_500_000)
        XCTAssertEqual(lab.on("router", "\(Lab.ctsync) delete -p udp --sport 6100").status, 0)
        XCTAssertTrue(w.wait(for: "+ [only-in-a] ipv4     2 udp      17"), "reported: \(w.text) \(w.errors)")
        XCTAssertTrue(w.text.contains("gone from the kernel"), w.text)
        let metrics = lab.on("router", "exec 3<>/dev/tcp/127.0.0.1/9473; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3").stdout
        XCTAssertTrue(metrics.hasPrefix("HTTP/1.0 200 OK"), metrics)
        XCTAssertTrue(metrics.contains("ctsync_divergences{class=\"only-in-a\"} 1\n"), metrics)
        XCTAssertTrue(metrics.contains("ctsync_divergences_appeared_total 1\n"), metrics)
        // The next datagram of the flow makes the kernel's entry again: the divergence ends.
        lab.on("client", send)
        XCTAssertTrue(w.wait(for: "- [only-in-a]"), "resolved: \(w.text)")
        let notFound = lab.on("router", "exec 3<>/dev/tcp/127.0.0.1/9473; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3").stdout
        XCTAssertTrue(notFound.hasPrefix("HTTP/1.0 404"), notFound)
        XCTAssertEqual(w.stop(), 0)
    }

    func testBadOptionsAreOneLineErrors() throws {
        for args in [["--metrics", "nowhere"], ["--interval", "0"], ["-o", "xml"]] {
            let r = Lab.run("\(Lab.ctsync) watch -i lo " + args.map(Namespace.quote).joined(separator: " "))
            XCTAssertEqual(r.status, 2, "\(args)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        }
    }
}
