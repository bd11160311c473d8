import CConntrackShim
import CNetfilterConntrack
#if canImport(Glibc)
import Glibc
#endif

/// An error from a ctnetlink operation, with the errno the kernel (or a
/// syscall) returned and the operation that failed.
public struct ConntrackError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// A syscall or the kernel returned this errno.
        case system(Int32)
        /// The kernel's reply could not be parsed (names what was wrong).
        case malformed(String)
        /// Refused by ctsync itself: a write to the host's own table without --host-table.
        case hostTableRefused
        /// The dump was interrupted (NLM_F_DUMP_INTR) more times than allowed.
        case dumpInterrupted
    }

    public var kind: Kind
    public var operation: String

    public init(_ kind: Kind, operation: String) {
        self.kind = kind
        self.operation = operation
    }

    public var errno: Int32? { if case .system(let e) = kind { return e }; return nil }

    public var description: String {
        switch kind {
        case .system(let e):
            return "\(operation): \(String(cString: strerror(e))) (\(ConntrackError.errnoName(e)))"
        case .malformed(let why):
            return "\(operation): malformed netlink reply: \(why)"
        case .hostTableRefused:
            return "\(operation): refusing to change the host's conntrack table (initial network namespace); pass --host-table to allow it"
        case .dumpInterrupted:
            return "\(operation): dump interrupted by concurrent table changes (NLM_F_DUMP_INTR) on every retry"
        }
    }

    static func errnoName(_ e: Int32) -> String {
        let names: [Int32: String] = [
            EPERM: "EPERM", ENOENT: "ENOENT", EEXIST: "EEXIST", EINVAL: "EINVAL", EBUSY: "EBUSY",
            ENOBUFS: "ENOBUFS", ENOMEM: "ENOMEM", EOPNOTSUPP: "EOPNOTSUPP", EAGAIN: "EAGAIN",
            EACCES: "EACCES", ENOSPC: "ENOSPC", EMSGSIZE: "EMSGSIZE", EPROTONOSUPPORT: "EPROTONOSUPPORT",
            ETIME: "ETIME", EAFNOSUPPORT: "EAFNOSUPPORT", EINTR: "EINTR",
        ]
        return names[e] ?? "errno \(e)"
    }
}

/// Netlink header constants (linux/netlink.h, linux/netfilter/nfnetlink*.h).
enum NL {
    static let request: UInt16 = 0x1
    static let multi: UInt16 = 0x2
    static let ack: UInt16 = 0x4
    static let dumpIntr: UInt16 = 0x10
    static let dump: UInt16 = 0x300
    static let replace: UInt16 = 0x100
    static let excl: UInt16 = 0x200
    static let create: UInt16 = 0x400

    static let noop: UInt16 = 1
    static let error: UInt16 = 2
    static let done: UInt16 = 3
    static let overrun: UInt16 = 4

    static let headerSize = 16
    static let nfgenSize = 4

    static let subsysConntrack: UInt16 = 1
    static let subsysExpect: UInt16 = 2
}

/// ctnetlink message types (enum cntl_msg_types / ctnl_exp_msg_types).
enum CtMsg {
    static let new: UInt16 = 0
    static let get: UInt16 = 1
    static let delete: UInt16 = 2
    static let getCtrZero: UInt16 = 3
    static let getStatsCPU: UInt16 = 4
    static let getStats: UInt16 = 5
    static let getDying: UInt16 = 6
    static let getUnconfirmed: UInt16 = 7
    static let expGetStatsCPU: UInt16 = 3
}

/// A NETLINK_NETFILTER socket opened through libmnl, in the caller's network namespace.
public final class NetlinkSocket: @unchecked Sendable {
    let handle: OpaquePointer
    public let fd: Int32
    public let portID: UInt32
    private var sequence: UInt32

    /// Opens and binds a socket; `groups` is the legacy multicast group bitmask (0 for requests).
    public init(groups: UInt32 = 0) throws {
        guard let h = mnl_socket_open2(NETLINK_NETFILTER, Int32(SOCK_CLOEXEC.rawValue)) else {
            throw ConntrackError(.system(Glibc.errno), operation: "open netlink socket")
        }
        if mnl_socket_bind(h, groups, pid_t(MNL_SOCKET_AUTOPID)) < 0 {
            let e = Glibc.errno
            mnl_socket_close(h)
            throw ConntrackError(.system(e), operation: "bind netlink socket")
        }
        handle = h
        fd = mnl_socket_get_fd(h)
        portID = mnl_socket_get_portid(h)
        sequence = UInt32(truncatingIfNeeded: time(nil))
        var one: Int32 = 1
        // Errors carry only the failed message's header; we never need the payload back.
        _ = setsockopt(fd, CConntrackShim_SOL_NETLINK, CConntrackShim_NETLINK_CAP_ACK, &one, 4)
        _ = setsockopt(fd, CConntrackShim_SOL_NETLINK, CConntrackShim_NETLINK_EXT_ACK, &one, 4)
    }

    deinit { mnl_socket_close(handle) }

    public func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    /// Sets the receive buffer, forcing past rmem_max when allowed (root).
    public func setReceiveBuffer(_ bytes: Int) {
        var v = Int32(clamping: bytes)
        if setsockopt(fd, SOL_SOCKET, CConntrackShim_SO_RCVBUFFORCE, &v, 4) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, 4)
        }
    }

    public func setSendBuffer(_ bytes: Int) {
        var v = Int32(clamping: bytes)
        if setsockopt(fd, SOL_SOCKET, CConntrackShim_SO_SNDBUFFORCE, &v, 4) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, 4)
        }
    }

    public var receiveBufferSize: Int {
        var v: Int32 = 0
        var len = socklen_t(4)
        _ = getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len)
        return Int(v)
    }

    public func send(_ bytes: [UInt8], operation: String) throws {
        let n = bytes.withUnsafeBytes { mnl_socket_sendto(handle, $0.baseAddress, $0.count) }
        if n < 0 { throw ConntrackError(.system(Glibc.errno), operation: operation) }
    }

    /// Receives one datagram into `buffer`; returns its length. Retries EINTR.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, operation: String) throws -> Int {
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n >= 0 { return n }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw ConntrackError(.system(e), operation: operation)
        }
    }
}

/// Builds netlink messages with nested attributes into a byte array.
struct MessageBuilder {
    var bytes: [UInt8] = []
    private var messageStart = 0
    private var nests: [Int] = []

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    mutating func begin(subsystem: UInt16, type: UInt16, flags: UInt16, sequence: UInt32,
                        family: UInt8, resID: UInt16 = 0) {
        messageStart = bytes.count
        put32(0)                                   // length, patched in end()
        put16(subsystem << 8 | type)
        put16(flags)
        put32(sequence)
        put32(0)                                   // port id: the kernel fills it
        bytes.append(family)
        bytes.append(0)                            // NFNETLINK_V0
        bytes.append(UInt8(resID >> 8)); bytes.append(UInt8(resID & 0xff))
    }

    mutating func end() {
        let len = UInt32(bytes.count - messageStart)
        withUnsafeBytes(of: len.littleEndian) { p in
            for i in 0..<4 { bytes[messageStart + i] = p[i] }
        }
    }

    /// Sets NLM_F_ACK on the message begun last.
    mutating func setAckOnLastMessage() {
        bytes[messageStart + 6] |= UInt8(NL.ack & 0xff)
    }

    private mutating func put16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    private mutating func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }

    private mutating func header(_ type: UInt16, payload: Int) {
        put16(UInt16(4 + payload))
        put16(type)
    }

    private mutating func pad() { while bytes.count % 4 != 0 { bytes.append(0) } }

    mutating func attr(_ type: UInt16, _ payload: [UInt8]) {
        header(type, payload: payload.count); bytes.append(contentsOf: payload); pad()
    }
    mutating func attrU8(_ type: UInt16, _ v: UInt8) { header(type, payload: 1); bytes.append(v); pad() }
    mutating func attrBE16(_ type: UInt16, _ v: UInt16) {
        header(type, payload: 2); bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xff)); pad()
    }
    mutating func attrBE32(_ type: UInt16, _ v: UInt32) {
        header(type, payload: 4)
        withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) }
    }
    mutating func attrBE64(_ type: UInt16, _ v: UInt64) {
        header(type, payload: 8)
        withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) }
    }
    mutating func attrString(_ type: UInt16, _ s: String) { attr(type, Array(s.utf8) + [0]) }

    mutating func beginNest(_ type: UInt16) {
        nests.append(bytes.count)
        put16(0); put16(type | 0x8000)
    }
    mutating func endNest() {
        let start = nests.removeLast()
        let len = UInt16(bytes.count - start)
        bytes[start] = UInt8(len & 0xff); bytes[start + 1] = UInt8(len >> 8)
    }
}

/// One netlink message of a received datagram.
struct NetlinkMessageHeader {
    var type: UInt16
    var flags: UInt16
    var sequence: UInt32
    /// Everything after the 16-byte nlmsghdr.
    var payload: UnsafeRawBufferPointer

    /// The error code of an NLMSG_ERROR message (0 = ack), nil for other types or a short one.
    var errorCode: Int32? {
        guard type == NL.error, payload.count >= 4 else { return nil }
        return payload.loadUnaligned(as: Int32.self)
    }
}

/// Iterates the messages of one datagram, never past its end. A length that does not fit
/// throws `.malformed`; `body` returns false to stop early.
func forEachMessage(in d: UnsafeRawBufferPointer, operation: String,
                    _ body: (NetlinkMessageHeader) throws -> Bool) throws {
    var off = 0
    while off + NL.headerSize <= d.count {
        let len = Int(d.loadUnaligned(fromByteOffset: off, as: UInt32.self))
        guard len >= NL.headerSize, off + len <= d.count else {
            throw ConntrackError(.malformed("message length \(len) past the datagram"), operation: operation)
        }
        let m = NetlinkMessageHeader(
            type: d.loadUnaligned(fromByteOffset: off + 4, as: UInt16.self),
            flags: d.loadUnaligned(fromByteOffset: off + 6, as: UInt16.self),
            sequence: d.loadUnaligned(fromByteOffset: off + 8, as: UInt32.self),
            payload: UnsafeRawBufferPointer(rebasing: d[(off + NL.headerSize)..<(off + len)]))
        guard try body(m) else { return }
        off += (len + 3) & ~3
    }
}

/// A bounds-checked reader over netlink attributes (struct nlattr TLVs).
struct AttributeIterator: IteratorProtocol {
    let buffer: UnsafeRawBufferPointer
    var offset: Int
    var malformed = false

    init(_ buffer: UnsafeRawBufferPointer) {
        self.buffer = buffer
        self.offset = 0
    }

    /// The next attribute's type (flags stripped) and payload; nil at the end or on a bad length.
    mutating func next() -> (type: UInt16, payload: UnsafeRawBufferPointer)? {
        guard offset + 4 <= buffer.count else {
            if offset != buffer.count && buffer.count - offset >= 4 { malformed = true }
            return nil
        }
        let len = Int(buffer.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
        let type = buffer.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self) & 0x3fff
        guard len >= 4, offset + len <= buffer.count else { malformed = true; return nil }
        let payload = UnsafeRawBufferPointer(rebasing: buffer[(offset + 4)..<(offset + len)])
        offset += (len + 3) & ~3
        return (type, payload)
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always) func u8() -> UInt8? { count >= 1 ? self[0] : nil }
    @inline(__always) func be16() -> UInt16? {
        count >= 2 ? UInt16(bigEndian: loadUnaligned(as: UInt16.self)) : nil
    }
    @inline(__always) func be32() -> UInt32? {
        count >= 4 ? UInt32(bigEndian: loadUnaligned(as: UInt32.self)) : nil
    }
    @inline(__always) func be64() -> UInt64? {
        count >= 8 ? UInt64(bigEndian: loadUnaligned(as: UInt64.self)) : nil
    }
    /// A NUL-terminated (or length-bounded) string payload.
    func cString() -> String {
        let end = firstIndex(of: 0) ?? count
        return String(decoding: UnsafeRawBufferPointer(rebasing: self[0..<end]), as: UTF8.self)
    }
}
