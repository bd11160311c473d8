import ConntrackCore

/// Divergences followed over time (`ctsync watch`): a divergence is reported once it has
/// lasted the grace period (a packet in flight between the capture and the kernel makes
/// short-lived differences that are not alarms), and reported again when it ends.
/// Pure: the caller passes each comparison and the time it was made.
public struct DivergenceWatch: Sendable {
    /// A change worth printing.
    public enum Change: Sendable, Equatable {
        /// Lasted the grace period; `since` is when it was first seen.
        case appeared(Divergence, since: UInt64)
        /// Gone after having been reported; `lasted` in nanoseconds.
        case resolved(Divergence, lasted: UInt64)
    }

    /// Nanoseconds a divergence must last before it is reported.
    public var grace: UInt64
    struct Tracked: Sendable {
        var divergence: Divergence
        var since: UInt64
        var reported: Bool
    }
    var tracked: [String: Tracked] = [:]
    public private(set) var appearedTotal = 0
    public private(set) var resolvedTotal = 0
    public private(set) var comparisons = 0

    public init(grace: UInt64) { self.grace = grace }

    /// Identity of a divergence across comparisons: its classes and the connection (or
    /// expectation) it is about, not fields that change with every packet.
    static func identity(_ d: Divergence) -> String {
        var s = d.classes.map(\.rawValue).joined(separator: ",")
        if let e = d.a ?? d.b { s += "|\(e.zone ?? 0)|\(e.original.withoutZone)" }
        if let x = d.expectationA ?? d.expectationB { s += "|x|\(x.zone ?? 0)|\(x.tuple)" }
        return s
    }

    /// Takes one comparison made at `now`; returns what appeared and what was resolved.
    public mutating func update(_ report: DiffReport, at now: UInt64) -> [Change] {
        comparisons += 1
        var seen = Set<String>()
        var changes: [Change] = []
        for d in report.divergences {
            let id = DivergenceWatch.identity(d)
            seen.insert(id)
            var t = tracked[id] ?? Tracked(divergence: d, since: now, reported: false)
            t.divergence = d
            if !t.reported && now &- t.since >= grace {
                t.reported = true
                appearedTotal += 1
                changes.append(.appeared(d, since: t.since))
            }
            tracked[id] = t
        }
        for (id, t) in tracked where !seen.contains(id) {
            tracked[id] = nil
            if t.reported {
                resolvedTotal += 1
                changes.append(.resolved(t.divergence, lasted: now &- t.since))
            }
        }
        return changes
    }

    /// Reported divergences now present, by class (a divergence counts in each of its classes).
    public var currentByClass: [DivergenceClass: Int] {
        var c: [DivergenceClass: Int] = [:]
        for t in tracked.values where t.reported { for k in t.divergence.classes { c[k, default: 0] += 1 } }
        return c
    }

    /// Divergences seen but still inside the grace period.
    public var pending: Int { tracked.values.filter { !$0.reported }.count }
}

/// Prometheus text exposition (version 0.0.4) of a watch.
public enum WatchMetrics {
    public struct Gauges: Sendable {
        public var modelEntries = 0
        public var kernelEntries = 0
        public var capturePackets = 0
        public var captureDropped = 0
        public var kernelEvents = 0
        public var kernelEventGaps = 0
        public var lastComparison: UInt64 = 0
        public init() {}
    }

    public static func render(_ w: DivergenceWatch, _ g: Gauges) -> String {
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, String)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, value) in samples { out += "\(name)\(labels) \(value)\n" }
        }
        let current = w.currentByClass
        metric("ctsync_divergences", "gauge", "Divergences between the model and the kernel that outlasted the grace period, by class.",
               DivergenceClass.allCases.map { ("{class=\"\($0.rawValue)\"}", "\(current[$0] ?? 0)") })
        metric("ctsync_divergences_pending", "gauge", "Divergences seen but still within the grace period.", [("", "\(w.pending)")])
        metric("ctsync_divergences_appeared_total", "counter", "Divergences reported since start.", [("", "\(w.appearedTotal)")])
        metric("ctsync_divergences_resolved_total", "counter", "Reported divergences that ended since start.", [("", "\(w.resolvedTotal)")])
        metric("ctsync_comparisons_total", "counter", "Comparisons of the model with the kernel.", [("", "\(w.comparisons)")])
        metric("ctsync_model_entries", "gauge", "Entries in the model at the last comparison.", [("", "\(g.modelEntries)")])
        metric("ctsync_kernel_entries", "gauge", "Entries in the kernel at the last comparison.", [("", "\(g.kernelEntries)")])
        metric("ctsync_capture_packets_total", "counter", "Frames read from the capture.", [("", "\(g.capturePackets)")])
        metric("ctsync_capture_dropped_total", "counter", "Packets the capture dropped (libpcap).", [("", "\(g.captureDropped)")])
        metric("ctsync_kernel_events_total", "counter", "ctnetlink events received.", [("", "\(g.kernelEvents)")])
        metric("ctsync_kernel_event_overflows_total", "counter", "Times the event socket overflowed (ENOBUFS).", [("", "\(g.kernelEventGaps)")])
        metric("ctsync_last_comparison_timestamp_seconds", "gauge", "When the last comparison was made (Unix time).",
               [("", String(format3: Double(g.lastComparison) / 1e9))])
        return out
    }
}

extension String {
    /// A decimal with three fractional digits, without Foundation.
    init(format3 v: Double) {
        let ms = Int64((v * 1000).rounded())
        let frac = String(ms % 1000)
        self = "\(ms / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac
    }
}
