import ArgumentParser
import ConntrackCore
import ConntrackModel
import Dispatch
import Foundation
import KernelConntrack
import PacketCapture
import PacketDecoding
import Reconcile
#if canImport(Glibc)
import Glibc
#endif

extension Ctsync {
    struct Watch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Keep the model current from a live capture and report divergences from the kernel as they appear and end.",
            discussion: """
            The kernel's table is re-read every --interval seconds, and sooner (at most once a
            second) when ctnetlink reports entries created or destroyed. A divergence is printed
            (`+`) once it has lasted --grace seconds, so that packets in flight between the capture
            and the kernel raise no alarm, and printed again (`-`) when it ends. Connections the
            kernel held when the watch began are left out (the capture cannot know how they began)
            unless --include-preexisting. --metrics ADDR:PORT serves Prometheus metrics on
            /metrics. Runs until SIGINT or SIGTERM (exit 0). Model options as for `track`.
              ctsync watch -i eth0 --metrics 127.0.0.1:9473
            """)

        @Option(name: [.customShort("i"), .long], help: "interface to capture on (any for all)") var interface: String
        @Option(help: "BPF filter for the capture") var filter: String?
        @Option(help: "seconds between comparisons") var interval: Double = 5
        @Option(help: "seconds a divergence must last before it is reported") var grace: Double = 3
        @Option(help: "timeouts within this many seconds are equal") var tolerance: UInt32 = 2
        @Option(help: "classes to leave out, comma-separated") var ignore: String?
        @Flag(help: "also report connections the kernel held when the watch began") var includePreexisting = false
        @Option(help: "serve Prometheus metrics on ADDR:PORT (/metrics)") var metrics: String?
        @Option(name: .shortAndLong, help: "text or json") var output = "text"
        @OptionGroup var model: ModelOptions

        func validate() throws {
            func fail(_ m: String) throws -> Never {
                printError("ctsync watch: \(m)")
                throw ExitCode(2)
            }
            if !["text", "json"].contains(output) { try fail("-o takes text or json, not \(output)") }
            if !(interval > 0 && interval <= 86_400) { try fail("--interval takes seconds between 0 and 86400") }
            if !(grace >= 0 && grace <= 86_400) { try fail("--grace takes seconds between 0 and 86400") }
            for name in (ignore ?? "").split(separator: ",") where DivergenceClass(rawValue: String(name)).map({ DivergenceClass.ignorable.contains($0) }) != true {
                try fail("--ignore: unknown class `\(name)'")
            }
            if let metrics, MetricsServer.parse(metrics) == nil { try fail("--metrics takes ADDR:PORT (an IPv4 or [IPv6] address), not `\(metrics)'") }
        }

        func run() throws {
            let session = try WatchSession(self)
            try session.run()
        }
    }
}

/// One `ctsync watch` run.
final class WatchSession: @unchecked Sendable {
    let command: Ctsync.Watch
    let source: CaptureSource
    var tracker: Tracker
    let seen = ModelObservations()
    var watch: DivergenceWatch
    var options: DiffOptions
    let lock = NSLock()
    var gauges = WatchMetrics.Gauges()
    var preexisting: Set<Tuple> = []
    var server: MetricsServer?
    let flags = WatchFlags()
    let out = OutputSink()

    init(_ command: Ctsync.Watch) throws {
        self.command = command
        do {
            tracker = Tracker(configuration: try command.model.configuration())
        } catch {
            printError("ctsync watch: \(error)")
            throw ExitCode(2)
        }
        watch = DivergenceWatch(grace: UInt64(command.grace * 1e9))
        options = DiffOptions(tolerance: command.tolerance)
        options.ignore = Set((command.ignore ?? "").split(separator: ",").compactMap { DivergenceClass(rawValue: String($0)) })
        do {
            source = try CaptureSource(interface: command.interface, filter: command.filter, snaplen: 65_535, immediate: true,
                                       bufferSize: 64 << 20)
        } catch let e as CaptureError {
            printError("ctsync watch: \(e)")
            throw ExitCode(2)
        }
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// 2026-11-25T07:58:03Z: when a divergence appeared, for people reading a log.
    static func utc(_ ns: UInt64) -> String {
        var t = time_t(ns / 1_000_000_000)
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))Z"
    }


    func run() throws {
        let kernelStart: TableSide
        kernelStart = try TableSides.load("kernel", model: command.model, program: "ctsync watch")
        if !command.includePreexisting { preexisting = Set(kernelStart.entries.map { $0.original.withoutZone }) }
        if let m = command.metrics {
            do { server = try MetricsServer(address: m) { [unowned self] in self.metricsText() } } catch {
                printError("ctsync watch: --metrics \(m): \(error)")
                throw ExitCode(2)
            }
            server?.start()
        }
        startEvents()
        let s = UnsafeSendable(source)
        var handlers: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let h = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            h.setEventHandler { [flags] in flags.stop(); s.value.stop() }
            h.resume()
            handlers.append(h)
        }
        // A comparison is due every interval, and a second after the kernel reported a
        // created or destroyed entry; the timer breaks the capture loop when one is due.
        let timer = DispatchSource.makeTimerSource(queue: .global())
        let intervalNs = UInt64(command.interval * 1e9)
        timer.schedule(deadline: .now(), repeating: .milliseconds(200))
        timer.setEventHandler { [flags] in
            if flags.due(now: WatchSession.now(), interval: intervalNs) { s.value.stop() }
        }
        timer.resume()
        tracker.observer = { [seen] v, p, _, entry in seen.note(v, p, entry) }
        var feeder = CaptureFeeder(tracker: tracker, linkType: source.linkType)
        printError("ctsync watch: watching \(command.interface), \(kernelStart.entries.count) connections already in the kernel"
                   + (command.includePreexisting ? "" : " (left out)"))
        compare(&feeder)
        while true {
            do {
                try source.forEach { f in
                    seen.frames.value += 1
                    feeder.feed(f.data, originalLength: f.originalLength, at: f.timestamp)
                }
            } catch let e as CaptureError {
                printError("ctsync watch: \(e)")
                throw ExitCode(2)
            }
            if flags.stopping { break }
            if flags.due(now: WatchSession.now(), interval: intervalNs) { compare(&feeder) }
        }
        timer.cancel()
        server?.stop()
        _ = handlers
        out.flush()
    }

    /// Compares the model with a fresh read of the kernel and prints what changed.
    func compare(_ feeder: inout CaptureFeeder) {
        let now = WatchSession.now()
        flags.compared(at: now)
        let kernel: TableSide
        do { kernel = try TableSides.load("kernel", model: command.model, program: "ctsync watch") } catch {
            printError("ctsync watch: cannot read the kernel's table; next try in \(command.interval) s")
            return
        }
        let drops = source.statistics()
        var context = SideContext(kind: .model, name: "model")
        context.pickedUp = seen.pickedUp
        context.invalidPackets = seen.invalid
        context.captureGaps = seen.gaps
        context.captureDropped = (drops?.droppedByKernel ?? 0) + (drops?.droppedByInterface ?? 0) > 0
        context.sysctls = feeder.tracker.configuration.sysctls.values
        let at = max(now, feeder.tracker.now)
        var modelSide = TableSide(entries: feeder.tracker.entries(at: at), expectations: feeder.tracker.expectationList(at: at),
                                  context: context)
        var kernelSide = kernel
        if !preexisting.isEmpty {
            modelSide.entries.removeAll { preexisting.contains($0.original.withoutZone) }
            kernelSide.entries.removeAll { preexisting.contains($0.original.withoutZone) }
            // A preexisting connection that ended no longer needs leaving out.
            let live = Set(kernel.entries.map { $0.original.withoutZone })
            preexisting.formIntersection(live)
        }
        let report = TableSides.compare(modelSide, kernelSide, options: options)
        lock.lock()
        let changes = watch.update(report, at: now)
        gauges.modelEntries = modelSide.entries.count
        gauges.kernelEntries = kernel.entries.count
        gauges.capturePackets = seen.frames.value
        gauges.captureDropped = Int((drops?.droppedByKernel ?? 0) + (drops?.droppedByInterface ?? 0))
        gauges.lastComparison = now
        lock.unlock()
        for c in changes { print(c, at: now) }
        out.flush()
    }

    func print(_ c: DivergenceWatch.Change, at now: UInt64) {
        let (sign, d, extra): (String, Divergence, UInt64) = {
            switch c {
            case .appeared(let d, let since): return ("+", d, since)
            case .resolved(let d, let lasted): return ("-", d, lasted)
            }
        }()
        if command.output == "json" {
            var b: [UInt8] = []
            b.append(contentsOf: Array("{\"v\":1,\"kind\":\"\(sign == "+" ? "appeared" : "resolved")\",\"time\":\(now)".utf8))
            b.append(contentsOf: Array((sign == "+" ? ",\"since\":\(extra)" : ",\"lasted_ns\":\(extra)").utf8))
            b.append(contentsOf: Array(",\"divergence\":".utf8))
            b.append(contentsOf: Array(DiffFormat.jsonObject(d).utf8))
            b.append(125)
            out.write(String(decoding: b, as: UTF8.self))
            out.lineDone()
            return
        }
        let time = WatchSession.utc(now)
        var line = "\(time) \(sign) [\(d.classes.map(\.rawValue).joined(separator: ","))] "
        line += DiffFormat.oneLine(d)
        line += sign == "+" ? " — \(d.cause.text)" : " (lasted \(extra / 1_000_000_000) s)"
        out.write(line)
        out.lineDone()
    }

    func startEvents() {
        let flags = self.flags
        let thread = Thread { [weak self] in
            guard let stream = try? EventStream(mask: [.new, .destroy], bufferSize: 4 << 20) else { return }
            while !flags.stopping {
                guard let e = try? stream.next(timeoutMilliseconds: 500) else { continue }
                guard let self else { return }
                self.lock.lock()
                self.gauges.kernelEvents += 1
                if case .gap = e { self.gauges.kernelEventGaps += 1 }
                self.lock.unlock()
                flags.kernelChanged()
            }
        }
        thread.start()
    }

    func metricsText() -> String {
        lock.lock(); defer { lock.unlock() }
        return WatchMetrics.render(watch, gauges)
    }
}

/// When the next comparison is due, and whether to stop; shared with the timer,
/// the event thread and the signal handlers.
final class WatchFlags: @unchecked Sendable {
    private let lock = NSLock()
    private var last: UInt64 = 0
    private var changed = false
    private var stopRequested = false

    var stopping: Bool { lock.lock(); defer { lock.unlock() }; return stopRequested }
    func stop() { lock.lock(); stopRequested = true; lock.unlock() }
    func kernelChanged() { lock.lock(); changed = true; lock.unlock() }
    func compared(at now: UInt64) { lock.lock(); last = now; changed = false; lock.unlock() }

    func due(now: UInt64, interval: UInt64) -> Bool {
        lock.lock(); defer { lock.unlock() }
        let since = now &- last
        return since >= interval || (changed && since >= 1_000_000_000)
    }
}
