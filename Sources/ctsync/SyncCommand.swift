import ArgumentParser
import ConntrackCore
import Foundation
import KernelConntrack
import Reconcile

extension Ctsync {
    struct Sync: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Plan (and with --apply make) the kernel's table equal to a snapshot's or a model's.",
            discussion: """
            SOURCE is `snapshot:FILE` or `model:CAPTURE[,CAPTURE…]`; the target is this network
            namespace's kernel table. Without --apply the plan is printed and nothing changes.
            With --apply it is written in netlink batches, then the two sides are compared again
            and what still differs is printed (exit 0 when nothing repairable is left, 1 otherwise).
            Changes ctnetlink cannot make (EXPECTED, a master, counters, clearing status bits) are
            listed as `cannot` with the reason. Refused in the host's own network namespace
            unless --host-table is given.
            """)

        @Argument(help: "snapshot:FILE or model:CAPTURE[,CAPTURE…]") var source: String
        @Flag(help: "write the plan into the kernel (default: print it only)") var apply = false
        @Option(help: "repair only these: \(SyncScope.allCases.map(\.rawValue).joined(separator: ","))") var only: String?
        @Option(help: "timeouts within this many seconds are equal") var tolerance: UInt32 = 2
        @Flag(help: "allow writing to the host's own conntrack table") var hostTable = false
        @Option(name: .customLong("where"), parsing: .unconditional, help: "conntrack -L filters limiting what is compared and repaired, e.g. \"-p udp --dport 53\"")
        var filterText: String?
        @OptionGroup var model: ModelOptions

        func validate() throws {
            func fail(_ m: String) throws -> Never {
                printError("ctsync sync: \(m)")
                throw ExitCode(2)
            }
            if !source.hasPrefix("snapshot:") && !source.hasPrefix("model:") { try fail("SOURCE is snapshot:FILE or model:CAPTURE, not `\(source)'") }
            for s in (only ?? "").split(separator: ",") where SyncScope(rawValue: String(s)) == nil {
                try fail("--only: unknown scope `\(s)' (missing, stale, changed)")
            }
        }

        func compare() throws -> DiffReport {
            let filter = try TableSides.filter(filterText, program: "ctsync sync")
            var (a, b) = try TableSides.load(source, "kernel", model: model, program: "ctsync sync")
            TableSides.restrict(&a, to: filter)
            TableSides.restrict(&b, to: filter)
            return TableSides.compare(a, b, options: DiffOptions(tolerance: tolerance))
        }

        func run() throws {
            let scopes = only.map { Set($0.split(separator: ",").compactMap { SyncScope(rawValue: String($0)) }) } ?? Set(SyncScope.allCases)
            let report = try compare()
            let plan = SyncPlanner.plan(report, scopes: scopes)
            let options = TextFormatOptions(showLayer3: true)
            func line(_ e: ConntrackEntry) -> String {
                var b: [UInt8] = []
                ConntrackText.write(e, options: options, to: &b)
                return String(decoding: b, as: UTF8.self)
            }
            func expectLine(_ x: Expectation) -> String {
                var b: [UInt8] = []
                ConntrackText.write(x, options: options, to: &b)
                return String(decoding: b, as: UTF8.self)
            }
            var text = "plan: \(plan.count) actions (\(report.divergences.count) divergences)\n"
            for a in plan {
                switch a {
                case .create(let e): text += "create   \(line(e))\n"
                case .delete(let e): text += "delete   \(line(e))\n"
                case .update(let e, let c): text += "update   [\(c.map(\.rawValue).joined(separator: ","))] \(line(e))\n"
                case .recreate(_, let n, let c): text += "recreate [\(c.map(\.rawValue).joined(separator: ","))] \(line(n))\n"
                case .cannot(let e, let c, let why): text += "cannot   [\(c.map(\.rawValue).joined(separator: ","))] \(line(e))\n         \(why)\n"
                case .createExpectation(let x): text += "create   expect \(expectLine(x))\n"
                case .deleteExpectation(let x): text += "delete   expect \(expectLine(x))\n"
                }
            }
            FileHandle.standardOutput.write(Data(text.utf8))
            guard apply else { throw ExitCode(plan.isEmpty ? 0 : 1) }

            var writes: [TableWrite] = []
            for a in plan {
                switch a {
                case .create(let e): writes.append(Snapshots.create(e))
                case .delete(let e): writes.append(.delete(e.original, zone: e.zone, id: nil))
                case .update(let e, _): writes.append(.update(e))
                case .recreate(let old, let new, _):
                    writes.append(.delete(old.original, zone: old.zone, id: nil))
                    writes.append(Snapshots.create(new))
                case .cannot, .createExpectation, .deleteExpectation: break
                }
            }
            var failed = 0, expectationWrites = 0
            do {
                let table = try ConntrackTable(allowHostTableWrites: hostTable)
                let writer = try BatchWriter(table: table)
                for w in writes { try writer.add(w) }
                for f in try writer.finish() {
                    failed += 1
                    var why = ConntrackRunner.message(f.error)
                    if f.error.errno == ENOSPC, case .update(let e) = writes[f.index], e.labels != nil {
                        why = "labels cannot be stored: this namespace's entries have no room for labels (no nft rule uses ct label)"
                    }
                    printError("ctsync sync: write \(f.index + 1): \(why)")
                }
                // Expectations after entries: a created expectation needs its master.
                for a in plan {
                    if case .createExpectation = a { expectationWrites += 1 }
                    if case .deleteExpectation = a { expectationWrites += 1 }
                    do {
                        switch a {
                        case .deleteExpectation(let x): try table.deleteExpectation(x.tuple)
                        case .createExpectation(let x): try table.createExpectation(x)
                        default: continue
                        }
                    } catch {
                        failed += 1
                        printError("ctsync sync: \(a.verb): \(error)")
                    }
                }
            } catch {
                printError("ctsync sync: \(error)")
                throw ExitCode(2)
            }
            let after = try compare()
            let left = SyncPlanner.plan(after, scopes: scopes)
            let repairable = left.filter { if case .cannot = $0 { return false } else { return true } }
            printError("ctsync sync: \(writes.count + expectationWrites - failed) writes applied, \(failed) failed; \(after.divergences.count) divergences left, \(repairable.count) repairable")
            throw ExitCode(repairable.isEmpty && failed == 0 ? 0 : 1)
        }
    }
}
