import ConntrackCore
import Foundation
import Logging
import NIOCore
import ReplicationProtocol

/// One authenticated replication connection (docs/replication-protocol.md): sends its HELLO
/// (the initiator at once, the responder after the initiator's), derives the session key,
/// then hands every checked frame to `onFrame`. Any invalid frame closes the connection and
/// is logged; nothing of it is applied. Runs on the channel's event loop; `send` must be
/// called there (`Session.execute` hops onto it).
final class Session: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Role { case initiator, responder }

    let role: Role
    let psk: HMACKey
    let nodeName: String
    let nonce: [UInt8]
    var reader: FrameReader
    var sessionKey: HMACKey?
    var sent: UInt64 = 0
    private(set) var peer: Hello?
    var context: ChannelHandlerContext?
    let logger: Logger
    /// Called once both HELLOs are through.
    var onReady: ((Session) -> Void)?
    var onFrame: ((Session, Frame) -> Void)?
    /// Called after each batch of frames read (a good moment to acknowledge).
    var onReadBatch: ((Session) -> Void)?
    var onClose: ((Session, String?) -> Void)?
    private(set) var failure: String?

    init(role: Role, psk: HMACKey, node: String, logger: Logger) {
        self.role = role
        self.psk = psk
        self.nodeName = node
        var g = SystemRandomNumberGenerator()
        nonce = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
        reader = FrameReader(key: psk)
        self.logger = logger
    }

    var isReady: Bool { sessionKey != nil && peer != nil }
    /// The last sequence number received and checked.
    var received: UInt64 { reader.expected - 1 }
    /// The peer's address, noted when the connection opened (readable from any thread).
    private(set) var remote = "?"

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        remote = context.remoteAddress?.description ?? "?"
        if role == .initiator { sendHello() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if failure == nil && reader.pendingBytes > 0 {
            failure = "connection closed inside a frame (\(reader.pendingBytes) bytes)"
            logger.error("\(failure!)", metadata: ["address": "\(remote)"])
        }
        onClose?(self, failure)
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buf = unwrapInboundIn(data)
        reader.append(buf.readableBytesView)
        do {
            while let f = try reader.next() {
                if peer == nil {
                    guard f.type == .hello else { throw FrameError("the first frame is \(f.type), not HELLO") }
                    let h = try Hello(payload: f.payload)
                    guard h.protocolVersion == 1 else { throw FrameError("peer speaks protocol version \(h.protocolVersion), not 1") }
                    peer = h
                    if role == .responder { sendHello() }
                    let (i, r) = role == .initiator ? (nonce, h.nonce) : (h.nonce, nonce)
                    let key = Hello.sessionKey(psk: psk, initiator: i, responder: r)
                    sessionKey = key
                    reader.switchKey(key)
                    logger.info("session established", metadata: ["peer": "\(h.node)", "address": "\(remote)"])
                    onReady?(self)
                    continue
                }
                onFrame?(self, f)
            }
        } catch {
            failure = "\(error)"
            logger.error("closing connection: \(error)", metadata: ["address": "\(remote)"])
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if isReady && failure == nil { onReadBatch?(self) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failure = failure ?? "\(error)"
        context.close(promise: nil)
    }

    private func sendHello() {
        send(.hello, Hello(nonce: nonce, node: nodeName).payload)
    }

    /// Writes one frame (on the event loop). HELLO is signed with the pre-shared key,
    /// everything after with the session key.
    func send(_ type: FrameType, _ payload: [UInt8] = [], flush: Bool = true) {
        guard let context else { return }
        guard type == .hello || sessionKey != nil else { return }
        sent += 1
        let key = type == .hello ? psk : sessionKey!
        // Header and payload go straight into the buffer, and the MAC is taken over it there
        // (FrameCodec.encode's layout, without two more copies of every payload).
        var buf = context.channel.allocator.buffer(capacity: FrameCodec.headerSize + payload.count + FrameCodec.macSize)
        buf.writeBytes(FrameCodec.header(type: type, sequence: sent, length: payload.count))
        buf.writeBytes(payload)
        let mac = buf.withUnsafeReadableBytes { key.mac(bytes: $0) }
        buf.writeBytes(mac)
        context.write(wrapOutboundOut(buf), promise: nil)
        if flush { context.flush() }
    }

    func flush() { context?.flush() }

    /// Closes the connection from any thread.
    func close() {
        execute { [self] in context?.close(promise: nil) }
    }

    /// Runs `body` on this session's event loop.
    func execute(_ body: @escaping @Sendable () -> Void) {
        context?.eventLoop.execute(body)
    }
}

extension UInt64 {
    var bigEndianBytes: [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: self >> (56 - 8 * UInt64($0))) } }
    init?(bigEndianBytes b: [UInt8]) {
        guard b.count == 8 else { return nil }
        self = b.reduce(0) { $0 << 8 | UInt64($1) }
    }
}
