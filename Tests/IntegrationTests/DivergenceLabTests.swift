import Foundation
import XCTest

/// Every divergence class made on purpose in the lab, with the cause `ctsync diff` must name
/// (issue 5). A conformance scenario (Fixtures/conformance/scenarios.py) runs its traffic
/// through the router; then either the model is left without part of the router's
/// configuration (DIFF_DROP) or the kernel's table or the capture is changed behind the
/// model's back (DIFF_BEFORE), and `ctsync diff --pcap` runs against the router's kernel.
final class DivergenceLabTests: XCTestCase {
    struct Outcome {
        var status: Int
        var summary: [String: Any]
        var divergences: [[String: Any]]
        var text: String

        /// The divergences whose classes include `name`.
        func with(_ name: String) -> [[String: Any]] {
            divergences.filter { ($0["classes"] as? [String])?.contains(name) == true }
        }
    }

    func diverge(_ scenario: String, drop: [String] = [], before: String? = nil,
                 file: StaticString = #filePath, line: UInt = #line) throws -> Outcome {
        let python = try Conformance.requirePython(file: file, line: line)
        let outdir = NSTemporaryDirectory() + "divergence-\(getpid())-\(scenario)"
        try? FileManager.default.removeItem(atPath: outdir)
        defer { try? FileManager.default.removeItem(atPath: outdir) }
        let q = Namespace.quote
        var env = "CTSYNC=\(q(Lab.ctsync)) DIFF_DROP=\(q(drop.joined(separator: ",")))"
        if let before { env += " DIFF_BEFORE=\(q(before.replacingOccurrences(of: "OUTDIR", with: outdir)))" }
        let run = Lab.run("\(env) timeout 180 \(python) \(q(Conformance.script)) run \(q(scenario)) dv\(getpid() % 100000) \(q(outdir))")
        guard run.status == 0 else { throw LabError(message: "scenario \(scenario): \(run.stderr)") }
        let text = (try? String(contentsOfFile: outdir + "/diff.json", encoding: .utf8)) ?? ""
        let status = Int(((try? String(contentsOfFile: outdir + "/diff.rc", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        let lines = try Conformance.parseLines(text)
        guard let summary = lines.first, summary["kind"] as? String == "summary" else {
            let err = (try? String(contentsOfFile: outdir + "/diff.err", encoding: .utf8)) ?? ""
            throw LabError(message: "diff printed no summary (exit \(status)): \(err)")
        }
        return Outcome(status: status, summary: summary, divergences: Array(lines.dropFirst()), text: text)
    }

    func assertCause(_ o: Outcome, class name: String, cause: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(o.status, 1, o.text, file: file, line: line)
        let found = o.with(name)
        XCTAssertFalse(found.isEmpty, "no \(name) divergence in: \(o.text)", file: file, line: line)
        for d in found { XCTAssertEqual(d["cause"] as? String, cause, "\(d)", file: file, line: line) }
    }

    // MARK: configuration the model lacks

    func testZoneRuleUnknownToTheModel() throws {
        assertCause(try diverge("zone", drop: ["--zone"]), class: "zone", cause: "zone-config")
    }

    func testNATUnknownToTheModel() throws {
        // The -i any capture cut down to the client side: the model never sees the
        // translated copies, so it cannot learn the masquerade.
        let clientSide = "tcpdump -r OUTDIR/capture.pcap -w OUTDIR/cut.pcap \"ifindex $(cat /sys/class/net/r0/ifindex)\" 2>/dev/null" +
            " && mv OUTDIR/cut.pcap OUTDIR/capture.pcap"
        assertCause(try diverge("snat_masquerade", before: clientSide), class: "reply", cause: "nat")
    }

    func testMarkRuleUnknownToTheModel() throws {
        assertCause(try diverge("mark", drop: ["--mark"]), class: "mark", cause: "mark")
    }

    func testLabelRuleUnknownToTheModel() throws {
        assertCause(try diverge("labels", drop: ["--label"]), class: "labels", cause: "labels")
    }

    func testHelperAndItsExpectationUnknownToTheModel() throws {
        let o = try diverge("ftp_port_expect", drop: ["--helper"])
        assertCause(o, class: "helper", cause: "helper-config")
        let x = o.with("expectation")
        XCTAssertEqual(x.count, 1, o.text)
        XCTAssertNotNil(x.first?["expectation_b"], "the kernel's expectation, missing from the model")
        XCTAssertEqual(x.first?["cause"] as? String, "helper-config")
    }

    func testExpectedChildWithoutTheHelper() throws {
        assertCause(try diverge("ftp_pasv_child", drop: ["--helper"]), class: "master", cause: "expectation")
    }

    func testTimeoutSysctlDiffers() throws {
        let o = try diverge("tcp_timeout_established", drop: ["--sysctl=nf_conntrack_tcp_timeout_established"])
        assertCause(o, class: "timeout", cause: "timeout-sysctl")
        XCTAssertTrue(o.text.contains("nf_conntrack_tcp_timeout_established is 432000 on model of"), o.text)
    }

    func testTrackingSysctlDiffers() throws {
        // The kernel is liberal (be_liberal=1) and accepts the out-of-window packets; the
        // model, left at the built-in 0, judges them invalid.
        let o = try diverge("tcp_out_of_window_liberal", drop: ["--sysctl=nf_conntrack_tcp_be_liberal"])
        XCTAssertEqual(o.status, 1, o.text)
        XCTAssertFalse(o.divergences.isEmpty, o.text)
        for d in o.divergences { XCTAssertEqual(d["cause"] as? String, "tracking-sysctl", "\(d)") }
        XCTAssertTrue(o.text.contains("nf_conntrack_tcp_be_liberal is 0 on model of"), o.text)
    }

    // MARK: changes behind the model's back

    func testFlushedEntriesAreGoneFromTheKernel() throws {
        assertCause(try diverge("real_tcp_v4", before: "\(Lab.ctsync) flush"), class: "only-in-a", cause: "gone-from-kernel")
    }

    func testEntryCreatedByAProgram() throws {
        let o = try diverge("real_udp_v4", before: "\(Lab.ctsync) create -p udp -s 192.0.2.77 -d 192.0.2.78 --sport 1000 --dport 2000 -t 100")
        assertCause(o, class: "only-in-b", cause: "created-by-program")
    }

    func testStatusSetByAProgram() throws {
        assertCause(try diverge("real_udp_v4", before: "\(Lab.ctsync) update -p udp -u ASSURED"), class: "status", cause: "status")
    }

    func testCountersZeroedByAProgram() throws {
        assertCause(try diverge("real_udp_v4", before: "\(Lab.ctsync) dump -z > /dev/null"), class: "counters", cause: "counters")
    }

    func testCaptureThatMissedTheFINs() throws {
        // The capture loses both FINs: the model keeps the connection ESTABLISHED, and the
        // ACK of the first FIN acknowledges a sequence number it never saw.
        let cut = "tcpdump -r OUTDIR/capture.pcap -w OUTDIR/cut.pcap 'not (tcp[13] & 1 != 0)' 2>/dev/null && mv OUTDIR/cut.pcap OUTDIR/capture.pcap"
        assertCause(try diverge("real_tcp_v4", before: cut), class: "tcp-state", cause: "capture-dropped")
    }
}
