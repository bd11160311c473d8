import ConntrackCore
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Which ctnetlink multicast groups to follow.
public struct EventMask: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    // Legacy group bitmask: group N is bit N-1 (NFNLGRP_CONNTRACK_NEW = 1, ...).
    public static let new = EventMask(rawValue: 1 << 0)
    public static let update = EventMask(rawValue: 1 << 1)
    public static let destroy = EventMask(rawValue: 1 << 2)
    public static let expectNew = EventMask(rawValue: 1 << 3)
    public static let expectUpdate = EventMask(rawValue: 1 << 4)
    public static let expectDestroy = EventMask(rawValue: 1 << 5)
    public static let allEntries: EventMask = [.new, .update, .destroy]
    public static let allExpectations: EventMask = [.expectNew, .expectUpdate, .expectDestroy]
}

/// One item of an event stream.
public enum ConntrackEvent: Sendable, Equatable {
    case entry(EventKind, ConntrackEntry)
    case expectation(EventKind, Expectation)
    /// The socket's receive buffer overflowed (ENOBUFS): an unknown number of
    /// events was lost between the previous item and the next one.
    case gap
}

/// Follows the kernel's conntrack events in the current network namespace.
/// An overflow is reported as `.gap` and the stream goes on.
public final class EventStream: @unchecked Sendable {
    let socket: NetlinkSocket
    private let buffer: UnsafeMutableRawBufferPointer
    private var pending: [(event: ConntrackEvent, record: [UInt8]?)] = []
    private var pendingNext = 0
    /// Keep each entry event's netlink attributes (`lastRecord`): for forwarding them as
    /// they came instead of encoding the decoded entry again.
    public var keepsRecords = false
    /// For the entry event `next` returned last, with `keepsRecords`: its address family
    /// byte followed by its CTA_* attributes.
    public private(set) var lastRecord: [UInt8]?
    public private(set) var gaps = 0
    let logger = Logger(label: "ctsync.events")

    /// - Parameter bufferSize: the socket receive buffer in bytes (nil: the system default).
    public init(mask: EventMask, bufferSize: Int? = nil) throws {
        socket = try NetlinkSocket(groups: mask.rawValue)
        if let bufferSize { socket.setReceiveBuffer(bufferSize) }
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 8)
    }

    deinit { buffer.deallocate() }

    public var receiveBufferSize: Int { socket.receiveBufferSize }
    /// Events decoded from the last datagram and not yet returned by `next`.
    public var hasBufferedEvents: Bool { pendingNext < pending.count }
    public var fileDescriptor: Int32 { socket.fd }

    /// Blocks until the next event (or gap). Returns nil when `timeoutMilliseconds`
    /// passes first; a negative timeout waits forever.
    public func next(timeoutMilliseconds: Int32 = -1) throws -> ConntrackEvent? {
        if pendingNext == pending.count { pending.removeAll(keepingCapacity: true); pendingNext = 0 }
        while pending.isEmpty {
            var pfd = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, timeoutMilliseconds)
            if r == 0 { return nil }
            if r < 0 {
                if errno == EINTR { return nil }
                throw ConntrackError(.system(errno), operation: "wait for events")
            }
            let n: Int
            do {
                n = try socket.receive(into: buffer, operation: "receive events")
            } catch let e as ConntrackError where e.errno == ENOBUFS {
                gaps += 1
                logger.warning("event socket overflow (ENOBUFS)", metadata: ["gaps": "\(gaps)", "rcvbuf": "\(socket.receiveBufferSize)"])
                return .gap
            }
            try EventStream.decode(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), keepingRecords: keepsRecords) { pending.append(($0, $1)) }
        }
        let (event, record) = pending[pendingNext]
        pendingNext += 1
        lastRecord = record
        return event
    }

    /// Decodes the event messages of one datagram.
    public static func decode(_ d: UnsafeRawBufferPointer, into out: inout [ConntrackEvent]) throws {
        try decode(d, keepingRecords: false) { e, _ in out.append(e) }
    }

    /// Decodes the event messages of one datagram; with `keepingRecords`, each entry event
    /// comes with its family byte and attributes.
    static func decode(_ d: UnsafeRawBufferPointer, keepingRecords: Bool, _ body: (ConntrackEvent, [UInt8]?) -> Void) throws {
        try forEachMessage(in: d, operation: "decode event") { m in
            guard m.payload.count >= NL.nfgenSize else {
                throw ConntrackError(.malformed("event message without nfgenmsg"), operation: "decode event")
            }
            let subsys = m.type >> 8, msg = m.type & 0xff
            let family = m.payload[0]
            let attrs = UnsafeRawBufferPointer(rebasing: m.payload[NL.nfgenSize...])
            let kind: EventKind
            if msg == CtMsg.delete { kind = .destroy }
            else if m.flags & (NL.create | NL.excl) != 0 { kind = .new }
            else { kind = .update }
            if subsys == NL.subsysConntrack && (msg == CtMsg.new || msg == CtMsg.delete) {
                let e = try CtNetlinkCodec.decodeEntry(family: family, attributes: attrs)
                body(.entry(kind, e), keepingRecords ? [family] + attrs : nil)
            } else if subsys == NL.subsysExpect && (msg == CtMsg.new || msg == CtMsg.delete) {
                body(.expectation(kind, try CtNetlinkCodec.decodeExpectation(attributes: attrs)), nil)
            }
            return true
        }
    }
}
