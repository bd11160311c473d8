import ConntrackCore

/// SCTP private state: the state and both directions' verification tags.
public struct SCTPConnection: Sendable, Equatable {
    public var state: SCTPState = .none
    public var vtag: (UInt32, UInt32) = (0, 0)
    public init() {}
    public static func == (a: SCTPConnection, b: SCTPConnection) -> Bool {
        a.state == b.state && a.vtag.0 == b.vtag.0 && a.vtag.1 == b.vtag.1
    }
}

/// SCTP chunk types the tracker distinguishes.
enum SCTPChunk: UInt8 {
    case data = 0, initChunk = 1, initAck = 2, sack = 3, heartbeat = 4, heartbeatAck = 5, abort = 6,
         shutdown = 7, shutdownAck = 8, error = 9, cookieEcho = 10, cookieAck = 11, shutdownComplete = 14
}

/// The SCTP tracker (semantics 6.5): chunks walked in order through a per-direction state
/// table; verification tags learnt from INIT/INIT_ACK and checked.
public enum SCTPRules {
    static let sysctlName: [SCTPState: String] = [
        .closed: "nf_conntrack_sctp_timeout_closed", .cookieWait: "nf_conntrack_sctp_timeout_cookie_wait",
        .cookieEchoed: "nf_conntrack_sctp_timeout_cookie_echoed", .established: "nf_conntrack_sctp_timeout_established",
        .shutdownSent: "nf_conntrack_sctp_timeout_shutdown_sent", .shutdownRecd: "nf_conntrack_sctp_timeout_shutdown_recd",
        .shutdownAckSent: "nf_conntrack_sctp_timeout_shutdown_ack_sent", .heartbeatSent: "nf_conntrack_sctp_timeout_heartbeat_sent",
    ]

    /// The state after a chunk, by (direction, chunk); nil = no change. The summary table
    /// of semantics 6.5: handshake forward by the right side, shutdown states by who sends.
    static func next(_ s: SCTPState, chunk: SCTPChunk, dir: UInt8) -> SCTPState? {
        switch (chunk, dir, s) {
        case (.initChunk, 0, .none), (.initChunk, 0, .closed): return .closed
        case (.initChunk, _, _): return .closed
        case (.initAck, 1, .closed), (.initAck, _, .cookieWait): return .cookieWait
        case (.cookieEcho, 0, .cookieWait), (.cookieEcho, 0, .closed): return .cookieEchoed
        case (.cookieAck, 1, .cookieEchoed): return .established
        case (.abort, _, _): return .closed
        case (.shutdown, _, .established): return dir == 0 ? .shutdownSent : .shutdownRecd
        case (.shutdown, _, .shutdownSent), (.shutdown, _, .shutdownRecd): return s
        case (.shutdownAck, _, .shutdownSent), (.shutdownAck, _, .shutdownRecd), (.shutdownAck, _, .shutdownAckSent):
            return .shutdownAckSent
        case (.shutdownComplete, _, .shutdownAckSent): return .closed
        case (.heartbeat, _, .none): return .heartbeatSent
        case (.heartbeatAck, 1, .heartbeatSent): return .established
        default: return nil
        }
    }

    /// Walks the chunks of one packet (`payload` = the SCTP packet from its common header).
    /// Returns the new state, or nil when the packet is invalid.
    static func packet(_ sctp: UnsafeRawBufferPointer, dir: UInt8, conn c: inout SCTPConnection, isNew: Bool) -> (SCTPState, assure: Bool, refresh: Bool)? {
        guard sctp.count >= 12 else { return nil }
        let vtag = UInt32(bigEndian: sctp.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        var off = 12
        var chunks: [(SCTPChunk?, Int)] = []
        while off + 4 <= sctp.count {
            let type = sctp[off]
            let len = Int(UInt16(bigEndian: sctp.loadUnaligned(fromByteOffset: off + 2, as: UInt16.self)))
            guard len >= 4 else { return nil }
            chunks.append((SCTPChunk(rawValue: type), off))
            off += (len + 3) & ~3
        }
        guard let first = chunks.first else { return nil }
        let only = chunks.count == 1
        for (ch, _) in chunks where ch == .initChunk || ch == .initAck || ch == .shutdownComplete {
            _ = ch
            if !only { return nil }
        }
        if chunks.dropFirst().contains(where: { $0.0 == .cookieEcho || $0.0 == .cookieAck }) { return nil }
        if isNew {
            // A first packet with ABORT, SHUTDOWN_COMPLETE or COOKIE_ACK, or only chunks that do not move the state, is invalid.
            if chunks.contains(where: { $0.0 == .abort || $0.0 == .shutdownComplete || $0.0 == .cookieAck }) { return nil }
            if !chunks.contains(where: { $0.0 == .initChunk || $0.0 == .heartbeat || $0.0 == .cookieEcho }) { return nil }
            if first.0 == .initChunk {
                guard vtag == 0 else { return nil }
            }
        }
        // Verification tags (RFC 4960 8.5): INIT carries 0; others must carry the peer's tag.
        if first.0 != .initChunk && !isNew {
            let expected = dir == 0 ? c.vtag.0 : c.vtag.1
            if first.0 != .abort && first.0 != .shutdownComplete && expected != 0 && vtag != expected { return nil }
        }
        let old = c.state
        var state = c.state
        for (ch, at) in chunks {
            guard let ch else { continue }
            if ch == .initChunk || ch == .initAck, at + 8 <= sctp.count, sctp.count >= at + 8 {
                // The initiate tag is what the other side must put in its packets.
                let tag = UInt32(bigEndian: sctp.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self))
                if dir == 0 { c.vtag.1 = tag } else { c.vtag.0 = tag }
            }
            if let n = next(state, chunk: ch, dir: dir) { state = n }
        }
        c.state = state
        let refresh = !(old == .closed && state == .closed && first.0 == .initChunk && !isNew)
        return (state, state == .established && old != .established, refresh)
    }
}
