import ConntrackCore
import Foundation
import KernelConntrack
#if canImport(Glibc)
import Glibc
#endif

nonisolated(unsafe) var stopRequested: sig_atomic_t = 0

/// Carries out a parsed conntrack(8) command against the kernel and prints what
/// conntrack 1.4.7 prints. Returns the exit status (0, 1 for failures and for
/// -D/-U/-G/-I that touched nothing, 2 for parameter problems).
struct ConntrackRunner {
    var args: ConntrackArguments
    /// The prefix of stderr messages ("conntrack v1.4.7 (conntrack-tools)" for the drop-in).
    var program: String
    let out = OutputSink()

    func note(_ s: String) { printError("\(program): \(s)") }

    var labelNames: [Int: String]? { LabelMap.load() }

    func textOptions() -> TextFormatOptions {
        var t = args.text
        t.now = UInt64(time(nil))
        if args.outputLabels { t.labelNames = labelNames ?? [:] }
        return t
    }

    func run() -> Int32 {
        do {
            return try execute()
        } catch let p as ParameterProblem {
            out.flush()
            note(p.description)
            return 2
        } catch let o as OtherProblem {
            out.flush()
            note(o.description)
            return 1
        } catch let e as ConntrackError {
            out.flush()
            note(ConntrackRunner.message(e))
            return 1
        } catch {
            out.flush()
            note("\(error)")
            return 1
        }
    }

    /// conntrack's wording for the common kernel errors, with the errno name kept.
    static func message(_ e: ConntrackError) -> String {
        switch e.errno {
        case ENOENT?: return "Operation failed: such conntrack doesn't exist (\(e.operation))"
        case EEXIST?: return "Operation failed: conntrack already exists (\(e.operation))"
        case EPERM?: return "Operation failed: permission denied (\(e.operation))"
        case EINVAL?: return "Operation failed: invalid parameters (\(e.operation))"
        default: return e.description
        }
    }

    func execute() throws -> Int32 {
        if args.table == "expect" {
            switch args.command {
            case .create:
                guard let x = args.expectation() else { throw ParameterProblem("missing expectation tuple or mask") }
                try ConntrackTable(allowHostTableWrites: args.hostTable).createExpectation(x)
                note("1 expectation has been created.")
                return 0
            case .get:
                guard let t = args.originalTuple() else { throw ParameterProblem("missing tuple") }
                let x = try ConntrackTable(allowHostTableWrites: args.hostTable).getExpectation(t)
                writeExpectation(x, event: nil, options: textOptions())
                if args.output == .xml { out.bytes.insert(contentsOf: Array(ExpectationXML.header.utf8), at: 0); out.write(ExpectationXML.footer) }
                out.flush()
                note("1 expectations have been shown.")
                return 0
            default: break
            }
        }
        switch args.command {
        case .version:
            out.write("conntrack v1.4.7 (conntrack-tools) [ctsync]\n"); out.flush(); return 0
        case .help:
            out.write(ConntrackRunner.usage); out.flush(); return 0
        case .list: return try list()
        case .get: return try get()
        case .create, .add: return try create(ignoreExisting: args.command == .add)
        case .update: return try update()
        case .delete: return try delete()
        case .flush: return try flush()
        case .count: return try count()
        case .stats: return try stats()
        case .event: return try events()
        case .load: return try load()
        }
    }

    func kernelFilter() -> KernelFilter {
        var k = KernelFilter(family: args.family)
        if let m = args.mark { k.mark = m; k.markMask = args.markMask ?? 0xffff_ffff }
        if let s = args.status { k.status = s; k.statusMask = s }
        // The kernel filters by zone since 6.8 (zone 0 means "any" there, so it stays in userspace).
        if let z = args.zone, z != 0 { k.zone = z }
        return k
    }

    // MARK: -L

    func list() throws -> Int32 {
        let table = try ConntrackTable(allowHostTableWrites: args.hostTable)
        var counter = 0
        if args.table == "expect" {
            let opts = textOptions()
            _ = try table.dumpExpectations(family: args.family) { x in
                if counter == 0 && args.output == .xml { out.write(ExpectationXML.header) }
                writeExpectation(x, event: nil, options: opts)
                counter += 1
            }
            if counter > 0 && args.output == .xml { out.write(ExpectationXML.footer) }
            out.flush()
            note("\(counter) expectations have been shown.")
            return 0
        }
        let list = ConntrackList(rawValue: args.table) ?? .conntrack
        let opts = textOptions()
        let filter = args.filter
        let lossless = ConntrackSave.Options(lossless: true, labelNames: labelNames)
        var xmlOpen = false
        let summary = try table.dump(list: list, filter: kernelFilter(), zeroCounters: args.options.contains(.zero)) { e in
            guard filter.matches(e) else { return }
            write(e, event: nil, options: opts, save: lossless, xmlOpen: &xmlOpen)
            counter += 1
        }
        if xmlOpen { out.write(ConntrackXML.footer) }
        out.flush()
        if summary.interrupted { note("WARNING: the table changed during the dump (NLM_F_DUMP_INTR); entries may be missing or repeated") }
        note("\(counter) flow entries have been shown.")
        return 0
    }

    func write(_ e: ConntrackEntry, event: EventKind?, options: TextFormatOptions, save: ConntrackSave.Options, xmlOpen: inout Bool) {
        switch args.output {
        case .text: ConntrackText.write(e, event: event, options: options, to: &out.bytes)
        case .json: ConntrackJSON.write(e, event: event, to: &out.bytes)
        case .save: ConntrackSave.write(e, event: event ?? .new, options: save, to: &out.bytes)
        case .xml:
            if !xmlOpen && event == nil { out.write(ConntrackXML.header); xmlOpen = true }
            ConntrackXML.write(e, event: event, now: options.now, to: &out.bytes)
        }
        out.lineDone()
    }

    func writeExpectation(_ x: Expectation, event: EventKind?, options: TextFormatOptions) {
        switch args.output {
        case .json: ConntrackJSON.write(x, event: event, to: &out.bytes)
        case .xml: ExpectationXML.write(x, to: &out.bytes)
        case .text, .save: ConntrackText.write(x, event: event, options: options, to: &out.bytes)
        }
        out.lineDone()
    }

    // MARK: -G

    func get() throws -> Int32 {
        guard let t = args.originalTuple() else { throw ParameterProblem("missing tuple") }
        let table = try ConntrackTable(allowHostTableWrites: args.hostTable)
        let e = try table.get(t, zone: args.zone)
        var xmlOpen = false
        write(e, event: nil, options: textOptions(), save: ConntrackSave.Options(labelNames: labelNames), xmlOpen: &xmlOpen)
        if xmlOpen { out.write(ConntrackXML.footer) }
        out.flush()
        note("1 flow entries have been shown.")
        return 0
    }

    // MARK: -I / -A

    func create(ignoreExisting: Bool) throws -> Int32 {
        guard var e = args.entry(labelNames: labelNames) else { throw ParameterProblem("missing tuple") }
        if e.status == nil { e.status = [] }
        let table = try ConntrackTable(allowHostTableWrites: args.hostTable)
        do {
            try table.perform(.create(e, sourceNAT: args.natForCreate.source, destinationNAT: args.natForCreate.destination, ignoreExisting: ignoreExisting))
        } catch let err as ConntrackError where ignoreExisting && err.errno == EEXIST {
        }
        note("1 flow entries have been created.")
        return 0
    }

    // MARK: -U

    func update() throws -> Int32 {
        let table = try ConntrackTable(allowHostTableWrites: args.hostTable)
        var matches: [ConntrackEntry] = []
        _ = try table.dump(filter: kernelFilterForChanges()) { e in
            if args.filterForChanges.matches(e) { matches.append(e) }
        }
        let names = labelNames
        // Each write carries only the tuple, the zone and what changes; `after` is what
        // the entry looks like once the kernel applied it, for printing.
        var writes: [TableWrite] = [], after: [ConntrackEntry] = []
        for old in matches {
            var change = ConntrackEntry(original: old.original, reply: old.reply)
            change.zone = old.zone
            change.timeout = args.timeout
            if let m = args.mark {
                // -m value/mask on update sets the masked bits only.
                let mask = args.markMask ?? 0xffff_ffff
                change.mark = (old.mark ?? 0) & ~mask | m & mask
            }
            if let s = args.status { change.status = s.union(old.status ?? []) }
            if !args.labelsAdd.isEmpty || args.labelsDel != nil || !args.labels.isEmpty {
                var l = old.labels ?? Labels()
                for n in args.labelsAdd + args.labels { if let b = LabelMap.bit(of: n, in: names) { l.set(b) } }
                if let del = args.labelsDel {
                    if del.isEmpty { l = Labels() }
                    for n in del { if let b = LabelMap.bit(of: n, in: names) { l.clear(b) } }
                }
                change.labels = l
            }
            writes.append(.update(change))
            var merged = old
            merged.timeout = change.timeout ?? old.timeout
            merged.mark = change.mark ?? old.mark
            merged.status = change.status ?? old.status
            merged.labels = change.labels ?? old.labels
            after.append(merged)
        }
        let failures = try table.apply(writes)
        // An entry that expired between the dump and the update is skipped, as conntrack does.
        if let f = failures.first(where: { $0.error.errno != ENOENT }) { throw f.error }
        let failed = Set(failures.map(\.index))
        var xmlOpen = false
        let opts = textOptions()
        for (i, e) in after.enumerated() where !failed.contains(i) {
            write(e, event: nil, options: opts, save: ConntrackSave.Options(labelNames: names), xmlOpen: &xmlOpen)
        }
        if xmlOpen { out.write(ConntrackXML.footer) }
        out.flush()
        let updated = writes.count - failed.count
        note("\(updated) flow entries have been updated.")
        return updated == 0 ? 1 : 0
    }

    func kernelFilterForChanges() -> KernelFilter {
        // For -U/-D the mark and status select entries, as in conntrack.
        var k = KernelFilter(family: args.family)
        if args.command == .delete, let m = args.mark { k.mark = m; k.markMask = args.markMask ?? 0xffff_ffff }
        return k
    }

    // MARK: -D

    func delete() throws -> Int32 {
        let table = try ConntrackTable(allowHostTableWrites: args.hostTable)
        if args.table == "expect" {
            guard let t = args.originalTuple() else { throw ParameterProblem("missing tuple") }
            try table.deleteExpectation(t)
            note("1 expectations have been deleted.")
            return 0
        }
        var victims: [ConntrackEntry] = []
        let opts = textOptions()
        _ = try table.dump(filter: kernelFilterForChanges()) { e in
            if args.filterForChanges.matches(e) { victims.append(e) }
        }
        let writes = victims.map { TableWrite.delete($0.original, zone: $0.zone, id: $0.id) }
        let failures = try table.apply(writes)
        if let f = failures.first(where: { $0.error.errno != ENOENT }) { throw f.error }
        let failed = Set(failures.map(\.index))
        var xmlOpen = false
        for (i, e) in victims.enumerated() where !failed.contains(i) {
            write(e, event: nil, options: opts, save: ConntrackSave.Options(labelNames: labelNames), xmlOpen: &xmlOpen)
        }
        if xmlOpen { out.write(ConntrackXML.footer) }
        out.flush()
        let deleted = victims.count - failed.count
        note("\(deleted) flow entries have been deleted.")
        return deleted == 0 ? 1 : 0
    }

    // MARK: -F, -C, -S

    func flush() throws -> Int32 {
        let table = try ConntrackTable(allowHostTableWrites: args.hostTable)
        if args.table == "expect" {
            try table.flush(family: args.family, expectations: true)
            note("expectation table has been emptied.")
        } else {
            try table.flush(family: args.family)
            note("connection tracking table has been emptied.")
        }
        return 0
    }

    func count() throws -> Int32 {
        let table = try ConntrackTable(allowHostTableWrites: args.hostTable)
        if args.table == "expect" {
            var n = 0
            _ = try table.dumpExpectations { _ in n += 1 }
            out.write("\(n)\n")
        } else {
            out.write("\(try table.count().entries)\n")
        }
        out.flush()
        return 0
    }

    func stats() throws -> Int32 {
        let table = try ConntrackTable(allowHostTableWrites: args.hostTable)
        let expect = args.table == "expect"
        let perCPU = try table.cpuStats(expectations: expect)
        if args.output == .json {
            // ctsync's own: per-CPU counters and the global entry count and maximum, one object.
            let (entries, max) = try table.count()
            let cpus = perCPU.map { s in "{\"cpu\":\(s.cpu)" + s.values.map { ",\"\($0.name)\":\($0.value)" }.joined() + "}" }
            out.write("{\"v\":1,\"entries\":\(entries)" + (max.map { ",\"max\":\($0)" } ?? "") + ",\"cpus\":[" + cpus.joined(separator: ",") + "]}\n")
            out.flush()
            return 0
        }
        for s in perCPU {
            var line = "cpu=\(s.cpu)"
            while line.count < 8 { line += " " }
            line += "\t"
            for v in s.values { line += "\(v.name)=\(v.value) " }
            out.write(line + (expect ? "" : "\n"))
        }
        out.flush()
        return 0
    }

    // MARK: -E

    func events() throws -> Int32 {
        var mask = args.eventMask ?? .allEntries
        if args.table == "expect" {
            mask = EventMask(rawValue: (args.eventMask ?? .allEntries).rawValue << 3)
        }
        let stream = try EventStream(mask: mask, bufferSize: args.bufferSize)
        signal(SIGINT) { _ in stopRequested = 1 }
        signal(SIGTERM) { _ in stopRequested = 1 }
        let opts = textOptions()
        let save = ConntrackSave.Options(labelNames: labelNames)
        var xmlOpen = false
        var known: [EntryKey: ConntrackEntry] = [:]
        let table = args.resync ? try ConntrackTable(allowHostTableWrites: true) : nil
        if let table {
            _ = try table.dump(filter: KernelFilter(family: args.family)) { e in known[EntryKey(e)] = e }
        }
        var counter = 0
        if args.output == .xml { out.write(ConntrackXML.header); xmlOpen = true }
        while stopRequested == 0 {
            guard let ev = try stream.next(timeoutMilliseconds: 250) else { out.flush(); continue }
            switch ev {
            case .entry(let kind, let e):
                if let _ = table {
                    if kind == .destroy { known[EntryKey(e)] = nil } else { known[EntryKey(e), default: e] = e }
                }
                guard args.filter.matches(e) else { continue }
                write(e, event: kind, options: opts, save: save, xmlOpen: &xmlOpen)
                counter += 1
            case .expectation(let kind, let x):
                writeExpectation(x, event: kind, options: opts)
                counter += 1
            case .gap:
                out.flush()
                if args.output == .json { out.write("{\"v\":1,\"gap\":true}\n") }
                note("WARNING: event overflow (ENOBUFS): an unknown number of events was lost")
                if let table {
                    // Re-dump and emit what changed while events were lost.
                    var fresh: [EntryKey: ConntrackEntry] = [:]
                    _ = try table.dump(filter: KernelFilter(family: args.family)) { e in fresh[EntryKey(e)] = e }
                    for (k, e) in fresh where args.filter.matches(e) {
                        if let old = known[k] {
                            if !old.sameState(as: e) { write(e, event: .update, options: opts, save: save, xmlOpen: &xmlOpen) }
                        } else { write(e, event: .new, options: opts, save: save, xmlOpen: &xmlOpen) }
                    }
                    for (k, e) in known where fresh[k] == nil && args.filter.matches(e) {
                        write(e, event: .destroy, options: opts, save: save, xmlOpen: &xmlOpen)
                    }
                    known = fresh
                    note("resynchronised: \(fresh.count) entries re-read")
                }
            }
            // One write per datagram: readers see events as they come, bursts stay cheap.
            if !stream.hasBufferedEvents { out.flush() }
        }
        if xmlOpen { out.write(ConntrackXML.footer) }
        out.flush()
        note("\(counter) flow events have been shown.")
        return 0
    }

    // MARK: -R

    /// Loads `save` lines: creates go to the kernel in one batched write.
    func load() throws -> Int32 {
        let started = DispatchTime.now()
        guard let path = args.loadFile else { throw ParameterProblem("-R needs a file name or -") }
        let data: Data
        if path == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let d = FileManager.default.contents(atPath: path) else {
                throw ParameterProblem("cannot read `\(path)'")
            }
            data = d
        }
        let names = labelNames
        let all = [UInt8](data)
        let lines = all.split(separator: 10, omittingEmptySubsequences: true)
        // Pass 1 checks every line, so a bad line anywhere changes nothing in the kernel.
        // The fast reader runs on every core; lines it does not take go to the full parser.
        let cores = max(1, min(ProcessInfo.processInfo.activeProcessorCount, lines.count / 50_000))
        let slow = SlowLines(count: cores)
        DispatchQueue.concurrentPerform(iterations: cores) { k in
            let lo = lines.count * k / cores, hi = lines.count * (k + 1) / cores
            var mine: [Int] = []
            for n in lo..<hi where SaveLine.parse(lines[n]) == nil { mine.append(n) }
            slow.set(k, mine)
        }
        for n in slow.all { _ = try slowLine(lines[n], lineNo: n + 1, names: names) }
        // Pass 2 parses again and streams: encoding overlaps with the kernel inserting.
        let table = try ConntrackTable(allowHostTableWrites: args.hostTable)
        let parsed = DispatchTime.now()
        let writer = try BatchWriter(table: table)
        var isAdd: [Bool] = []
        isAdd.reserveCapacity(lines.count)
        for (n, bytes) in lines.enumerated() {
            let w: TableWrite
            if let fast = SaveLine.parse(bytes) {
                let e = fast.entry
                switch fast.command {
                case .create, .add:
                    w = .create(e, sourceNAT: fast.sourceNAT.map { NATRequest(address: $0.address, port: $0.port) },
                                destinationNAT: fast.destinationNAT.map { NATRequest(address: $0.address, port: $0.port) },
                                ignoreExisting: fast.command == .add)
                case .update: w = .update(e)
                case .delete: w = .delete(e.original, zone: e.zone, id: nil)
                }
            } else {
                guard let slow = try slowLine(bytes, lineNo: n + 1, names: names) else { continue }
                w = slow
            }
            if case .create(_, _, _, let add) = w { isAdd.append(add) } else { isAdd.append(false) }
            try writer.add(w)
        }
        let failures = try writer.finish()
        if ProcessInfo.processInfo.environment["CTSYNC_TIMING"] != nil {
            let ms = { (a: DispatchTime, b: DispatchTime) in Double(b.uptimeNanoseconds - a.uptimeNanoseconds) / 1e6 }
            note("timing: check \(ms(started, parsed)) ms, parse and write \(ms(parsed, DispatchTime.now())) ms")
        }
        var hard = 0
        for f in failures {
            if isAdd[f.index] && f.error.errno == EEXIST { continue }
            hard += 1
            note("entry \(f.index + 1): \(ConntrackRunner.message(f.error))")
        }
        note("\(isAdd.count - hard) flow entries have been loaded.")
        return hard == 0 ? 0 : 1
    }

    /// A load-file line the fast reader did not take: conntrack's full parser, with
    /// the line number in its error. Nil for blank and comment lines.
    func slowLine(_ bytes: ArraySlice<UInt8>, lineNo: Int, names: [Int: String]?) throws -> TableWrite? {
        let line = String(decoding: bytes, as: UTF8.self)
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
        if words.isEmpty || words[0].hasPrefix("#") { return nil }
        guard ["-A", "-I", "-U", "-D", "--add", "--create", "--update", "--delete"].contains(words[0]) else {
            throw ParameterProblem("line \(lineNo): only -I, -A, -U and -D are allowed in a load file")
        }
        let a: ConntrackArguments
        do { a = try ConntrackArguments.parse(words, labelNames: { names }) }
        catch let p as ParameterProblem { throw ParameterProblem("line \(lineNo): \(p.description)") }
        switch a.command {
        case .create, .add:
            guard var e = a.entry(labelNames: names) else { throw ParameterProblem("line \(lineNo): missing tuple") }
            if e.status == nil { e.status = [] }
            return .create(e, sourceNAT: a.natForCreate.source, destinationNAT: a.natForCreate.destination, ignoreExisting: a.command == .add)
        case .update:
            guard let e = a.entry(labelNames: names) else { throw ParameterProblem("line \(lineNo): missing tuple") }
            return .update(e)
        case .delete:
            guard let t = a.originalTuple() else { throw ParameterProblem("line \(lineNo): missing tuple") }
            return .delete(t, zone: a.zone, id: nil)
        default:
            throw ParameterProblem("line \(lineNo): only -I, -A, -U and -D are allowed in a load file")
        }
    }

    static let usage = """
    Command line interface for the connection tracking system (ctsync drop-in for conntrack 1.4.7)
    Usage: ctsync conntrack [commands] [options]

    Commands:
      -L [table] [options]\t\tList conntrack or expectation table
      -G [table] parameters\t\tGet conntrack or expectation
      -D [table] parameters\t\tDelete conntrack or expectation
      -I [table] parameters\t\tCreate a conntrack or expectation
      -U [table] parameters\t\tUpdate a conntrack
      -E [table] [options]\t\tShow events
      -F [table]\t\t\tFlush table
      -C [table]\t\t\tShow counter
      -S\t\t\t\tShow statistics
      -A [table] parameters\t\tAdd a conntrack (no error if it exists)
      -R FILE|-\t\t\tLoad `-o save` lines in one netlink batch

    Tables: conntrack, expect, dying, unconfirmed
    Options: -s -d -r -q ADDR[/LEN], -p PROTO, --sport --dport --reply-port-src --reply-port-dst,
      --state, --icmp-type/--icmp-code/--icmp-id, --srckey/--dstkey, -t TIMEOUT, -u STATUS,
      -m MARK[/MASK], -c SECMARK, -w ZONE, --orig-zone, --reply-zone, -f ipv4|ipv6,
      -n/-g/-j [IP[:PORT]], -l/--label-add/--label-del LABELS, -e EVENTS, -b BYTES, -z,
      -o extended,xml,save,json,id,ktimestamp,labels, --host-table, --resync

    """
}

/// Line numbers the fast reader left to the full parser, per worker.
final class SlowLines: @unchecked Sendable {
    private let lock = NSLock()
    private var parts: [[Int]]
    init(count: Int) { parts = Array(repeating: [], count: count) }
    func set(_ k: Int, _ v: [Int]) { lock.lock(); parts[k] = v; lock.unlock() }
    var all: [Int] { parts.flatMap { $0 } }
}

/// How entries are matched across dumps: zone plus original tuple.
extension ConntrackEntry {
    /// Equal in everything but the fields that move by themselves (timeout, counters, use).
    func sameState(as o: ConntrackEntry) -> Bool {
        var a = self, b = o
        a.timeout = nil; b.timeout = nil
        a.countersOriginal = nil; b.countersOriginal = nil
        a.countersReply = nil; b.countersReply = nil
        a.use = nil; b.use = nil
        return a == b
    }
}

extension ConntrackArguments {
    /// For -U and -D: the tuple options select entries; mark/status/timeout are the change (-U).
    var filterForChanges: EntryFilter {
        var f = filter
        if command == .update { f.mark = nil; f.status = nil; f.labels = nil }
        return f
    }
}
