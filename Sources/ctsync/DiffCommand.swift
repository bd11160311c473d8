import ArgumentParser
import ConntrackCore
import ConntrackModel
import Foundation
import KernelConntrack
import PacketDecoding
import Reconcile
#if canImport(Glibc)
import Glibc
#endif

extension Ctsync {
    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare two conntrack tables and explain every divergence (exit 0 same, 1 different, 2 error).",
            discussion: """
            Each side is `kernel` (this network namespace), `snapshot:FILE` (JSON lines from
            `ctsync dump -o json`) or `model:CAPTURE[,CAPTURE…]` (the model at the current time).
            `ctsync diff --pcap CAPTURE` compares the model of CAPTURE (a) with the kernel (b).
              ctsync diff --pcap router.pcap
              ctsync diff snapshot:before.jsonl kernel -o json
            Model sides take the `track` options (--sysctls, --sysctl, --zone, --mark, --helper, --nat, …).
            """)

        @Argument(help: "two sides: kernel, snapshot:FILE, model:CAPTURE[,CAPTURE…]") var sides: [String] = []
        @Option(help: "shorthand for model:CAPTURE kernel (repeatable)") var pcap: [String] = []
        @Option(name: .shortAndLong, help: "text or json") var output = "text"
        @Option(help: "timeouts within this many seconds are equal") var tolerance: UInt32 = 2
        @Option(help: "classes to leave out, comma-separated: \(DivergenceClass.ignorable.map(\.rawValue).joined(separator: ","))")
        var ignore: String?
        @OptionGroup var model: ModelOptions

        func validate() throws {
            func fail(_ message: String) throws -> Never {
                printError("ctsync diff: \(message)")
                throw ExitCode(2)
            }
            if !["text", "json"].contains(output) { try fail("-o takes text or json, not \(output)") }
            if pcap.isEmpty && sides.count != 2 { try fail("give two sides (kernel, snapshot:FILE, model:CAPTURE), or --pcap CAPTURE") }
            if !pcap.isEmpty && !sides.isEmpty { try fail("give --pcap or two sides, not both") }
            for s in sides where s != "kernel" && !s.hasPrefix("snapshot:") && !s.hasPrefix("model:") {
                try fail("unknown side `\(s)' (kernel, snapshot:FILE, model:CAPTURE)")
            }
            if let ignore {
                for name in ignore.split(separator: ",") where DivergenceClass(rawValue: String(name)).map({ DivergenceClass.ignorable.contains($0) }) != true {
                    try fail("--ignore: unknown class `\(name)'")
                }
            }
        }

        func run() throws {
            let specs = pcap.isEmpty ? sides : ["model:" + pcap.joined(separator: ","), "kernel"]
            let (a, ca) = try TableSides.load(specs[0], model: model, program: "ctsync diff")
            let (b, cb) = try TableSides.load(specs[1], model: model, program: "ctsync diff")
            var options = DiffOptions(tolerance: tolerance)
            options.ignore = Set((ignore ?? "").split(separator: ",").compactMap { DivergenceClass(rawValue: String($0)) })
            // Counters only mean something when both sides have them.
            if !(a.contains { $0.countersOriginal != nil } && b.contains { $0.countersOriginal != nil }) { options.ignore.insert(.counters) }
            let report = Differ.diff(a, b, options: options, contextA: ca, contextB: cb)
            let text = output == "json" ? DiffFormat.json(report, a: ca, b: cb)
                : DiffFormat.text(report, a: ca, b: cb, color: isatty(1) != 0)
            FileHandle.standardOutput.write(Data(text.utf8))
            throw ExitCode(report.divergences.isEmpty ? 0 : 1)
        }
    }
}

/// What the model saw while reading captures, for the causes: connections picked up
/// mid-stream and the first invalid packet of each connection (by frame).
final class ModelObservations {
    var frames = FrameCount()
    var pickedUp: Set<Tuple> = []
    var invalid: [Tuple: (frame: Int, reason: String)] = [:]

    func note(_ v: Verdict, _ p: DecodedPacket, _ entry: ModelEntry?) {
        if v.kind == .new, let e = entry, e.original.l4proto == 6, e.tcp.state == .established { pickedUp.insert(e.original) }
        guard v.kind == .invalid, let reason = v.reason, p.hasTransport else { return }
        var t = p.tuple
        t.zone = nil
        // The packet may travel in either direction of its connection.
        for key in [t, t.inverted()] where invalid[key] == nil { invalid[key] = (frames.value, reason.rawValue) }
    }
}

/// The tables `diff` and `sync` compare: kernel, snapshot file, or the model of captures.
enum TableSides {
    /// One side's entries and what is known about it.
    static func load(_ spec: String, model: ModelOptions, program: String) throws -> ([ConntrackEntry], SideContext) {
        if spec == "kernel" {
            var entries: [ConntrackEntry] = []
            do {
                let table = try ConntrackTable()
                _ = try table.dump { entries.append($0) }
            } catch {
                printError("\(program): kernel: \(error)")
                throw ExitCode(2)
            }
            return (entries, SideContext(kind: .kernel, name: "kernel"))
        }
        if spec.hasPrefix("snapshot:") {
            let file = String(spec.dropFirst("snapshot:".count))
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                printError("\(program): cannot read \(file) as UTF-8 text")
                throw ExitCode(2)
            }
            var entries: [ConntrackEntry] = []
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
                // Snapshot files may carry expectations and gap lines: entries only here.
                if line.utf8.starts(with: #"{"v":1,"kind":"expectation""#.utf8) || line.utf8.starts(with: #"{"v":1,"gap""#.utf8) { continue }
                if n == 0, SnapshotHeader(line: line) != nil { continue }
                do { entries.append(try ConntrackJSON.decode(line: line).0) } catch {
                    printError("\(program): \(file):\(n + 1): \(error)")
                    throw ExitCode(2)
                }
            }
            return (entries, SideContext(kind: .snapshot, name: file))
        }
        let files = spec.dropFirst("model:".count).split(separator: ",").map(String.init)
        let config: ModelConfiguration
        do { config = try model.configuration() } catch {
            printError("\(program): \(error)")
            throw ExitCode(2)
        }
        var tracker = Tracker(configuration: config)
        let seen = ModelObservations()
        tracker.observer = { v, p, _, entry in seen.note(v, p, entry) }
        var counts = FeedCounts()
        let frames = FrameCount()
        seen.frames = frames
        let damaged = try CaptureReading.read(files, merge: false, into: &tracker, frames: frames, counts: &counts,
                                              program: "ctsync diff")
        if let damaged {
            printError("\(program): \(damaged)")
            throw ExitCode(2)
        }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let now = UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        var context = SideContext(kind: .model, name: "model of " + files.joined(separator: ","))
        context.pickedUp = seen.pickedUp
        context.invalidPackets = seen.invalid
        return (tracker.entries(at: max(now, tracker.now)), context)
    }
}
