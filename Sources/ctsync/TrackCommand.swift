import ArgumentParser
import ConntrackCore
import ConntrackModel
import Dispatch
import Foundation
import PacketCapture
import PacketDecoding
#if canImport(Glibc)
import Glibc
#endif

extension Ctsync {
    struct Track: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Predict the kernel's conntrack table from a capture (Linux's own rules, this host's sysctls).",
            discussion: """
            Prints the table as `ctsync dump` would (same formats), at the moment --at names.
            Sysctls come from this network namespace's /proc/sys/net/netfilter (--sysctls proc, the
            default), the kernel's built-in defaults (--sysctls builtin) or a file of name=value lines;
            --sysctl NAME=VALUE overrides one. A -i any capture of a router (LINUX_SLL2) is read the
            way docs/capture-points.md describes: forwarded packets once, NAT learnt from their copies.
              ctsync track router.pcap -o extended
              ctsync track cap.pcapng --helper ftp:tcp/21 --expect
              ctsync track cap.pcap --verdicts
            """)

        @Argument(help: "pcap or pcapng files (read in turn; --merge merges them by time)") var files: [String] = []
        @Option(name: [.customShort("i"), .long], help: "track a live interface (any for all) until SIGINT/SIGTERM; SIGUSR1 prints the table")
        var interface: String?
        @Option(help: "BPF filter for a live capture") var filter: String?
        @Flag(help: "merge the files by timestamp instead of reading them in turn") var merge = false
        @Option(name: .shortAndLong, help: "text|extended|json|save") var output = "text"
        @Option(help: "when the table is shown: end (last packet, the default for files), now (wall clock), or a Unix time")
        var at: String?
        @OptionGroup var model: ModelOptions
        @Flag(help: "print the expectation table instead of the entries") var expect = false
        @Flag(help: "print one line per packet: frame, time, tuple, verdict, TCP state, reason") var verdicts = false
        @Option(help: "MATCH (proto=,src=,dst=,sport=,dport=): print every packet of the entries whose original tuple matches, with the entry after it")
        var timeline: String?
        @Flag(name: .shortAndLong, help: "no summary on standard error") var quiet = false

        struct Problem: Error, CustomStringConvertible { var description: String }

        /// Bad arguments: one line, exit status 2 (not the parser's usage block).
        func validate() throws {
            func fail(_ message: String) throws -> Never {
                printError("ctsync track: \(message)")
                throw ExitCode(2)
            }
            if !["text", "extended", "json", "save"].contains(output) { try fail("-o takes text, extended, json or save, not \(output)") }
            if interface == nil && files.isEmpty { try fail("give at least one capture file, or --interface") }
            if interface != nil && !files.isEmpty { try fail("give files or --interface, not both") }
            if let at, at != "end", at != "now", (Double(at) ?? -1) < 0 { try fail("--at takes end, now or a Unix time, not \(at)") }
            if interface != nil, at == "end" { try fail("--at end needs capture files") }
        }

        func run() throws {
            let config: ModelConfiguration
            let timelineMatch: PacketMatch?
            do {
                config = try model.configuration()
                timelineMatch = try timeline.map { t in
                    do { return try PacketMatch(parsing: t) } catch { throw Problem(description: "--timeline: \(error)") }
                }
            } catch {
                printError("ctsync track: \(error)")
                throw ExitCode(2)
            }
            let session = TrackSession(command: self, tracker: Tracker(configuration: config), timeline: timelineMatch)
            if let interface { return try session.live(interface) }
            try session.files()
        }
    }
}


/// The model's configuration options, shared by `track` and `diff`.
struct ModelOptions: ParsableArguments {
    @Option(help: "where sysctls come from: proc (this namespace), builtin, or a file of name=value lines")
    var sysctls = "proc"
    @Option(name: .customLong("sysctl"), help: "NAME=VALUE, e.g. nf_conntrack_tcp_loose=0 (repeatable)") var sysctlOverrides: [String] = []
    @Option(name: .customLong("zone"), help: "ZONE[:MATCH]: packets matching get this zone (ct zone set in raw)") var zones: [String] = []
    @Option(name: .customLong("mark"), help: "MARK[:MATCH]: a packet matching sets its entry's mark (ct mark set)") var marks: [String] = []
    @Option(name: .customLong("label"), help: "BIT[:MATCH]: a packet matching sets this label bit (0-127) on its entry (ct label set)") var labels: [String] = []
    @Option(name: .customLong("helper"), help: "NAME:PROTO/PORT, e.g. ftp:tcp/21 (ct helper set on new connections)") var helpers: [String] = []
    @Flag(help: "the host has NAT chains (new entries get SRC_NAT_DONE|DST_NAT_DONE)") var nat = false
    @Option(help: "whose TCP rules where kernels differ: 6.18 (and later, the default) or 6.12") var kernel = "6.18"

    struct Problem: Error, CustomStringConvertible { var description: String }

    func configuration() throws -> ModelConfiguration {
        var s: Sysctls
        switch sysctls {
        case "proc": s = Sysctls.read()
        case "builtin": s = Sysctls()
        default:
        guard let text = try? String(contentsOfFile: sysctls, encoding: .utf8) else {
            throw ModelOptions.Problem(description: "cannot read sysctl file \(sysctls)")
        }
        s = Sysctls()
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let l = line.trimmingCharacters(in: .whitespaces)
            if l.isEmpty || l.hasPrefix("#") { continue }
            do { try s.apply(l) } catch { throw ModelOptions.Problem(description: "\(sysctls):\(n + 1): \(error)") }
        }
        }
        for o in sysctlOverrides {
        do { try s.apply(o) } catch { throw ModelOptions.Problem(description: "--sysctl: \(error)") }
        }
        var c = ModelConfiguration(sysctls: s)
        func parse<T>(_ option: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw ModelOptions.Problem(description: "\(option): \(error)") }
        }
        c.zones = try parse("--zone") { try zones.map { try ModelConfiguration.rule($0) { UInt16($0) } } }
        c.marks = try parse("--mark") { try marks.map { try ModelConfiguration.rule($0) { UInt32($0) ?? ($0.hasPrefix("0x") ? UInt32($0.dropFirst(2), radix: 16) : nil) } } }
        c.helpers = try parse("--helper") { try helpers.map(ModelConfiguration.helperRule) }
        c.labels = try parse("--label") { try labels.map { try ModelConfiguration.rule($0) { Int($0).flatMap { (0..<128).contains($0) ? $0 : nil } } } }
        c.natHooks = nat
        guard let k = KernelRules(rawValue: kernel) else {
        throw ModelOptions.Problem(description: "--kernel takes \(KernelRules.allCases.map(\.rawValue).joined(separator: " or ")), not \(kernel)")
        }
        c.kernel = k
        return c
    }

}

/// One `ctsync track` run: reads the captures into the tracker and prints.
final class TrackSession {
    let command: Ctsync.Track
    var tracker: Tracker
    let out = OutputSink()
    let timeline: PacketMatch?
    let frames = FrameCount()
    var captureDrops: CaptureStatistics?
    var counts = FeedCounts()
    var damaged: String?
    var anonymousBeforeOutput: Int?

    init(command: Ctsync.Track, tracker: Tracker, timeline: PacketMatch?) {
        self.command = command
        self.tracker = tracker
        self.timeline = timeline
    }

    func installObserver() {
        guard command.verdicts || timeline != nil else { return }
        let sink = out
        let match = timeline
        tracker.observer = { [unowned self] v, p, time, entry in
            var line = "\(self.frames.value) \(CaptureSummary.seconds(time)) \(TrackSession.tupleText(p.tuple)) \(v.kind.name)"
            if let e = entry {
                if let m = match, !m.matches(e.original) && !m.matches(e.original.inverted()) { return }
                if e.original.l4proto == 6 { line += " \(e.tcp.state.text)" }
                if match != nil {
                    line += " [\(e.status.nameList.joined(separator: ","))]"
                    line += " timeout=\(e.expires > time ? (e.expires - time) / 1_000_000_000 : 0)"
                    if e.options & ModelEntry.Options.accounting != 0 {
                        line += " packets=\(e.packets.0)/\(e.packets.1) bytes=\(e.bytes.0)/\(e.bytes.1)"
                    }
                }
            } else if let m = match {
                guard m.matches(p.tuple) || m.matches(p.tuple.inverted()) else { return }
                if v.kind != .invalid && v.kind != .untracked { line += " (entry deleted)" }
            }
            if let r = v.reason { line += " reason=\"\(r.rawValue)\"" }
            sink.write(line)
            sink.lineDone()
        }
    }

    static func tupleText(_ t: Tuple) -> String {
        var s = "\(L4Protocol(number: t.l4proto).name) src=\(t.source) dst=\(t.destination)"
        switch t.l4 {
        case .tcp, .udp, .udplite, .sctp, .dccp: s += " sport=\(t.sourcePort) dport=\(t.destinationPort)"
        case .icmp, .icmpv6: s += " type=\(t.icmpType) code=\(t.icmpCode) id=\(t.icmpID)"
        default: break
        }
        return s
    }

    func files() throws {
        installObserver()
        damaged = try CaptureReading.read(command.files, merge: command.merge, into: &tracker, frames: frames,
                                          counts: &counts, program: "ctsync track")
        let time = try moment(default: "end")
        print(at: time)
        if let damaged {
            printError("ctsync track: \(damaged)")
            throw ExitCode(2)
        }
    }

    func moment(default d: String) throws -> UInt64 {
        switch command.at ?? d {
        case "end": return tracker.now
        case "now":
            var ts = timespec()
            clock_gettime(CLOCK_REALTIME, &ts)
            return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        case let s:
            guard let v = Double(s), v >= 0 else { throw Ctsync.Track.Problem(description: "--at: not a time: \(s)") }
            return UInt64(v * 1_000_000_000)
        }
    }

    func print(at time: UInt64) {
        anonymousBeforeOutput = TrackSession.anonymousMemory()
        if command.verdicts || timeline != nil {
            out.flush()
            summary(at: time)
            return
        }
        var text = TextFormatOptions()
        text.showLayer3 = command.output == "extended"
        text.now = time / 1_000_000_000
        if command.expect {
            for x in tracker.expectationList(at: time) {
                switch command.output {
                case "json": ConntrackJSON.write(x, to: &out.bytes)
                default: ConntrackText.write(x, options: text, to: &out.bytes)
                }
                out.lineDone()
            }
        } else {
            let entries = tracker.entries(at: time)
            for e in entries {
                switch command.output {
                case "json": ConntrackJSON.write(e, to: &out.bytes)
                case "save": ConntrackSave.write(e, to: &out.bytes)
                default: ConntrackText.write(e, options: text, to: &out.bytes)
                }
                out.lineDone()
            }
        }
        out.flush()
        summary(at: time)
    }

    /// The summary on stderr, including what makes the prediction uncertain.
    func summary(at time: UInt64) {
        guard !command.quiet else { return }
        let s = tracker.statistics
        let live = tracker.liveCount(at: time)
        var lines = ["ctsync track: \(s.packets) packets, \(s.created) connections seen, \(live) entries at \(CaptureSummary.seconds(time))"]
        let kinds = ["new", "established", "related", "invalid", "untracked"]
        lines.append("  verdicts: " + zip(kinds, s.byVerdict).map { "\($0) \($1)" }.joined(separator: ", "))
        for (r, n) in s.invalidReasons.sorted(by: { $0.value > $1.value }) { lines.append("  invalid: \(n) \(r.rawValue)") }
        let notIP = counts.skipped[.notIP] ?? 0
        let unreadable = counts.skipped.filter { $0.key != .notIP }.sorted { $0.value > $1.value }
        if notIP + counts.otherHost > 0 { lines.append("  not tracked: \(notIP) non-IP frames, \(counts.otherHost) frames for other hosts") }
        for (r, n) in unreadable { lines.append("  not tracked: \(n) \(r.rawValue)") }
        if counts.forwardedCopies + counts.loopbackCopies > 0 {
            lines.append("  capture points: \(counts.forwardedCopies) forwarded copies (NAT learnt for \(s.natLearnt) entries), \(counts.loopbackCopies) loopback echoes")
        }
        if s.expectationsCreated > 0 { lines.append("  expectations: \(s.expectationsCreated) created by helpers") }
        if s.pickedUp > 0 {
            lines.append("  uncertain: \(s.pickedUp) TCP connections were picked up mid-stream (they began before the capture, or their first packets were not captured)")
        }
        if let d = captureDrops, d.droppedByKernel + d.droppedByInterface > 0 {
            lines.append("  uncertain: the capture dropped \(d.droppedByKernel + d.droppedByInterface) packets; entries they touched may differ")
        }
        if s.nearTableLimit {
            lines.append("  uncertain: the table came within 5% of nf_conntrack_max; which entries the kernel early-drops is not predictable")
        }
        if let anon = anonymousBeforeOutput {
            let peak = max(s.peakEntries, 1)
            lines.append("  memory: \(anon / 1_048_576) MiB anonymous (\(anon / peak) bytes per entry at the peak of \(s.peakEntries) entries; table storage \(tracker.table.storageBytes / 1_048_576) MiB)")
        }
        if damaged != nil { lines.append("  uncertain: the capture is damaged; packets after the damage are missing") }
        printError(lines.joined(separator: "\n"))
    }

    /// RssAnon of this process (the mapped capture file is not the model's memory).
    static func anonymousMemory() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("RssAnon:") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first
            return kb.map { $0 * 1024 }
        }
        return nil
    }

    // MARK: live

    func live(_ interface: String) throws {
        let source: CaptureSource
        do {
            // Immediate mode gives one ring slot per snaplen: 64 KiB slots in a 64 MiB ring
            // (the default 256 KiB snaplen and 2 MiB ring hold 8 packets and drop bursts).
            source = try CaptureSource(interface: interface, filter: command.filter, snaplen: 65_535, immediate: true,
                                       bufferSize: 64 << 20)
        } catch let e as CaptureError {
            printError("ctsync track: \(e)")
            throw ExitCode(2)
        }
        let flags = SignalFlags()
        let s = UnsafeSendable(source)
        var handlers: [DispatchSourceSignal] = []
        for (sig, isPrint) in [(SIGUSR1, true), (SIGINT, false), (SIGTERM, false)] {
            signal(sig, SIG_IGN)
            let h = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            h.setEventHandler {
                if isPrint { flags.set(print: true) } else { flags.set(stop: true) }
                s.value.stop()
            }
            h.resume()
            handlers.append(h)
        }
        installObserver()
        var feeder = CaptureFeeder(tracker: tracker, linkType: source.linkType)
        while true {
            do {
                try source.forEach { f in
                    frames.value += 1
                    feeder.feed(f.data, originalLength: f.originalLength, at: f.timestamp)
                }
            } catch let e as CaptureError {
                printError("ctsync track: \(e)")
                throw ExitCode(2)
            }
            captureDrops = source.statistics()
            let (p, stop) = flags.take()
            if p || stop {
                tracker = feeder.tracker
                counts = feeder.counts
                print(at: try moment(default: "now"))
                feeder.tracker = tracker
            }
            if stop { break }
        }
        _ = handlers
    }
}

/// Flags set by signal handlers on another thread.
final class SignalFlags: @unchecked Sendable {
    private let lock = NSLock()
    private var print = false, stop = false
    func set(print p: Bool = false, stop s: Bool = false) {
        lock.lock(); if p { print = true }; if s { stop = true }; lock.unlock()
    }
    func take() -> (Bool, Bool) {
        lock.lock(); defer { lock.unlock() }
        let r = (print, stop)
        print = false
        return r
    }
}

/// The number of the frame being read: shared with observers that print it, so it is a
/// reference rather than an inout counter (an observer reads it while frames are read).
final class FrameCount {
    @exclusivity(unchecked) var value = 0
}

/// Reads capture files into a tracker, in turn or merged by timestamp (`track`, `diff`).
enum CaptureReading {
    /// Returns what is wrong with a cut-off or damaged file (everything before it was read);
    /// a file that cannot be opened is a one-line error and exit status 2.
    static func read(_ files: [String], merge: Bool, into tracker: inout Tracker, frames: FrameCount,
                     counts: inout FeedCounts, program: String) throws -> String? {
        var sources: [CaptureSource] = []
        for f in files {
            do { sources.append(try CaptureSource(file: f)) } catch let e as CaptureError {
                printError("\(program): \(e)")
                throw ExitCode(2)
            }
        }
        var damaged: String?
        if merge {
            guard Set(sources.map(\.linkType)).count == 1 else {
                printError("\(program): --merge needs captures of one link type")
                throw ExitCode(2)
            }
            var feeder = CaptureFeeder(tracker: tracker, linkType: sources[0].linkType)
            do {
                try MergedCapture(sources).forEach { _, f in
                    frames.value += 1
                    feeder.feed(f.data, originalLength: f.originalLength, at: f.timestamp)
                }
            } catch let e as CaptureError { damaged = "\(e)" }
            tracker = feeder.tracker
            counts.add(feeder.counts)
            return damaged
        }
        for s in sources {
            var feeder = CaptureFeeder(tracker: tracker, linkType: s.linkType)
            do {
                // A plain loop rather than forEach's closure: the feeder stays in place.
                while let f = try s.next() {
                    frames.value += 1
                    feeder.feed(f.data, originalLength: f.originalLength, at: f.timestamp)
                }
            } catch let e as CaptureError { damaged = "\(e)" }
            tracker = feeder.tracker
            counts.add(feeder.counts)
            if damaged != nil { break }
        }
        return damaged
    }
}
