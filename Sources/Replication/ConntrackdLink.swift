import ConntrackCore
import Foundation
import Logging
import ReplicationProtocol
#if canImport(Glibc)
import Glibc
#endif

/// A conntrackd-compatible sync link: UDP between this node and one conntrackd 1.4.x peer,
/// speaking its version-1 messages (`ConntrackdWire`) in FTFW or NOTRACK mode, both as a
/// sender (bulk on RESYNC, events) and as a receiver (acknowledging, asking for lost
/// messages). Both sides use the same port, as conntrackd's UDP channel does.
///
/// FTFW, as a sender: every message sent is kept until the peer acknowledges it; a NACK
/// puts the messages of its range back in the queue, sent again with new sequence numbers.
/// As a receiver: the last sequence number is tracked, a gap is answered with a NACK of the
/// missing range, and received messages are acknowledged once a second (ALIVE when idle).
/// HELLO is set on what we send until the peer answers HELLO_BACK, and a peer's HELLO is
/// answered with HELLO_BACK, as conntrackd does.
public final class ConntrackdLink: @unchecked Sendable {
    public enum Mode: String, Sendable { case ftfw, notrack }

    public struct Counters: Sendable {
        public var received = 0, sent = 0, malformed = 0, resent = 0, gaps = 0, resyncs = 0
    }

    let fd: Int32
    let peer: sockaddr_in
    let mode: Mode
    let logger: Logger
    let lock = NSLock()
    public private(set) var counters = Counters()
    /// Datagram payload limit: conntrackd fills up to the MTU minus IP and UDP headers.
    let datagramLimit = 1472

    // Sending state.
    var sequence = UInt32(truncatingIfNeeded: Int(Date().timeIntervalSince1970))
    var outgoing: [UInt8] = []
    var helloAcknowledged = false
    var helloBackPending = false
    /// FTFW: sent messages by sequence number, to resend on NACK until acknowledged.
    var resendQueue: [UInt32: Pending] = [:]
    let resendLimit = 262_144

    enum Pending {
        case entry(ConntrackdWire.MessageType, ConntrackEntry)
        case expectation(ConntrackdWire.MessageType, Expectation)
    }

    // Receiving state.
    var expected: UInt32?
    var ackFrom: UInt32?
    var receivedSinceAck = false
    var stopped = false

    public var onEntry: ((EventKind, ConntrackEntry) -> Void)?
    public var onExpectation: ((EventKind, Expectation) -> Void)?
    /// The peer asked for everything (its RESYNC, or its first HELLO).
    public var onResyncRequest: (() -> Void)?
    /// The peer spoke for the first time (or again after a restart: its HELLO).
    public var onPeerHello: (() -> Void)?

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    static func address(_ host: String, _ port: Int) throws -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = UInt16(port).bigEndian
        guard inet_pton(AF_INET, host, &sa.sin_addr) == 1 else { throw Failure(description: "`\(host)' is not an IPv4 address") }
        return sa
    }

    public init(local: (String, Int), peer: (String, Int), mode: Mode, logger: Logger) throws {
        self.mode = mode
        self.logger = logger
        self.peer = try ConntrackdLink.address(peer.0, peer.1)
        var me = try ConntrackdLink.address(local.0, local.1)
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var size: Int32 = 16 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        let rc = withUnsafePointer(to: &me) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "bind \(local.0):\(local.1): \(e)")
        }
    }

    public func start() {
        Thread { [self] in run() }.start()
    }

    public func stop() {
        lock.withLock { stopped = true }
    }

    var isStopped: Bool { lock.withLock { stopped } }

    // MARK: sending

    /// Queues one entry message; it leaves with the next full datagram or `flush`.
    public func send(_ event: EventKind, _ e: ConntrackEntry) {
        lock.withLock { enqueue(.entry(ConntrackdLink.type(event), e)) }
    }

    public func send(_ event: EventKind, _ x: Expectation) {
        let t: ConntrackdWire.MessageType = event == .new ? .expectationNew : event == .update ? .expectationUpdate : .expectationDelete
        lock.withLock { enqueue(.expectation(t, x)) }
    }

    static func type(_ e: EventKind) -> ConntrackdWire.MessageType {
        switch e {
        case .new: return .entryNew
        case .update: return .entryUpdate
        case .destroy: return .entryDelete
        }
    }

    /// Everything, as conntrackd answers a RESYNC: a NEW message per entry.
    public func sendAll(_ entries: [ConntrackEntry], expectations: [Expectation] = []) {
        lock.withLock {
            for e in entries { enqueue(.entry(.entryNew, e)) }
            for x in expectations { enqueue(.expectation(.expectationNew, x)) }
            flushLocked()
        }
    }

    public func flush() { lock.withLock { flushLocked() } }

    /// Asks the peer for its whole table (conntrackd -n).
    public func requestResync() {
        lock.withLock {
            flushLocked()
            sequence &+= 1
            transmit(ConntrackdWire.control(ConntrackdWire.Flags.resync.union(flagsToAdd()), from: 0, to: 0, sequence: sequence))
        }
    }

    /// HELLO until the peer answered; HELLO_BACK once after the peer's HELLO.
    func flagsToAdd() -> ConntrackdWire.Flags {
        var f: ConntrackdWire.Flags = []
        if !helloAcknowledged { f.insert(.hello) }
        if helloBackPending { f.insert(.helloBack); helloBackPending = false }
        return f
    }

    func enqueue(_ p: Pending) {
        sequence &+= 1
        let m: [UInt8]
        switch p {
        case .entry(let t, let e): m = ConntrackdWire.encode(t, e, flags: flagsToAdd(), sequence: sequence)
        case .expectation(let t, let x): m = ConntrackdWire.encode(t, x, flags: flagsToAdd(), sequence: sequence)
        }
        if mode == .ftfw {
            if resendQueue.count >= resendLimit, let oldest = resendQueue.keys.min(by: { ConntrackdLink.before($0, $1) }) {
                resendQueue[oldest] = nil     // as conntrackd: the oldest is dropped when the queue is full
            }
            resendQueue[sequence] = p
        }
        if outgoing.count + m.count > datagramLimit { flushLocked() }
        outgoing += m
        counters.sent += 1
    }

    func flushLocked() {
        guard !outgoing.isEmpty else { return }
        transmit(outgoing)
        outgoing.removeAll(keepingCapacity: true)
    }

    func transmit(_ d: [UInt8]) {
        var to = peer
        _ = d.withUnsafeBytes { b in
            withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, b.baseAddress, b.count, Int32(MSG_NOSIGNAL), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            } }
        }
    }

    /// Serial-number order (RFC 1982): a comes before b.
    static func before(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
    static func inRange(_ s: UInt32, _ from: UInt32, _ to: UInt32) -> Bool { !before(s, from) && !before(to, s) }

    // MARK: receiving

    func run() {
        var buf = [UInt8](repeating: 0, count: 65536)
        var lastTick = Date()
        while !isStopped {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 200) > 0 {
                let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n > 0 { receive(Array(buf[0..<n])) }
            }
            if Date().timeIntervalSince(lastTick) >= 1 {
                lastTick = Date()
                tick()
            }
        }
        close(fd)
    }

    /// Once a second: acknowledge what arrived (FTFW), or say we are alive.
    func tick() {
        lock.withLock {
            flushLocked()
            sequence &+= 1
            if mode == .ftfw, receivedSinceAck, let from = ackFrom, let exp = expected {
                transmit(ConntrackdWire.control(ConntrackdWire.Flags.ack.union(flagsToAdd()), from: from, to: exp &- 1, sequence: sequence))
                ackFrom = exp
                receivedSinceAck = false
            } else {
                transmit(ConntrackdWire.control(ConntrackdWire.Flags.alive.union(flagsToAdd()), sequence: sequence))
            }
        }
    }

    func receive(_ datagram: [UInt8]) {
        let parts: [ArraySlice<UInt8>]
        do { parts = try ConntrackdWire.split(datagram).messages } catch {
            lock.withLock { counters.malformed += 1 }
            logger.warning("conntrackd peer: malformed datagram: \(error)")
            return
        }
        var deliver: [ConntrackdWire.Message] = []
        var resync = false, hello = false
        lock.withLock {
            for part in parts {
                let m: ConntrackdWire.Message
                do { m = try ConntrackdWire.decode(part) } catch {
                    counters.malformed += 1
                    logger.warning("conntrackd peer: message refused: \(error)")
                    continue
                }
                counters.received += 1
                let flags = m.flags
                if flags.contains(.helloBack) { helloAcknowledged = true }
                if flags.contains(.hello) {
                    // The peer (re)started: its sequence starts here; answer HELLO_BACK.
                    helloBackPending = true
                    if expected == nil { hello = true }
                    expected = m.sequence
                    ackFrom = m.sequence
                    resendQueue.removeAll()
                }
                // Sequence check (every message counts, control ones too).
                if let exp = expected, m.sequence != exp {
                    if ConntrackdLink.before(exp, m.sequence) {
                        counters.gaps += 1
                        if mode == .ftfw {
                            sequence &+= 1
                            let ackTo = exp &- 1
                            if let from = ackFrom, !ConntrackdLink.before(ackTo, from) {
                                transmit(ConntrackdWire.control([.ack], from: from, to: ackTo, sequence: sequence))
                                sequence &+= 1
                            }
                            transmit(ConntrackdWire.control([.nack], from: exp, to: m.sequence &- 1, sequence: sequence))
                            ackFrom = m.sequence
                        }
                    } else if case .control = m {
                        // an old control message: harmless
                    } else {
                        continue      // older than expected: FTFW drops it
                    }
                }
                if expected == nil { ackFrom = m.sequence }
                expected = m.sequence &+ 1
                receivedSinceAck = true
                switch m {
                case .control(let f, let from, let to, _):
                    if f.contains(.ack) {
                        for s in resendQueue.keys where ConntrackdLink.inRange(s, from, to) { resendQueue[s] = nil }
                    }
                    if f.contains(.nack) {
                        let again = resendQueue.filter { ConntrackdLink.inRange($0.key, from, to) }.sorted { ConntrackdLink.before($0.key, $1.key) }
                        for (s, p) in again { resendQueue[s] = nil; enqueue(p); counters.resent += 1 }
                        flushLocked()
                    }
                    if f.contains(.resync) { resync = true; counters.resyncs += 1 }
                default:
                    deliver.append(m)
                }
            }
        }
        if hello { onPeerHello?() }
        for m in deliver {
            switch m {
            case .entry(let t, let e, _, _): onEntry?(t == .entryNew ? .new : t == .entryUpdate ? .update : .destroy, e)
            case .expectation(let t, let x, _, _): onExpectation?(t == .expectationNew ? .new : t == .expectationUpdate ? .update : .destroy, x)
            case .control: break
            }
        }
        if resync { onResyncRequest?() }
    }
}
