import ConntrackCore

/// What can differ between two views of a conntrack table (issue 5: the divergence
/// classes). `onlyInA`/`onlyInB` are whole entries; the rest are fields of a matched pair.
public enum DivergenceClass: String, CaseIterable, Sendable, Comparable {
    case onlyInA = "only-in-a"
    case onlyInB = "only-in-b"
    case zone
    case reply
    case tcpState = "tcp-state"
    case status
    case mark
    case labels
    case helper
    case master
    case counters
    case timeout
    /// An expectation (helper-created) on one side only, or matched with different fields.
    case expectation

    public static func < (a: DivergenceClass, b: DivergenceClass) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// Classes a user may ignore with `--ignore` (entries only on one side cannot be).
    public static let ignorable: [DivergenceClass] = allCases.filter { $0 != .onlyInA && $0 != .onlyInB }
}

/// One divergence: an entry on one side only, or a matched pair with the fields that differ.
public struct Divergence: Sendable, Equatable {
    public var a: ConntrackEntry?
    public var b: ConntrackEntry?
    /// For the `expectation` class: each side's expectation (nil where absent).
    public var expectationA: Expectation?
    public var expectationB: Expectation?
    /// For a pair: every class that differs; for a lone entry: `onlyInA` or `onlyInB`.
    public var classes: [DivergenceClass]
    /// The most probable reason, in words.
    public var cause: Cause

    public init(a: ConntrackEntry?, b: ConntrackEntry?, classes: [DivergenceClass], cause: Cause) {
        self.a = a; self.b = b; self.classes = classes; self.cause = cause
    }

    public init(expectationA: Expectation?, expectationB: Expectation?, cause: Cause) {
        self.expectationA = expectationA; self.expectationB = expectationB; classes = [.expectation]; self.cause = cause
    }

    public var primary: DivergenceClass { classes.first ?? .status }
}

/// A probable cause: a stable code (for JSON and metrics) and an explanation.
public struct Cause: Sendable, Equatable {
    public var code: String
    public var text: String
    public init(_ code: String, _ text: String) { self.code = code; self.text = text }
}

/// Options of a comparison.
public struct DiffOptions: Sendable {
    /// Timeouts within this many seconds are equal (the two sides are read at different instants).
    public var tolerance: UInt32 = 2
    public var ignore: Set<DivergenceClass> = []
    /// Compare counters (off when one side has no accounting).
    public init(tolerance: UInt32 = 2, ignore: Set<DivergenceClass> = []) {
        self.tolerance = tolerance
        self.ignore = ignore
    }
}

/// What is known about a side besides its entries: whether it is a model, and what the
/// model saw, so that causes can be specific.
public struct SideContext: Sendable {
    public enum Kind: String, Sendable { case kernel, model, snapshot, peer }
    public var kind: Kind
    public var name: String
    /// Model only: entries picked up mid-stream (original tuples), and the first packet the
    /// model judged INVALID for each connection (frame number and reason).
    public var pickedUp: Set<Tuple> = []
    public var invalidPackets: [Tuple: (frame: Int, reason: String)] = [:]
    /// Model only: the capture lost packets (libpcap drop counters).
    public var captureDropped = false
    /// Model only: connections with a packet acknowledging data the capture never held (the
    /// capture missed packets of them), by original tuple: the first such frame.
    public var captureGaps: [Tuple: Int] = [:]
    /// The net.netfilter sysctls in force on this side (short names), when known.
    public var sysctls: [String: Int]?
    /// The table was at (or within 5% of) nf_conntrack_max: new connections may have been
    /// refused or early-dropped; `tableCount`/`tableMax` say how full.
    public var tableCount: Int?
    public var tableMax: Int?
    /// Connections the kernel dropped or early-dropped for want of room (its statistics).
    public var tableDrops = 0
    public var tableNearlyFull: Bool {
        if tableDrops > 0 { return true }
        guard let c = tableCount, let m = tableMax, m > 0 else { return false }
        return c * 100 >= m * 95
    }
    public init(kind: Kind, name: String) { self.kind = kind; self.name = name }
}

/// The outcome of a comparison.
public struct DiffReport: Sendable {
    public var divergences: [Divergence]
    public var matched: Int
    public var countA: Int
    public var countB: Int

    public init(divergences: [Divergence], matched: Int, countA: Int, countB: Int) {
        self.divergences = divergences; self.matched = matched; self.countA = countA; self.countB = countB
    }

    /// Divergences by their primary class.
    public var byClass: [(DivergenceClass, Int)] {
        var c: [DivergenceClass: Int] = [:]
        for d in divergences { for k in d.classes { c[k, default: 0] += 1 } }
        return c.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }
}

/// Matches the entries of two sides and classifies every difference (issue 5, scope 1).
public enum Differ {
    /// A side's entries indexed by identity; built ahead (for example on the thread that
    /// read the side) so that a diff only looks up.
    public struct Index: Sendable {
        let byOrig: [EntryKey: Int]
        public init(_ entries: [ConntrackEntry]) {
            var d: [EntryKey: Int] = [:]
            d.reserveCapacity(entries.count)
            for (i, e) in entries.enumerated() { d[EntryKey(zone: e.zone, tuple: e.original)] = i }
            byOrig = d
        }
    }

    /// Matches by (zone, original tuple); entries left over are matched by (zone, reply
    /// tuple), where NAT makes the original ambiguous; then by original tuple in another
    /// zone (a zone difference). What is left is on one side only.
    /// Expectations are compared when both sides give theirs (nil: that side does not know).
    public static func diff(_ a: [ConntrackEntry], _ b: [ConntrackEntry], options: DiffOptions = DiffOptions(),
                            contextA: SideContext = SideContext(kind: .snapshot, name: "a"),
                            contextB: SideContext = SideContext(kind: .snapshot, name: "b"),
                            expectationsA: [Expectation]? = nil, expectationsB: [Expectation]? = nil,
                            indexB: Index? = nil) -> DiffReport {
        let byOrig = (indexB ?? Index(b)).byOrig
        var usedB = [Bool](repeating: false, count: b.count)
        var pairs: [(Int, Int)] = []
        var leftA: [Int] = []
        for (i, e) in a.enumerated() {
            if let j = byOrig[EntryKey(zone: e.zone, tuple: e.original)], !usedB[j] { usedB[j] = true; pairs.append((i, j)) } else { leftA.append(i) }
        }
        if !leftA.isEmpty {
            var byReply: [EntryKey: Int] = [:]
            var byTupleOnly: [EntryKey: Int] = [:]
            for (j, e) in b.enumerated() where !usedB[j] {
                byReply[EntryKey(zone: e.zone, tuple: e.reply)] = j
                byTupleOnly[EntryKey(zone: 0, tuple: e.original)] = j
            }
            var still: [Int] = []
            for i in leftA {
                let e = a[i]
                if let j = byReply[EntryKey(zone: e.zone, tuple: e.reply)], !usedB[j] { usedB[j] = true; pairs.append((i, j)) }
                else if let j = byTupleOnly[EntryKey(zone: 0, tuple: e.original)], !usedB[j] { usedB[j] = true; pairs.append((i, j)) }
                else { still.append(i) }
            }
            leftA = still
        }
        var out: [Divergence] = []
        for (i, j) in pairs {
            let classes = compare(a[i], b[j], options).filter { !options.ignore.contains($0) }
            if classes.isEmpty { continue }
            out.append(Divergence(a: a[i], b: b[j], classes: classes,
                                  cause: Causes.changed(classes, a[i], b[j], contextA, contextB)))
        }
        for i in leftA {
            out.append(Divergence(a: a[i], b: nil, classes: [.onlyInA], cause: Causes.onlyIn(a[i], present: contextA, absent: contextB)))
        }
        for (j, used) in usedB.enumerated() where !used {
            out.append(Divergence(a: nil, b: b[j], classes: [.onlyInB], cause: Causes.onlyIn(b[j], present: contextB, absent: contextA)))
        }
        if let xa = expectationsA, let xb = expectationsB, !options.ignore.contains(.expectation) {
            out += diffExpectations(xa, xb, options: options, contextA: contextA, contextB: contextB)
        }
        return DiffReport(divergences: out, matched: pairs.count, countA: a.count, countB: b.count)
    }

    /// Matches expectations by (zone, expected tuple); a pair differs when its mask, master,
    /// helper, flags, class or NAT differ, or its timeout beyond the tolerance.
    public static func diffExpectations(_ a: [Expectation], _ b: [Expectation], options: DiffOptions,
                                        contextA: SideContext, contextB: SideContext) -> [Divergence] {
        var byTuple: [EntryKey: Int] = [:]
        for (j, x) in b.enumerated() { byTuple[EntryKey(zone: x.zone, tuple: x.tuple)] = j }
        var usedB = [Bool](repeating: false, count: b.count)
        var out: [Divergence] = []
        for x in a {
            guard let j = byTuple[EntryKey(zone: x.zone, tuple: x.tuple)], !usedB[j] else {
                out.append(Divergence(expectationA: x, expectationB: nil, cause: Causes.expectationOnlyIn(x, present: contextA, absent: contextB)))
                continue
            }
            usedB[j] = true
            if let what = expectationDifference(x, b[j], options) {
                out.append(Divergence(expectationA: x, expectationB: b[j], cause: Cause("expectation-fields", "the expectation's \(what) differs")))
            }
        }
        for (j, used) in usedB.enumerated() where !used {
            out.append(Divergence(expectationA: nil, expectationB: b[j], cause: Causes.expectationOnlyIn(b[j], present: contextB, absent: contextA)))
        }
        return out
    }

    /// The first field in which two matched expectations differ, or nil.
    static func expectationDifference(_ x: Expectation, _ y: Expectation, _ o: DiffOptions) -> String? {
        func bare(_ t: Tuple?) -> Tuple? { t?.withoutZone }
        if bare(x.master) != bare(y.master) { return "master" }
        if bare(x.mask) != bare(y.mask) { return "mask" }
        if x.helper != y.helper { return "helper" }
        if (x.flags ?? 0) != (y.flags ?? 0) { return "flags" }
        if (x.expectClass ?? 0) != (y.expectClass ?? 0) { return "class" }
        if bare(x.natTuple) != bare(y.natTuple) || x.natDirection != y.natDirection { return "NAT" }
        if let tx = x.timeout, let ty = y.timeout, (tx > ty ? tx - ty : ty - tx) > o.tolerance { return "timeout" }
        return nil
    }

    /// Status bits that describe the connection (not the kernel's bookkeeping).
    static let comparedStatus: Status = [.expected, .seenReply, .assured, .srcNAT, .dstNAT, .seqAdjust, .fixedTimeout, .helper]

    /// The classes in which two matched entries differ.
    public static func compare(_ x: ConntrackEntry, _ y: ConntrackEntry, _ o: DiffOptions) -> [DivergenceClass] {
        var c: [DivergenceClass] = []
        if (x.zone ?? 0) != (y.zone ?? 0) { c.append(.zone) }
        if x.reply.withoutZone != y.reply.withoutZone { c.append(.reply) }
        if x.tcpState != y.tcpState { c.append(.tcpState) }
        if (x.status ?? []).intersection(comparedStatus) != (y.status ?? []).intersection(comparedStatus) { c.append(.status) }
        if (x.mark ?? 0) != (y.mark ?? 0) { c.append(.mark) }
        if (x.labels ?? Labels()) != (y.labels ?? Labels()) { c.append(.labels) }
        if x.helper != y.helper { c.append(.helper) }
        if x.master != y.master { c.append(.master) }
        if let ox = x.countersOriginal, let oy = y.countersOriginal, let px = x.countersReply, let py = y.countersReply,
           ox != oy || px != py { c.append(.counters) }
        if let tx = x.timeout, let ty = y.timeout, (tx > ty ? tx - ty : ty - tx) > o.tolerance { c.append(.timeout) }
        return c
    }
}
