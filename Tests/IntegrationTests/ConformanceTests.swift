import Foundation
import XCTest

/// Kernel conformance of the model (`ctsync track`): every scenario of
/// Fixtures/conformance/scenarios.py sends traffic through the lab's router, captures it there
/// and saves the router's kernel table; the model then reads the capture and must print the
/// same table (and the same expectations). See docs/conformance.md.
///
/// Environment: CONFORMANCE_ONLY=name1,name2 runs only those scenarios;
/// CONFORMANCE_REPORT=FILE writes a `name | result | what it checks` table there.
final class ConformanceTests: XCTestCase {
    func testModelMatchesKernelInEveryScenario() throws {
        try Lab.requireRoot()
        let python = try Conformance.requirePython()
        let env = ProcessInfo.processInfo.environment

        let listing = Lab.run("\(python) \(Namespace.quote(Conformance.script)) describe")
        XCTAssertEqual(listing.status, 0, listing.stderr)
        var scenarios = Conformance.parseDescriptions(listing.stdout)
        XCTAssertFalse(scenarios.isEmpty, "scenarios.py describe listed nothing")
        if let only = env["CONFORMANCE_ONLY"], !only.isEmpty {
            let wanted = only.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let known = Set(scenarios.map(\.name))
            for name in wanted where !known.contains(name) { XCTFail("CONFORMANCE_ONLY: unknown scenario \(name)") }
            scenarios = scenarios.filter { wanted.contains($0.name) }
        }

        let base = NSTemporaryDirectory() + "ctsync-conformance-\(getpid())"
        try? FileManager.default.removeItem(atPath: base)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let prefix = "cf\(getpid() % 100000)"

        var results: [(scenario: Conformance.Scenario, passed: Bool)] = []
        for scenario in scenarios {
            let outdir = base + "/" + scenario.name
            let problems = Conformance.check(scenario: scenario.name, python: python, prefix: prefix, outdir: outdir)
            if problems.isEmpty {
                print("PASS \(scenario.name)")
            } else {
                print("FAIL \(scenario.name): \(problems.count) difference(s), artifacts in \(outdir)")
                XCTFail("conformance \(scenario.name) (\(scenario.what)):\n  " + problems.joined(separator: "\n  "))
            }
            results.append((scenario, problems.isEmpty))
        }

        let failed = results.filter { !$0.passed }.count
        print("conformance: \(results.count - failed) passed, \(failed) failed of \(results.count)")
        if let report = env["CONFORMANCE_REPORT"], !report.isEmpty {
            var text = "| name | result | what it checks |\n|---|---|---|\n"
            for r in results {
                let what = "\(r.scenario.what) (\(r.scenario.section))".replacingOccurrences(of: "|", with: "\\|")
                text += "| \(r.scenario.name) | \(r.passed ? "PASS" : "FAIL") | \(what) |\n"
            }
            XCTAssertNoThrow(try text.write(toFile: report, atomically: true, encoding: .utf8))
        }
        if failed == 0 { try? FileManager.default.removeItem(atPath: base) }
        // Nothing of the lab may be left behind.
        let left = Lab.run("ip netns list").stdout.split(separator: "\n").filter { $0.hasPrefix(prefix + "-") }
        XCTAssertTrue(left.isEmpty, "namespaces left behind: \(left)")
    }
}

/// Running the scenarios and comparing kernel and model tables (no state, no globals).
enum Conformance {
    static let script = Lab.packageRoot.appendingPathComponent("Tests/IntegrationTests/Fixtures/conformance/scenarios.py").path

    struct Scenario {
        var name: String
        var section: String
        var what: String
    }

    /// A python3 that can import scapy, and tcpdump. Missing: fails under CI, skips otherwise.
    static func requirePython(file: StaticString = #filePath, line: UInt = #line) throws -> String {
        var problems: [String] = []
        let python = ["/usr/bin/python3", "python3"].first { Lab.run("\($0) -c 'import scapy.all' 2>/dev/null").status == 0 }
        if python == nil { problems.append("python3 with scapy (apt-get install python3-scapy)") }
        if Lab.run("command -v tcpdump").status != 0 { problems.append("tcpdump") }
        guard let python, problems.isEmpty else {
            let why = "conformance test needs: " + problems.joined(separator: ", ")
            if ProcessInfo.processInfo.environment["CI"] != nil {
                XCTFail(why, file: file, line: line)
                throw XCTSkip("failed: \(why)")
            }
            throw XCTSkip(why)
        }
        return python
    }

    /// `scenarios.py describe` lines: name TAB section TAB what it checks.
    static func parseDescriptions(_ text: String) -> [Scenario] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard f.count == 3, !f[0].isEmpty else { return nil }
            return Scenario(name: f[0], section: f[1], what: f[2])
        }
    }

    /// Runs one scenario and the model; returns the differences (empty = pass).
    static func check(scenario name: String, python: String, prefix: String, outdir: String) -> [String] {
        let q = Namespace.quote
        let run = Lab.run("CTSYNC=\(q(Lab.ctsync)) timeout 180 \(python) \(q(script)) run \(q(name)) \(q(prefix)) \(q(outdir))")
        guard run.status == 0 else {
            let why = run.stderr.split(separator: "\n").last.map(String.init) ?? "exit status \(run.status)"
            return ["scenario did not run: \(why)"]
        }
        func read(_ file: String) -> String? { try? String(contentsOfFile: outdir + "/" + file, encoding: .utf8) }
        guard let at = read("at")?.trimmingCharacters(in: .whitespacesAndNewlines), !at.isEmpty,
              let kernelText = read("kernel.json"), let expectText = read("expect.json"), let argsText = read("args")
        else { return ["scenario left no at/kernel.json/expect.json/args in \(outdir)"] }
        let args = argsText.split(separator: "\n").map { q(String($0)) }.joined(separator: " ")
        let model = "timeout 120 \(q(Lab.ctsync)) track \(q(outdir + "/capture.pcap")) --sysctls builtin --at \(q(at)) -o json \(args)"

        var problems: [String] = []
        let entries = Lab.run(model)
        let expectations = Lab.run(model + " --expect")
        try? entries.stdout.write(toFile: outdir + "/model.json", atomically: true, encoding: .utf8)
        try? expectations.stdout.write(toFile: outdir + "/model-expect.json", atomically: true, encoding: .utf8)
        for (what, r) in [("model", entries), ("model --expect", expectations)] where r.status != 0 {
            let why = r.stderr.split(separator: "\n").last.map(String.init) ?? ""
            problems.append("\(what) exited with \(r.status): \(why)")
        }
        guard problems.isEmpty else { return problems }
        do {
            problems += compareEntries(kernel: try parseLines(kernelText), model: try parseLines(entries.stdout))
            problems += compareExpectations(kernel: try parseLines(expectText), model: try parseLines(expectations.stdout))
        } catch {
            problems.append("unreadable JSON: \(error)")
        }
        return problems
    }

    // MARK: comparison

    struct BadJSON: Error, CustomStringConvertible {
        var line: String
        var description: String { "not a JSON object: \(line.prefix(200))" }
    }

    static func parseLines(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").filter { !$0.allSatisfy(\.isWhitespace) }.map { (line) throws -> [String: Any] in
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw BadJSON(line: String(line))
            }
            return object
        }
    }

    /// Entries: matched by (zone, family, proto, orig tuple). Every key must be equal except
    /// id, use, flags (derived from status), timeout (±1 s), timestamp.start (±1 s), timestamp.stop.
    static func compareEntries(kernel: [[String: Any]], model: [[String: Any]]) -> [String] {
        func key(_ e: [String: Any]) -> String {
            "\(integer(e["zone"]) ?? 0)|\(e["family"] ?? "")|\(integer(e["proto"]) ?? -1)|\(canonical(e["orig"]))"
        }
        return match(kernel: kernel, model: model, key: key, describe: describeEntry) { path, k, m in
            switch path {
            case "id", "use", "flags", "timestamp.stop": return true
            case "timeout":
                guard let k = integer(k), let m = integer(m) else { return false }
                return abs(k - m) <= 1
            case "timestamp.start":
                guard let k = integer(k), let m = integer(m) else { return false }
                return abs(k - m) <= 1_000_000_000
            default: return nil
            }
        }
    }

    /// Expectations: matched by (tuple, master); equal except id and timeout (±1 s).
    static func compareExpectations(kernel: [[String: Any]], model: [[String: Any]]) -> [String] {
        func key(_ e: [String: Any]) -> String { "\(canonical(e["tuple"]))|\(canonical(e["master"]))" }
        func describe(_ e: [String: Any]) -> String {
            "expectation \(describeTuple(e["tuple"], proto: integer(e["proto"]))) of master \(describeTuple(e["master"], proto: integer(e["proto"])))"
        }
        return match(kernel: kernel, model: model, key: key, describe: describe) { path, k, m in
            switch path {
            case "id": return true
            case "timeout":
                guard let k = integer(k), let m = integer(m) else { return false }
                return abs(k - m) <= 1
            default: return nil
            }
        }
    }

    /// Pairs objects by key; reports missing, extra and differing ones. `tolerate` decides a
    /// path itself (true = equal enough, false = different) or returns nil for exact comparison.
    static func match(kernel: [[String: Any]], model: [[String: Any]], key: ([String: Any]) -> String,
                      describe: ([String: Any]) -> String,
                      tolerate: (String, Any?, Any?) -> Bool?) -> [String] {
        var problems: [String] = []
        var modelByKey: [String: [[String: Any]]] = [:]
        for m in model { modelByKey[key(m), default: []].append(m) }
        var kernelByKey: [String: [[String: Any]]] = [:]
        var order: [String] = []
        for k in kernel {
            let kk = key(k)
            if kernelByKey[kk] == nil { order.append(kk) }
            kernelByKey[kk, default: []].append(k)
        }
        for kk in order {
            let ks = kernelByKey[kk] ?? [], ms = modelByKey[kk] ?? []
            for (k, m) in zip(ks, ms) {
                let a = flatten(k), b = flatten(m)
                var diffs: [String] = []
                for path in Set(a.keys).union(b.keys).sorted() {
                    let kv = a[path], mv = b[path]
                    let same = tolerate(path, kv, mv) ?? (canonical(kv) == canonical(mv))
                    if !same { diffs.append("\(path) kernel=\(show(kv)) model=\(show(mv))") }
                }
                if !diffs.isEmpty { problems.append("\(describe(k)): " + diffs.joined(separator: ", ")) }
            }
            for k in ks.dropFirst(ms.count) { problems.append("missing in model: \(describe(k)) \(canonical(k))") }
            for m in ms.dropFirst(ks.count) { problems.append("extra in model: \(describe(m)) \(canonical(m))") }
        }
        for (mk, ms) in modelByKey.sorted(by: { $0.key < $1.key }) where kernelByKey[mk] == nil {
            for m in ms { problems.append("extra in model: \(describe(m)) \(canonical(m))") }
        }
        return problems
    }

    /// Nested objects become dotted paths ("tcp.flags_orig.flags"); arrays and scalars are leaves.
    static func flatten(_ object: [String: Any], prefix: String = "") -> [String: Any] {
        var out: [String: Any] = [:]
        for (k, v) in object {
            let path = prefix.isEmpty ? k : prefix + "." + k
            if let inner = v as? [String: Any] {
                out.merge(flatten(inner, prefix: path)) { a, _ in a }
            } else {
                out[path] = v
            }
        }
        return out
    }

    /// A stable text for any JSON value (keys sorted); "absent" for nil.
    static func canonical(_ value: Any?) -> String {
        guard let value else { return "absent" }
        guard let data = try? JSONSerialization.data(withJSONObject: [value], options: [.sortedKeys]),
              let text = String(data: data, encoding: .utf8) else { return "\(value)" }
        return String(text.dropFirst().dropLast())
    }

    static func show(_ value: Any?) -> String { canonical(value) }

    static func integer(_ value: Any?) -> Int64? {
        guard let value else { return nil }
        switch value {
        case let v as Int: return Int64(v)
        case let v as Int64: return v
        case let v as UInt64: return Int64(exactly: v)
        case let v as NSNumber: return v.int64Value
        case let v as Double: return Int64(exactly: v.rounded())
        default: return nil
        }
    }

    static func describeEntry(_ e: [String: Any]) -> String {
        let proto = integer(e["proto"])
        var s = "\(e["family"] ?? "?") \(describeTuple(e["orig"], proto: proto))"
        if let zone = integer(e["zone"]), zone != 0 { s += " zone \(zone)" }
        return s
    }

    static func describeTuple(_ tuple: Any?, proto: Int64?) -> String {
        guard let t = tuple as? [String: Any] else { return "?" }
        let names: [Int64: String] = [1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 58: "icmpv6", 132: "sctp", 136: "udplite"]
        let p = proto ?? integer(t["proto"]) ?? -1
        var s = (names[p] ?? "proto \(p)") + " \(t["src"] ?? "?")"
        if let sport = integer(t["sport"]) { s += ":\(sport)" }
        s += " -> \(t["dst"] ?? "?")"
        if let dport = integer(t["dport"]) { s += ":\(dport)" }
        if let type = integer(t["type"]) { s += " type \(type) code \(integer(t["code"]) ?? 0) id \(integer(t["id"]) ?? 0)" }
        if let src = integer(t["srckey"]), let dst = integer(t["dstkey"]) { s += " keys \(src)/\(dst)" }
        return s
    }
}
