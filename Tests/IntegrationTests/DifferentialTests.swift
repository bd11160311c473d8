import Foundation
import XCTest

/// `ctsync conntrack ARGS` against the installed conntrack 1.4.7 on the same table.
final class DifferentialTests: XCTestCase {
    static let fixtures = Lab.packageRoot.appendingPathComponent("Tests/IntegrationTests/Fixtures")

    func seeded() throws -> Namespace {
        let ns = try Namespace()
        // One batched load; the seed itself is checked against conntrack -I in KernelTableTests.
        let r = ns.ctsync("conntrack -R \(Self.fixtures.appendingPathComponent("seed.txt").path)")
        XCTAssertEqual(r.status, 0, "seed: \(r.stderr)")
        return ns
    }

    /// ctsync's save lines add `-m MARK` (lossless) and print SCTP vtags in host order
    /// (conntrack 1.4.7 byte-swaps them); map ours back to conntrack's to compare the rest.
    func savedLikeConntrack(_ s: String) -> String {
        s.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard line.hasPrefix("-A ") else { return String(line) }
            var l = String(line).replacingOccurrences(of: #" -m \d+"#, with: "", options: .regularExpression)
            for key in ["--orig-vtag", "--reply-vtag"] {
                if let r = l.range(of: #"\#(key) \d+"#, options: .regularExpression),
                   let v = UInt32(l[r].split(separator: " ")[1]) {
                    l.replaceSubrange(r, with: "\(key) \(v.byteSwapped)")
                }
            }
            return l
        }.joined(separator: "\n")
    }

    func testAgreesWithConntrackOnEveryListedArgumentList() throws {
        try Lab.requireRoot()
        let cases = try String(contentsOf: Self.fixtures.appendingPathComponent("conntrack-differential.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") && !$0.isEmpty }
        XCTAssertGreaterThan(cases.count, 60)
        var disagreements: [String] = []
        for line in cases {
            // "!" marks a conntrack 1.4.7 bug that ctsync does not copy: there conntrack
            // must fail and ctsync must succeed (see docs/conntrack-compat.md).
            let knownBug = line.hasPrefix("!")
            let args = knownBug ? String(line.dropFirst()).trimmingCharacters(in: .whitespaces) : line
            let a = try seeded(), b = try seeded()
            defer { a.close(); b.close() }
            let theirs = a.run("conntrack \(args)")
            let ours = b.run("\(Lab.ctsync) conntrack \(args)")
            if knownBug {
                if theirs.status == 0 || ours.status != 0 {
                    disagreements.append("`\(args)`: expected conntrack 1.4.7 to fail and ctsync to succeed, got \(theirs.status) and \(ours.status): \(ours.stderr)")
                }
                continue
            }
            let tableTheirs = normalise(a.run("conntrack -L -o save 2>/dev/null").stdout)
            let tableOurs = normalise(b.run("conntrack -L -o save 2>/dev/null").stdout)
            var problems: [String] = []
            if theirs.status != ours.status { problems.append("exit \(theirs.status) vs \(ours.status) (\(ours.stderr.trimmingCharacters(in: .whitespacesAndNewlines)))") }
            if normalise(theirs.stdout) != normalise(savedLikeConntrack(ours.stdout)) {
                problems.append("stdout differs:\n  conntrack: \(normalise(theirs.stdout))\n  ctsync:    \(normalise(ours.stdout))")
            }
            if tableTheirs != tableOurs { problems.append("table afterwards differs:\n  \(tableTheirs)\n  \(tableOurs)") }
            // One line on stderr for a parameter problem (conntrack adds a "Try" hint line).
            if ours.status == 2 {
                let lines = ours.stderr.split(separator: "\n").filter { !$0.hasPrefix("Try `conntrack -h'") }
                if lines.count != 1 { problems.append("error is not one line: \(ours.stderr)") }
            }
            if !problems.isEmpty { disagreements.append("`\(args)`: " + problems.joined(separator: "; ")) }
        }
        XCTAssertTrue(disagreements.isEmpty, "\(disagreements.count) of \(cases.count) disagree:\n" + disagreements.joined(separator: "\n"))
    }
}
