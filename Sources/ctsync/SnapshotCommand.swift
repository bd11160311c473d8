import ArgumentParser
import ConntrackCore
import ConntrackModel
import Foundation
import KernelConntrack
#if canImport(Glibc)
import Glibc
#endif

extension Ctsync {
    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save the conntrack table to a file and load it back, losslessly.",
            subcommands: [Save.self, Load.self])
    }
}

/// The first line of a snapshot file: when, from which kernel, with which sysctls.
struct SnapshotHeader {
    var time: UInt64
    var kernel: String
    var sysctls: [String: Int]

    var line: String {
        let s = sysctls.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
        return "{\"v\":1,\"kind\":\"snapshot\",\"time\":\(time),\"kernel\":\"\(kernel)\",\"sysctls\":{\(s)}}"
    }

    /// Parses a header line; nil when the line is not one.
    init?(line: Substring) {
        guard line.contains("\"kind\":\"snapshot\""),
              let data = line.data(using: .utf8),
              let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              o["v"] as? Int == 1, let t = o["time"] as? NSNumber else { return nil }
        time = t.uint64Value
        kernel = o["kernel"] as? String ?? ""
        sysctls = (o["sysctls"] as? [String: Int]) ?? [:]
    }

    init(time: UInt64, kernel: String, sysctls: [String: Int]) {
        self.time = time; self.kernel = kernel; self.sysctls = sysctls
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func kernelRelease() -> String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}

extension Ctsync.Snapshot {
    struct Save: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the table as JSON lines (docs/json.md) after a header line (time, kernel, sysctls).")
        @Argument(help: "file to write, or - for standard output") var file: String

        func run() throws {
            let header = SnapshotHeader(time: SnapshotHeader.now(), kernel: SnapshotHeader.kernelRelease(),
                                        sysctls: Sysctls.read().values)
            var out: [UInt8] = Array((header.line + "\n").utf8)
            var count = 0, expectations = 0
            do {
                let table = try ConntrackTable()
                _ = try table.dump { e in
                    ConntrackJSON.write(e, to: &out)
                    out.append(10)
                    count += 1
                }
                // Expectations after the entries: loading creates them once their masters exist.
                _ = try table.dumpExpectations { x in
                    ConntrackJSON.write(x, to: &out)
                    out.append(10)
                    expectations += 1
                }
            } catch {
                printError("ctsync snapshot save: \(error)")
                throw ExitCode(2)
            }
            let data = Data(out)
            if file == "-" {
                FileHandle.standardOutput.write(data)
            } else {
                // Written beside the target and renamed: a failed save never leaves half a file.
                let tmp = file + ".tmp\(getpid())"
                guard FileManager.default.createFile(atPath: tmp, contents: data), rename(tmp, file) == 0 else {
                    unlink(tmp)
                    printError("ctsync snapshot save: cannot write \(file): \(String(cString: strerror(errno)))")
                    throw ExitCode(2)
                }
            }
            printError("ctsync snapshot save: \(count) entries, \(expectations) expectations")
        }
    }

    struct Load: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the entries of a snapshot in this namespace's table, in netlink batches.",
            discussion: """
            Timeouts are shortened by the time elapsed since the save (entries that would have
            expired are skipped), or kept with --keep-timeouts. Existing entries are replaced.
            NAT is recreated from the reply tuples. Refused in the host's own network namespace
            unless --host-table is given.
            """)
        @Argument(help: "snapshot file from `ctsync snapshot save`, or - for standard input") var file: String
        @Flag(help: "keep the saved timeouts instead of subtracting the time since the save") var keepTimeouts = false
        @Flag(help: "allow writing to the host's own conntrack table") var hostTable = false

        func run() throws {
            // Every line is checked before anything is written: a bad file changes nothing.
            let contents: SnapshotContents
            do { contents = try SnapshotContents.read(file) } catch {
                printError("ctsync snapshot load: \(error)")
                throw ExitCode(2)
            }
            let header = contents.header, entries = contents.entries
            let elapsed: UInt32 = keepTimeouts ? 0
                : header.map { UInt32(clamping: SnapshotHeader.now() > $0.time ? (SnapshotHeader.now() - $0.time) / 1_000_000_000 : 0) } ?? 0
            var expired = 0
            do {
                let table = try ConntrackTable(allowHostTableWrites: hostTable)
                let writer = try BatchWriter(table: table)
                for var e in entries {
                    if let t = e.timeout, elapsed > 0 {
                        if t <= elapsed { expired += 1; continue }
                        e.timeout = t - elapsed
                    }
                    try writer.add(Snapshots.create(e))
                }
                let failures = try writer.finish()
                for f in failures { printError("ctsync snapshot load: entry \(f.index + 1): \(ConntrackRunner.message(f.error))") }
                var loadedExpectations = 0, expectationFailures = 0
                for var x in contents.expectations {
                    if let t = x.timeout, elapsed > 0 {
                        if t <= elapsed { continue }
                        x.timeout = t - elapsed
                    }
                    do { try table.createExpectation(x); loadedExpectations += 1 } catch {
                        expectationFailures += 1
                        printError("ctsync snapshot load: expectation \(x.tuple.source) -> \(x.tuple.destination): \(error)")
                    }
                }
                // The kernel drops labels silently when no rule reserved room for them.
                if let labelled = entries.first(where: { !($0.labels ?? Labels()).isEmpty && ($0.timeout ?? .max) > elapsed }),
                   let back = try? table.get(labelled.original, zone: labelled.zone), (back.labels ?? Labels()).isEmpty {
                    printError("ctsync snapshot load: warning: labels were not kept: this namespace's entries have no room for " +
                               "labels (load an nft rule that uses ct label, then load again)")
                }
                printError("ctsync snapshot load: \(entries.count - expired - failures.count) entries loaded"
                           + (expired > 0 ? ", \(expired) skipped (expired since the save)" : "")
                           + (contents.expectations.isEmpty ? "" : ", \(loadedExpectations) expectations"))
                if !failures.isEmpty || expectationFailures > 0 { throw ExitCode(1) }
            } catch let e as ExitCode {
                throw e
            } catch {
                printError("ctsync snapshot load: \(error)")
                throw ExitCode(2)
            }
        }
    }
}

enum Snapshots {
    /// The create request that makes the kernel hold `e` again: NAT is requested from the
    /// reply tuple (the kernel sets the NAT bits and the reply itself); an entry that already
    /// exists is replaced.
    static func create(_ e: ConntrackEntry) -> TableWrite {
        var snat: NATRequest?, dnat: NATRequest?
        if e.isSourceNAT {
            snat = NATRequest(address: e.reply.destination, port: e.original.l4.hasPorts ? e.reply.destinationPort : nil)
        }
        if e.isDestinationNAT {
            dnat = NATRequest(address: e.reply.source, port: e.original.l4.hasPorts ? e.reply.sourcePort : nil)
        }
        return .create(e, sourceNAT: snat, destinationNAT: dnat, ignoreExisting: true)
    }
}
