import ConntrackCore
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Which of the kernel's lists a dump reads.
public enum ConntrackList: String, Sendable, CaseIterable {
    case conntrack, dying, unconfirmed, expect
}

/// Filters the kernel applies during a dump (so unwanted entries never cross
/// netlink): family (4.20+), mark/mask, status/mask (5.15+), zone (6.8+).
public struct KernelFilter: Sendable, Equatable {
    public var family: AddressFamily?
    public var mark: UInt32?
    public var markMask: UInt32 = 0xffff_ffff
    public var status: Status?
    public var statusMask: Status?
    public var zone: UInt16?

    public init(family: AddressFamily? = nil, mark: UInt32? = nil, markMask: UInt32 = 0xffff_ffff,
                status: Status? = nil, statusMask: Status? = nil, zone: UInt16? = nil) {
        self.family = family
        self.mark = mark
        self.markMask = markMask
        self.status = status
        self.statusMask = statusMask
        self.zone = zone
    }
}

/// What a finished dump reports besides its entries.
public struct DumpSummary: Sendable, Equatable {
    /// Entries received from the kernel.
    public var received = 0
    /// The kernel flagged NLM_F_DUMP_INTR: the table changed during the dump,
    /// so an entry may be missing or shown twice.
    public var interrupted = false
}

/// NAT to request when creating an entry: the kernel then computes the reply
/// tuple and sets the SRC_NAT/DST_NAT status bits itself (they cannot be set directly).
public struct NATRequest: Sendable, Equatable {
    public var address: IPAddress
    public var port: UInt16?
    public init(address: IPAddress, port: UInt16? = nil) { self.address = address; self.port = port }
}

/// One write for `ConntrackTable.apply(_:)`.
public enum TableWrite: Sendable {
    /// Create; `replaceExisting` turns EEXIST into an update (NLM_F_REPLACE semantics off EXCL).
    case create(ConntrackEntry, sourceNAT: NATRequest? = nil, destinationNAT: NATRequest? = nil, ignoreExisting: Bool = false)
    case update(ConntrackEntry)
    case delete(Tuple, zone: UInt16?, id: UInt32?)
}

/// Per-CPU conntrack statistics (conntrack -S).
public struct CPUStats: Sendable, Equatable {
    public var cpu: UInt16
    public var values: [(name: String, value: UInt32)]
    public static func == (a: CPUStats, b: CPUStats) -> Bool {
        a.cpu == b.cpu && a.values.map(\.name) == b.values.map(\.name) && a.values.map(\.value) == b.values.map(\.value)
    }
}

/// Tells whether this process runs in the host's (initial) network namespace.
public enum NetworkNamespace {
    /// The inode the kernel gives the initial network namespace (PROC_NET_INIT_INO, fixed since 6.x).
    static let initialInode: UInt = 0xEFFF_FFF9

    /// True when /proc/self/ns/net is PID 1's namespace or carries the initial
    /// namespace's fixed inode; also true when our own namespace cannot be read.
    public static func isInitial() -> Bool {
        var mine = stat(), init1 = stat()
        guard stat("/proc/self/ns/net", &mine) == 0 else { return true }
        if stat("/proc/1/ns/net", &init1) == 0 {
            return mine.st_ino == init1.st_ino && mine.st_dev == init1.st_dev
        }
        return UInt(mine.st_ino) == initialInode
    }
}

/// A client of the kernel's conntrack and expectation tables over ctnetlink,
/// in the current network namespace.
public final class ConntrackTable: @unchecked Sendable {
    let socket: NetlinkSocket
    let allowHostWrites: Bool
    let logger = Logger(label: "ctsync.kernel")
    /// Size of each receive buffer; the kernel fills up to 32 KiB per dump datagram.
    static let receiveSize = 64 * 1024

    /// - Parameter allowHostTableWrites: permit writes in the initial network namespace.
    public init(allowHostTableWrites: Bool = false) throws {
        socket = try NetlinkSocket()
        socket.setReceiveBuffer(8 << 20)
        socket.setSendBuffer(4 << 20)
        allowHostWrites = allowHostTableWrites
    }

    func guardWrite(_ operation: String) throws {
        if !allowHostWrites && NetworkNamespace.isInitial() {
            throw ConntrackError(.hostTableRefused, operation: operation)
        }
    }

    // MARK: Dump

    func dumpRequest(list: ConntrackList, filter: KernelFilter, zeroCounters: Bool) -> [UInt8] {
        var b = MessageBuilder()
        let seq = socket.nextSequence()
        switch list {
        case .conntrack:
            b.begin(subsystem: NL.subsysConntrack, type: zeroCounters ? CtMsg.getCtrZero : CtMsg.get,
                    flags: NL.request | NL.dump, sequence: seq, family: filter.family?.rawValue ?? 0)
            if let m = filter.mark { b.attrBE32(CTA.mark, m); b.attrBE32(CTA.markMask, filter.markMask) }
            if let s = filter.status {
                b.attrBE32(CTA.status, s.rawValue)
                b.attrBE32(CTA.statusMask, (filter.statusMask ?? s).rawValue)
            }
            if let z = filter.zone { b.attrBE16(CTA.zone, z) }
        case .dying:
            b.begin(subsystem: NL.subsysConntrack, type: CtMsg.getDying, flags: NL.request | NL.dump, sequence: seq,
                    family: filter.family?.rawValue ?? 0)
        case .unconfirmed:
            b.begin(subsystem: NL.subsysConntrack, type: CtMsg.getUnconfirmed, flags: NL.request | NL.dump, sequence: seq,
                    family: filter.family?.rawValue ?? 0)
        case .expect:
            b.begin(subsystem: NL.subsysExpect, type: CtMsg.get, flags: NL.request | NL.dump, sequence: seq,
                    family: filter.family?.rawValue ?? 0)
        }
        b.end()
        return b.bytes
    }

    /// Streams every entry of a list through `body`. Memory stays bounded whatever the
    /// table size: receiving runs on a second thread into a fixed pool of buffers,
    /// so the kernel fills the next datagram while this thread decodes and formats.
    public func dump(list: ConntrackList = .conntrack, filter: KernelFilter = KernelFilter(),
                     zeroCounters: Bool = false,
                     body: (ConntrackEntry) throws -> Void) throws -> DumpSummary {
        precondition(list != .expect, "use dumpExpectations")
        return try dumpMessages(request: dumpRequest(list: list, filter: filter, zeroCounters: zeroCounters),
                                operation: "dump \(list.rawValue) table") { family, attrs in
            try body(try CtNetlinkCodec.decodeEntry(family: family, attributes: attrs))
        }
    }

    /// The conntrack table as the kernel sends it: each entry's address family and its
    /// CTA_* attributes, undecoded (valid only during the call). For forwarding entries
    /// without re-encoding them (replication bulk transfers).
    public func dumpRaw(body: (UInt8, UnsafeRawBufferPointer) throws -> Void) throws -> DumpSummary {
        try dumpMessages(request: dumpRequest(list: .conntrack, filter: KernelFilter(), zeroCounters: false),
                         operation: "dump conntrack table", body: body)
    }

    public func dumpExpectations(family: AddressFamily? = nil, body: (Expectation) throws -> Void) throws -> DumpSummary {
        try dumpMessages(request: dumpRequest(list: .expect, filter: KernelFilter(family: family), zeroCounters: false),
                         operation: "dump expect table") { _, attrs in
            try body(try CtNetlinkCodec.decodeExpectation(attributes: attrs))
        }
    }

    /// Sends a dump request and hands each message's family and attributes to `body`.
    func dumpMessages(request: [UInt8], operation: String,
                      body: (UInt8, UnsafeRawBufferPointer) throws -> Void) throws -> DumpSummary {
        try socket.send(request, operation: operation)
        let pipe = ReceivePipeline(socket: socket, bufferSize: ConntrackTable.receiveSize, buffers: 8, operation: operation)
        pipe.start()
        defer { pipe.stop() }
        var summary = DumpSummary()
        defer {
            logger.debug("dump finished", metadata: ["operation": "\(operation)", "entries": "\(summary.received)"])
            if summary.interrupted { logger.notice("dump interrupted (NLM_F_DUMP_INTR)", metadata: ["operation": "\(operation)"]) }
        }
        while true {
            guard let (buffer, length) = try pipe.next() else { break }
            var done = false
            do {
                done = try walk(UnsafeRawBufferPointer(start: buffer, count: length), operation: operation) { m in
                    if m.flags & NL.dumpIntr != 0 { summary.interrupted = true }
                    summary.received += 1
                    try body(m.family, m.attributes)
                }
            } catch {
                pipe.recycle(buffer)
                throw error
            }
            pipe.recycle(buffer)
            if done { break }
        }
        return summary
    }

    /// Walks the netlink messages in one datagram. Returns true at NLMSG_DONE.
    /// Throws the kernel's error for NLMSG_ERROR with a non-zero code.
    @discardableResult
    func walk(_ d: UnsafeRawBufferPointer, operation: String,
              message: (NetlinkMessage) throws -> Void) throws -> Bool {
        var done = false
        try forEachMessage(in: d, operation: operation) { m in
            switch m.type {
            case NL.done:
                done = true
            case NL.error:
                guard let code = m.errorCode else {
                    throw ConntrackError(.malformed("short error message"), operation: operation)
                }
                if code != 0 { throw ConntrackError(.system(-code), operation: operation) }
                done = true
            case NL.noop, NL.overrun:
                return true
            default:
                guard m.payload.count >= NL.nfgenSize else {
                    throw ConntrackError(.malformed("message without nfgenmsg"), operation: operation)
                }
                let p = m.payload
                try message(NetlinkMessage(type: m.type, flags: m.flags, family: p[0],
                                           resID: UInt16(p[2]) << 8 | UInt16(p[3]),
                                           attributes: UnsafeRawBufferPointer(rebasing: p[NL.nfgenSize...])))
            }
            return !done
        }
        return done
    }

    // MARK: Single requests

    /// Sends one request and collects the reply messages up to the ack.
    func request(_ bytes: [UInt8], operation: String, reply: ((UInt8, UnsafeRawBufferPointer) throws -> Void)? = nil) throws {
        try socket.send(bytes, operation: operation)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: ConntrackTable.receiveSize, alignment: 8)
        defer { buf.deallocate() }
        while true {
            let n = try socket.receive(into: buf, operation: operation)
            let done = try walk(UnsafeRawBufferPointer(rebasing: buf[0..<n]), operation: operation) { m in
                try reply?(m.family, m.attributes)
            }
            if done { return }
        }
    }

    /// Reads one entry by its original tuple (conntrack -G).
    public func get(_ tuple: Tuple, zone: UInt16? = nil) throws -> ConntrackEntry {
        var b = MessageBuilder()
        b.begin(subsystem: NL.subsysConntrack, type: CtMsg.get, flags: NL.request | NL.ack,
                sequence: socket.nextSequence(), family: tuple.family.rawValue)
        CtNetlinkCodec.encodeTuple(tuple, as: CTA.tupleOrig, into: &b)
        if let zone { b.attrBE16(CTA.zone, zone) }
        b.end()
        var found: ConntrackEntry?
        try request(b.bytes, operation: "get entry") { family, attrs in
            found = try CtNetlinkCodec.decodeEntry(family: family, attributes: attrs)
        }
        guard let found else { throw ConntrackError(.system(ENOENT), operation: "get entry") }
        return found
    }

    /// Number of entries and the table's maximum (IPCTNL_MSG_CT_GET_STATS).
    public func count() throws -> (entries: UInt32, max: UInt32?) {
        var b = MessageBuilder()
        b.begin(subsystem: NL.subsysConntrack, type: CtMsg.getStats, flags: NL.request | NL.ack,
                sequence: socket.nextSequence(), family: 0)
        b.end()
        var entries: UInt32?, maxEntries: UInt32?
        try request(b.bytes, operation: "count entries") { _, attrs in
            var it = AttributeIterator(attrs)
            while let (t, p) = it.next() {
                if t == 1 { entries = p.be32() }
                if t == 2 { maxEntries = p.be32() }
            }
        }
        guard let entries else { throw ConntrackError(.malformed("no entry count in reply"), operation: "count entries") }
        return (entries, maxEntries)
    }

    static let cpuStatNames: [UInt16: String] = [
        1: "searched", 2: "found", 3: "new", 4: "invalid", 5: "ignore", 6: "delete", 7: "delete_list",
        8: "insert", 9: "insert_failed", 10: "drop", 11: "early_drop", 12: "error", 13: "search_restart",
        14: "clash_resolve", 15: "chaintoolong",
    ]
    static let expectStatNames: [UInt16: String] = [1: "expect_new", 2: "expect_create", 3: "expect_delete"]

    /// Per-CPU statistics of the conntrack or expectation subsystem (conntrack -S).
    public func cpuStats(expectations: Bool = false) throws -> [CPUStats] {
        var b = MessageBuilder()
        b.begin(subsystem: expectations ? NL.subsysExpect : NL.subsysConntrack,
                type: expectations ? CtMsg.expGetStatsCPU : CtMsg.getStatsCPU,
                flags: NL.request | NL.dump, sequence: socket.nextSequence(), family: 0)
        b.end()
        var result: [CPUStats] = []
        let names = expectations ? ConntrackTable.expectStatNames : ConntrackTable.cpuStatNames
        try socket.send(b.bytes, operation: "read cpu stats")
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: ConntrackTable.receiveSize, alignment: 8)
        defer { buf.deallocate() }
        var done = false
        while !done {
            let n = try socket.receive(into: buf, operation: "read cpu stats")
            let d = UnsafeRawBufferPointer(rebasing: buf[0..<n])
            // The CPU number travels in nfgenmsg.res_id.
            done = try walk(d, operation: "read cpu stats") { m in
                let cpu = m.resID
                var values: [(String, UInt32)] = []
                var it = AttributeIterator(m.attributes)
                var byType: [UInt16: UInt32] = [:]
                while let (t, p) = it.next() { if let v = p.be32() { byType[t] = v } }
                for t in byType.keys.sorted() { if let name = names[t] { values.append((name, byType[t]!)) } }
                result.append(CPUStats(cpu: cpu, values: values))
            }
        }
        return result
    }

    // MARK: Writes

    /// Appends one write request to `b` (flags without NLM_F_ACK: errors only).
    func encode(_ w: TableWrite, into b: inout MessageBuilder, sequence: UInt32, ack: Bool) {
        let ackFlag = ack ? NL.ack : 0
        switch w {
        case .create(let e, let snat, let dnat, let ignoreExisting):
            b.begin(subsystem: NL.subsysConntrack, type: CtMsg.new,
                    flags: NL.request | NL.create | (ignoreExisting ? 0 : NL.excl) | ackFlag,
                    sequence: sequence, family: e.family.rawValue)
            CtNetlinkCodec.encodeTuple(e.original, as: CTA.tupleOrig, into: &b)
            CtNetlinkCodec.encodeTuple(snat != nil || dnat != nil ? e.original.inverted() : e.reply, as: CTA.tupleReply, into: &b)
            encodeChangeable(e, into: &b, creating: true)
            if let snat { CtNetlinkCodec.encodeNAT(CTA.natSrc, address: snat.address, port: snat.port, into: &b) }
            if let dnat { CtNetlinkCodec.encodeNAT(CTA.natDst, address: dnat.address, port: dnat.port, into: &b) }
        case .update(let e):
            b.begin(subsystem: NL.subsysConntrack, type: CtMsg.new, flags: NL.request | ackFlag,
                    sequence: sequence, family: e.family.rawValue)
            CtNetlinkCodec.encodeTuple(e.original, as: CTA.tupleOrig, into: &b)
            encodeChangeable(e, into: &b, creating: false)
        case .delete(let t, let zone, let id):
            b.begin(subsystem: NL.subsysConntrack, type: CtMsg.delete, flags: NL.request | ackFlag,
                    sequence: sequence, family: t.family.rawValue)
            CtNetlinkCodec.encodeTuple(t, as: CTA.tupleOrig, into: &b)
            if let zone { b.attrBE16(CTA.zone, zone) }
            if let id { b.attrBE32(CTA.id, id) }
        }
        b.end()
    }

    /// The attributes ctnetlink lets a create or update set.
    func encodeChangeable(_ e: ConntrackEntry, into b: inout MessageBuilder, creating: Bool) {
        if let t = e.timeout { b.attrBE32(CTA.timeout, t) }
        if let s = e.status {
            // The kernel refuses to set these bits from userspace; send only what it accepts.
            let settable = Status(rawValue: s.rawValue & ~(Status.expected.rawValue | Status.confirmed.rawValue | Status.dying.rawValue
                | Status.srcNAT.rawValue | Status.dstNAT.rawValue | Status.srcNATDone.rawValue | Status.dstNATDone.rawValue
                | Status.seqAdjust.rawValue | Status.template.rawValue | Status.natClash.rawValue | Status.offload.rawValue
                | Status.hwOffload.rawValue | Status.helper.rawValue))
            // The kernel compares CONFIRMED too: it is always set on a create or update.
            b.attrBE32(CTA.status, settable.rawValue | Status.confirmed.rawValue)
        }
        if let p = e.protoInfo { CtNetlinkCodec.encodeProtoInfo(p, into: &b) }
        if let m = e.mark { b.attrBE32(CTA.mark, m) }
        if let z = e.zone { b.attrBE16(CTA.zone, z) }
        if let l = e.labels {
            b.attr(CTA.labels, l.wireBytes)
            b.attr(CTA.labelsMask, [UInt8](repeating: 0xff, count: 16))
        }
        if let h = e.helper, creating {
            b.beginNest(CTA.help); b.attrString(CTA.Help.name, h); b.endNest()
        }
        if let s = e.seqAdjOriginal { encodeSeqAdj(CTA.seqAdjOrig, s, into: &b) }
        if let s = e.seqAdjReply { encodeSeqAdj(CTA.seqAdjReply, s, into: &b) }
    }

    func encodeSeqAdj(_ type: UInt16, _ s: SequenceAdjustment, into b: inout MessageBuilder) {
        b.beginNest(type)
        b.attrBE32(CTA.SeqAdj.pos, s.correctionPosition)
        b.attrBE32(CTA.SeqAdj.before, s.offsetBefore)
        b.attrBE32(CTA.SeqAdj.after, s.offsetAfter)
        b.endNest()
    }

    /// Applies writes in netlink batches (see `BatchWriter`). Returns the failures by
    /// index into `writes`; throws only when the socket itself fails.
    public func apply(_ writes: [TableWrite]) throws -> [(index: Int, error: ConntrackError)] {
        let writer = try BatchWriter(table: self)
        for w in writes { try writer.add(w) }
        return try writer.finish()
    }

    /// One write, with its error thrown.
    public func perform(_ w: TableWrite) throws {
        if let f = try apply([w]).first { throw f.error }
    }

    /// Deletes every entry (of one family, or all) or every expectation.
    public func flush(family: AddressFamily? = nil, expectations: Bool = false, filter: KernelFilter = KernelFilter()) throws {
        try guardWrite(expectations ? "flush expect table" : "flush conntrack table")
        var b = MessageBuilder()
        b.begin(subsystem: expectations ? NL.subsysExpect : NL.subsysConntrack, type: CtMsg.delete,
                flags: NL.request | NL.ack, sequence: socket.nextSequence(), family: family?.rawValue ?? 0)
        if !expectations, let m = filter.mark { b.attrBE32(CTA.mark, m); b.attrBE32(CTA.markMask, filter.markMask) }
        b.end()
        try request(b.bytes, operation: expectations ? "flush expect table" : "flush conntrack table")
    }

    /// Creates an expectation (its master must exist; ctnetlink uses the master's helper).
    public func createExpectation(_ x: Expectation) throws {
        try guardWrite("create expectation")
        var b = MessageBuilder()
        b.begin(subsystem: NL.subsysExpect, type: CtMsg.new, flags: NL.request | NL.create | NL.excl | NL.ack,
                sequence: socket.nextSequence(), family: x.tuple.family.rawValue)
        CtNetlinkCodec.encodeTuple(x.master, as: CTA.Expect.master, into: &b)
        CtNetlinkCodec.encodeTuple(x.tuple, as: CTA.Expect.tuple, into: &b)
        CtNetlinkCodec.encodeTuple(x.mask, as: CTA.Expect.mask, into: &b)
        b.attrBE32(CTA.Expect.timeout, x.timeout ?? 0)
        if let z = x.zone { b.attrBE16(CTA.Expect.zone, z) }
        if let f = x.flags { b.attrBE32(CTA.Expect.flags, f) }
        if let h = x.helper { b.attrString(CTA.Expect.helpName, h) }
        if let c = x.expectClass { b.attrBE32(CTA.Expect.expClass, c) }
        b.end()
        try request(b.bytes, operation: "create expectation")
    }

    /// Reads one expectation by its expected tuple.
    public func getExpectation(_ tuple: Tuple) throws -> Expectation {
        var b = MessageBuilder()
        b.begin(subsystem: NL.subsysExpect, type: CtMsg.get, flags: NL.request | NL.ack,
                sequence: socket.nextSequence(), family: tuple.family.rawValue)
        CtNetlinkCodec.encodeTuple(tuple, as: CTA.Expect.master, into: &b)
        b.end()
        var found: Expectation?
        try request(b.bytes, operation: "get expectation") { _, attrs in
            found = try CtNetlinkCodec.decodeExpectation(attributes: attrs)
        }
        guard let found else { throw ConntrackError(.system(ENOENT), operation: "get expectation") }
        return found
    }

    /// Deletes one expectation by its tuple.
    public func deleteExpectation(_ tuple: Tuple) throws {
        try guardWrite("delete expectation")
        var b = MessageBuilder()
        b.begin(subsystem: NL.subsysExpect, type: CtMsg.delete, flags: NL.request | NL.ack,
                sequence: socket.nextSequence(), family: tuple.family.rawValue)
        CtNetlinkCodec.encodeTuple(tuple, as: CTA.Expect.tuple, into: &b)
        b.end()
        try request(b.bytes, operation: "delete expectation")
    }
}

/// One netlink message of a datagram: header fields and the attributes after nfgenmsg.
struct NetlinkMessage {
    var type: UInt16
    var flags: UInt16
    var family: UInt8
    var resID: UInt16
    var attributes: UnsafeRawBufferPointer
}

/// Receives datagrams on a second thread into a fixed pool of buffers, so the
/// kernel builds the next dump datagram while the caller decodes the last one.
final class ReceivePipeline: @unchecked Sendable {
    let socket: NetlinkSocket
    let bufferSize: Int
    let operation: String
    private let cond = NSCondition()
    private var free: [UnsafeMutableRawPointer] = []
    private var full: [(UnsafeMutableRawPointer, Int)] = []
    private var all: [UnsafeMutableRawPointer] = []
    private var failure: Error?
    private var finished = false
    private var stopping = false
    private var thread: Thread?

    init(socket: NetlinkSocket, bufferSize: Int, buffers: Int, operation: String) {
        self.socket = socket
        self.bufferSize = bufferSize
        self.operation = operation
        for _ in 0..<buffers {
            let p = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 8)
            free.append(p); all.append(p)
        }
    }

    deinit { for p in all { p.deallocate() } }

    func start() {
        let t = Thread { [self] in self.run() }
        t.stackSize = 1 << 20
        thread = t
        t.start()
    }

    private func run() {
        while true {
            cond.lock()
            while free.isEmpty && !stopping { cond.wait() }
            if stopping { finished = true; cond.broadcast(); cond.unlock(); return }
            let buf = free.removeLast()
            cond.unlock()
            do {
                let n = try socket.receive(into: UnsafeMutableRawBufferPointer(start: buf, count: bufferSize), operation: operation)
                let end = ReceivePipeline.endsDump(UnsafeRawBufferPointer(start: buf, count: n))
                cond.lock()
                full.append((buf, n))
                if end { finished = true }
                cond.broadcast()
                cond.unlock()
                if end { return }
            } catch {
                cond.lock()
                failure = error
                finished = true
                free.append(buf)
                cond.broadcast()
                cond.unlock()
                return
            }
        }
    }

    /// True when the datagram holds NLMSG_DONE or an error (the dump's end).
    static func endsDump(_ d: UnsafeRawBufferPointer) -> Bool {
        var end = false
        do {
            try forEachMessage(in: d, operation: "dump") { m in
                end = m.type == NL.done || m.type == NL.error
                return !end
            }
        } catch {
            return true   // the consumer's walk reports the bad length
        }
        return end
    }

    /// The next received datagram, or nil after the last one.
    func next() throws -> (UnsafeMutableRawPointer, Int)? {
        cond.lock()
        defer { cond.unlock() }
        while full.isEmpty && !finished { cond.wait() }
        if !full.isEmpty { return full.removeFirst() }
        if let failure { throw failure }
        return nil
    }

    func recycle(_ p: UnsafeMutableRawPointer) {
        cond.lock()
        free.append(p)
        cond.broadcast()
        cond.unlock()
    }

    /// Waits for the receiver thread to leave (it stops at the dump's end).
    func stop() {
        cond.lock()
        stopping = true
        cond.broadcast()
        while !finished { cond.wait() }
        cond.unlock()
    }
}
