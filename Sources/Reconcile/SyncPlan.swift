import ConntrackCore

/// One step that makes the target's table more like the source's (issue 5, `ctsync sync`).
public enum SyncAction: Sendable, Equatable {
    /// Create the source's entry in the target (missing there).
    case create(ConntrackEntry)
    /// Delete the target's entry (stale: the source does not have it).
    case delete(ConntrackEntry)
    /// Change the target's entry to the source's mark, labels, timeout, settable status
    /// bits and TCP state; `classes` says what differed.
    case update(ConntrackEntry, classes: [DivergenceClass])
    /// Delete and create again: what differs can only be set when an entry is created
    /// (the reply tuple under NAT, the zone, the helper).
    case recreate(old: ConntrackEntry, new: ConntrackEntry, classes: [DivergenceClass])
    /// Not repairable over ctnetlink, with the reason.
    case cannot(ConntrackEntry, classes: [DivergenceClass], reason: String)
    /// Create the source's expectation in the target (its master must exist there with a helper).
    case createExpectation(Expectation)
    /// Delete the target's expectation.
    case deleteExpectation(Expectation)

    public var verb: String {
        switch self {
        case .create: return "create"
        case .delete: return "delete"
        case .update: return "update"
        case .recreate: return "recreate"
        case .cannot: return "cannot"
        case .createExpectation: return "create-expect"
        case .deleteExpectation: return "delete-expect"
        }
    }
}

/// Which divergences a plan repairs (`--only`).
public enum SyncScope: String, CaseIterable, Sendable {
    /// Entries missing in the target.
    case missing
    /// Entries the target has and the source does not.
    case stale
    /// Entries on both sides that differ.
    case changed
}

/// Turns a diff (a = source, b = target) into the writes that repair it.
public enum SyncPlanner {
    /// Status bits ctnetlink refuses to set or that only follow from other attributes.
    static let unsettable: Status = [.expected, .srcNAT, .dstNAT, .seqAdjust, .helper, .srcNATDone, .dstNATDone]

    public static func plan(_ report: DiffReport, scopes: Set<SyncScope> = Set(SyncScope.allCases)) -> [SyncAction] {
        var out: [SyncAction] = []
        for d in report.divergences {
            if d.classes == [.expectation] {
                switch (d.expectationA, d.expectationB) {
                case (let s?, nil) where scopes.contains(.missing): out.append(.createExpectation(s))
                case (nil, let t?) where scopes.contains(.stale): out.append(.deleteExpectation(t))
                case (let s?, let t?) where scopes.contains(.changed): out += [.deleteExpectation(t), .createExpectation(s)]
                default: break
                }
                continue
            }
            switch (d.a, d.b) {
            case (let s?, nil):
                guard scopes.contains(.missing) else { continue }
                if s.status?.contains(.expected) == true || s.master != nil {
                    out.append(.cannot(s, classes: d.classes, reason: "an expected connection: ctnetlink cannot create its master link (EXPECTED)"))
                } else {
                    out.append(.create(s))
                }
            case (nil, let t?):
                guard scopes.contains(.stale) else { continue }
                out.append(.delete(t))
            case (let s?, let t?):
                guard scopes.contains(.changed) else { continue }
                out.append(contentsOf: repair(source: s, target: t, classes: d.classes))
            default:
                continue
            }
        }
        return out
    }

    static func repair(source s: ConntrackEntry, target t: ConntrackEntry, classes: [DivergenceClass]) -> [SyncAction] {
        if classes.contains(.master) {
            return [.cannot(t, classes: classes, reason: "the master (expectation) differs: ctnetlink cannot set it")]
        }
        let creationOnly: Set<DivergenceClass> = [.reply, .zone, .helper]
        if !creationOnly.isDisjoint(with: classes) {
            if s.status?.contains(.expected) == true {
                return [.cannot(t, classes: classes, reason: "an expected connection cannot be created again (EXPECTED)")]
            }
            return [.recreate(old: t, new: s, classes: classes)]
        }
        var fixable = classes.filter { [.mark, .labels, .timeout, .tcpState, .status].contains($0) }
        var notes: [String] = []
        if classes.contains(.status) {
            let a = (s.status ?? []).subtracting(unsettable), b = (t.status ?? []).subtracting(unsettable)
            if a == b {
                fixable.removeAll { $0 == .status }
                notes.append("status bits EXPECTED, NAT, SEQ_ADJUST and HELPER cannot be set")
            } else if !(b.subtracting(a)).isEmpty {
                notes.append("status bits cannot be cleared, only set")
            }
        }
        if classes.contains(.counters) { notes.append("counters cannot be written") }
        var out: [SyncAction] = []
        if !fixable.isEmpty {
            // Only what differs is written: an update that carried labels into a namespace
            // without the labels extension would fail (ENOSPC), and rewriting the timeout
            // would refresh an entry whose timeout was fine.
            var u = ConntrackEntry(original: t.original, reply: t.reply)
            u.zone = t.zone
            if fixable.contains(.mark) { u.mark = s.mark ?? 0 }
            if fixable.contains(.labels) { u.labels = s.labels ?? Labels() }
            if fixable.contains(.timeout) { u.timeout = s.timeout }
            if fixable.contains(.status) { u.status = (t.status ?? []).union((s.status ?? []).subtracting(unsettable)) }
            if fixable.contains(.tcpState), case .tcp(let si)? = s.protoInfo { u.protoInfo = .tcp(TCPInfo(state: si.state)) }
            out.append(.update(u, classes: fixable))
        }
        if !notes.isEmpty {
            out.append(.cannot(t, classes: classes.filter { !fixable.contains($0) }, reason: notes.joined(separator: "; ")))
        }
        return out
    }
}
