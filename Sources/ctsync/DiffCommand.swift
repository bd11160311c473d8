import ArgumentParser
import ConntrackCore
import ConntrackModel
import Foundation
import KernelConntrack
import PacketDecoding
import Reconcile
import Replication
#if canImport(Glibc)
import Glibc
#endif

extension Ctsync {
    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare two conntrack tables and explain every divergence (exit 0 same, 1 different, 2 error).",
            discussion: """
            Each side is `kernel` (this network namespace), `snapshot:FILE` (JSON lines from
            `ctsync dump -o json`), `model:CAPTURE[,CAPTURE…]` (the model at the current time) or
            `peer:HOST:PORT` (a `ctsync replicate standby`'s cache; needs --key-file).
            `ctsync diff --pcap CAPTURE` compares the model of CAPTURE (a) with the kernel (b).
              ctsync diff --pcap router.pcap
              ctsync diff snapshot:before.jsonl kernel -o json
            Model sides take the `track` options (--sysctls, --sysctl, --zone, --mark, --helper, --nat, …).
            """)

        @Argument(help: "two sides: kernel, snapshot:FILE, model:CAPTURE[,CAPTURE…], peer:HOST:PORT") var sides: [String] = []
        @Option(help: "pre-shared key file for peer: sides") var keyFile: String?
        @Option(help: "shorthand for model:CAPTURE kernel (repeatable)") var pcap: [String] = []
        @Option(name: .shortAndLong, help: "text or json") var output = "text"
        @Option(help: "timeouts within this many seconds are equal") var tolerance: UInt32 = 2
        @Option(help: "classes to leave out, comma-separated: \(DivergenceClass.ignorable.map(\.rawValue).joined(separator: ","))")
        var ignore: String?
        @Option(name: .customLong("where"), parsing: .unconditional, help: "conntrack -L filters limiting the compared entries, e.g. \"-p tcp --dport 443 -s 192.0.2.0/24\"")
        var filterText: String?
        @OptionGroup var model: ModelOptions

        func validate() throws {
            func fail(_ message: String) throws -> Never {
                printError("ctsync diff: \(message)")
                throw ExitCode(2)
            }
            if !["text", "json"].contains(output) { try fail("-o takes text or json, not \(output)") }
            if pcap.isEmpty && sides.count != 2 { try fail("give two sides (kernel, snapshot:FILE, model:CAPTURE), or --pcap CAPTURE") }
            if !pcap.isEmpty && !sides.isEmpty { try fail("give --pcap or two sides, not both") }
            for s in sides where s != "kernel" && !s.hasPrefix("snapshot:") && !s.hasPrefix("model:") && !s.hasPrefix("peer:") {
                try fail("unknown side `\(s)' (kernel, snapshot:FILE, model:CAPTURE, peer:HOST:PORT)")
            }
            for s in sides where s.hasPrefix("peer:") {
                if parseEndpoint(String(s.dropFirst(5))) == nil { try fail("`\(s)': peer: takes HOST:PORT") }
                if keyFile == nil { try fail("`\(s)' needs --key-file (the replication key)") }
            }
            if let ignore {
                for name in ignore.split(separator: ",") where DivergenceClass(rawValue: String(name)).map({ DivergenceClass.ignorable.contains($0) }) != true {
                    try fail("--ignore: unknown class `\(name)'")
                }
            }
        }

        func run() throws {
            let specs = pcap.isEmpty ? sides : ["model:" + pcap.joined(separator: ","), "kernel"]
            let filter = try TableSides.filter(filterText, program: "ctsync diff")
            TableSides.peerKeyFile = keyFile
            var (a, b) = try TableSides.load(specs[0], specs[1], model: model, program: "ctsync diff")
            TableSides.restrict(&a, to: filter)
            TableSides.restrict(&b, to: filter)
            var options = DiffOptions(tolerance: tolerance)
            options.ignore = Set((ignore ?? "").split(separator: ",").compactMap { DivergenceClass(rawValue: String($0)) })
            let report = TableSides.compare(a, b, options: options)
            let text = output == "json" ? DiffFormat.json(report, a: a.context, b: b.context)
                : DiffFormat.text(report, a: a.context, b: b.context, color: isatty(1) != 0)
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
    var gaps: [Tuple: Int] = [:]

    func note(_ v: Verdict, _ p: DecodedPacket, _ entry: ModelEntry?) {
        if v.kind == .new, let e = entry, e.original.l4proto == 6, e.tcp.state == .established { pickedUp.insert(e.original) }
        guard v.kind == .invalid, let reason = v.reason, p.hasTransport else { return }
        let t = p.tuple.withoutZone
        // The packet may travel in either direction of its connection.
        for key in [t, t.inverted()] where invalid[key] == nil { invalid[key] = (frames.value, reason.rawValue) }
        // An ACK for data never seen: the capture, not the connection, lost packets.
        if reason == .ackOverUpperBound { for key in [t, t.inverted()] where gaps[key] == nil { gaps[key] = frames.value } }
    }
}

/// One side of a comparison: entries, expectations (nil when the side cannot say), and
/// what is known about it.
struct TableSide {
    var entries: [ConntrackEntry]
    var expectations: [Expectation]?
    var context: SideContext
    /// The entries indexed for matching (built on the thread that read them).
    var index: Differ.Index?
}

/// The tables `diff` and `sync` compare: kernel, snapshot file, or the model of captures.
enum TableSides {
    /// The key file for `peer:` sides (set by the command before loading).
    nonisolated(unsafe) static var peerKeyFile: String?

    /// Loads both sides at once (two threads: reading a side is most of a diff's time).
    static func load(_ a: String, _ b: String, model: ModelOptions, program: String) throws -> (TableSide, TableSide) {
        let results = UnsafeSendableBox<[Result<TableSide, Error>?]>([nil, nil])
        let specs = [a, b]
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            let r = Result {
                var side = try load(specs[i], model: model, program: program)
                if i == 1 { side.index = Differ.Index(side.entries) }
                return side
            }
            results.lock.withLock { results.value[i] = r }
        }
        return (try results.value[0]!.get(), try results.value[1]!.get())
    }

    /// One side's entries and what is known about it.
    static func load(_ spec: String, model: ModelOptions, program: String) throws -> TableSide {
        if spec == "kernel" {
            var entries: [ConntrackEntry] = []
            var expectations: [Expectation] = []
            do {
                let table = try ConntrackTable()
                _ = try table.dump { entries.append($0) }
                _ = try table.dumpExpectations { expectations.append($0) }
                var context = SideContext(kind: .kernel, name: "kernel")
                context.sysctls = Sysctls.read().values
                let count = try table.count()
                context.tableCount = Int(count.entries)
                context.tableMax = count.max.map(Int.init) ?? context.sysctls?["nf_conntrack_max"]
                context.tableDrops = try table.cpuStats().reduce(0) { sum, cpu in
                    sum + cpu.values.filter { $0.name == "drop" || $0.name == "early_drop" }.reduce(0) { $0 + Int($1.value) }
                }
                return TableSide(entries: entries, expectations: expectations, context: context)
            } catch {
                printError("\(program): kernel: \(error)")
                throw ExitCode(2)
            }
        }
        if spec.hasPrefix("peer:"), let (host, port) = parseEndpoint(String(spec.dropFirst(5))) {
            guard let keyFile = peerKeyFile, let data = FileManager.default.contents(atPath: keyFile) else {
                printError("\(program): cannot read the key file \(peerKeyFile ?? "(none)")")
                throw ExitCode(2)
            }
            var key = Array(data)
            while let last = key.last, last == 10 || last == 13 { key.removeLast() }
            do {
                let (entries, expectations) = try PeerDump.fetch(host: host, port: port, psk: key)
                return TableSide(entries: entries, expectations: expectations, context: SideContext(kind: .peer, name: spec))
            } catch {
                printError("\(program): \(spec): \(error)")
                throw ExitCode(2)
            }
        }
        if spec.hasPrefix("snapshot:") {
            let file = String(spec.dropFirst("snapshot:".count))
            let contents: SnapshotContents
            do { contents = try SnapshotContents.read(file) } catch {
                printError("\(program): \(error)")
                throw ExitCode(2)
            }
            // A snapshot without a header may be plain `dump -o json` output, which has no
            // expectations: only a `snapshot save` file speaks for its expectation table.
            var context = SideContext(kind: .snapshot, name: file)
            context.sysctls = contents.header?.sysctls
            return TableSide(entries: contents.entries, expectations: contents.header != nil ? contents.expectations : nil,
                             context: context)
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
                                              program: program)
        if let damaged {
            printError("\(program): \(damaged)")
            throw ExitCode(2)
        }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let now = max(UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec), tracker.now)
        var context = SideContext(kind: .model, name: "model of " + files.joined(separator: ","))
        context.pickedUp = seen.pickedUp
        context.invalidPackets = seen.invalid
        context.captureGaps = seen.gaps
        context.sysctls = config.sysctls.values
        context.tableCount = tracker.liveCount(at: now)
        context.tableMax = config.sysctls["nf_conntrack_max"]
        return TableSide(entries: tracker.entries(at: now), expectations: tracker.expectationList(at: now), context: context)
    }
}

extension TableSides {
    /// `--where "FILTERS"`: conntrack -L filter options limiting the compared entries.
    static func filter(_ text: String?, program: String) throws -> EntryFilter? {
        guard let text, !text.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
        do {
            let args = try ConntrackArguments.parse(text.split(separator: " ").map(String.init), fixed: .list,
                                                    labelNames: { LabelMap.load() })
            return args.filter
        } catch {
            printError("\(program): --where: \(error)")
            throw ExitCode(2)
        }
    }

    /// Keeps the entries the filter matches, and the expectations whose master is one of them.
    static func restrict(_ side: inout TableSide, to filter: EntryFilter?) {
        guard let filter else { return }
        side.entries.removeAll { !filter.matches($0) }
        side.index = nil
        if side.expectations != nil {
            let masters = Set(side.entries.map { $0.original.withoutZone })
            side.expectations!.removeAll { !masters.contains($0.master.withoutZone) }
        }
    }

    /// Compares two sides; counters only when both sides have them.
    static func compare(_ a: TableSide, _ b: TableSide, options: DiffOptions) -> DiffReport {
        var options = options
        if !(a.entries.contains { $0.countersOriginal != nil } && b.entries.contains { $0.countersOriginal != nil }) {
            options.ignore.insert(.counters)
        }
        return Differ.diff(a.entries, b.entries, options: options, contextA: a.context, contextB: b.context,
                           expectationsA: a.expectations, expectationsB: b.expectations, indexB: b.index)
    }
}

/// A value shared between threads under a lock (results of parallel loads).
final class UnsafeSendableBox<T>: @unchecked Sendable {
    let lock = NSLock()
    var value: T
    init(_ v: T) { value = v }
}
