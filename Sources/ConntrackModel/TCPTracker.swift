import ConntrackCore
import PacketDecoding

/// What a protocol tracker decided for one packet.
public enum L4Result: Equatable, Sendable {
    /// The packet is invalid: nothing changes (`ct state invalid`).
    case invalid(InvalidReason)
    /// Accepted without any change, refresh or accounting (TCP "ignore"): the packet keeps
    /// its ctinfo; a reply still sets SEEN_REPLY.
    case ignore(InvalidReason?)
    /// Accepted: refresh to `timeout` (nil: no refresh and no accounting), maybe ASSURED.
    case accept(timeout: UInt64?, assure: Bool)
    /// Accepted and counted, then the entry is deleted (an RST before any reply).
    case acceptAndDelete
    /// The entry is stale: delete it and process the packet again as a new flow (5.5a).
    case reopen
}

/// Why a packet was invalid or ignored: the names `--verdicts` prints.
public enum InvalidReason: String, Sendable {
    case noTuple = "no tuple (L4 header unreadable)"
    case badChecksum = "bad checksum"
    case badHeader = "bad header"
    case badFlags = "invalid TCP flag combination"
    case stateTable = "invalid in the state table"
    case notNewTCP = "not a SYN and nf_conntrack_tcp_loose=0"
    case cannotCreate = "cannot start a connection"
    case seqOverUpperBound = "SEQ over upper bound (over the receiver's window)"
    case ackOverUpperBound = "ACK over upper bound (ACKed data not seen yet)"
    case seqUnderLowerBound = "SEQ under lower bound (retransmitted old data)"
    case ackUnderLowerBound = "ACK under lower bound (overly delayed)"
    case moreThanWindow = "more bytes than the window allowed"
    case invalidRST = "RST before the highest ACK (old RST)"
    case ignoredInState = "ignored in this state (firewall may be out of sync)"
    case challengeAck = "challenge ACK"
    case synRetransmit = "SYN retransmission (no refresh)"
    case icmpNoEntry = "ICMP error for no known connection"
    case icmpWrongDestination = "ICMP error to the wrong address"
    case icmpType = "ICMP type that cannot start or match a connection"
    case udpLength = "UDP length field wrong"
    case udpliteCoverage = "UDP-Lite checksum coverage or zero checksum"
    case sctpChunks = "SCTP chunk sequence not allowed"
    case sctpVtag = "SCTP verification tag mismatch"
    case tableFull = "table full (nf_conntrack_max)"
    case helperDrop = "dropped by the helper (partial command)"
    case greVersion = "GRE version 1 without PPTP"
    case noNextHeader = "IPv6 no next header"
    case badIPChecksum = "bad IPv4 header checksum (dropped before conntrack)"
}

/// The TCP tracker (nf_conntrack_proto_tcp.c; semantics 5.1–5.9): the state table of
/// `TCPRules`, the special cases of 5.5, window tracking (5.6) and the timeout rules (5.7).
public enum TCPTracker {
    /// A TCP segment as the tracker needs it.
    public struct Segment {
        public var seq: UInt32
        public var ack: UInt32
        public var flags: UInt8
        public var window: UInt16
        public var windowScale: UInt8?
        public var sackPermitted: Bool
        public var sackRightEdge: UInt32?
        public var payloadLength: Int

        public init(seq: UInt32, ack: UInt32, flags: UInt8, window: UInt16, windowScale: UInt8? = nil,
                    sackPermitted: Bool = false, sackRightEdge: UInt32? = nil, payloadLength: Int = 0) {
            self.seq = seq; self.ack = ack; self.flags = flags; self.window = window
            self.windowScale = windowScale; self.sackPermitted = sackPermitted
            self.sackRightEdge = sackRightEdge; self.payloadLength = payloadLength
        }

        public init(_ h: TCPHeader, payloadLength: Int) {
            self.init(seq: h.sequence, ack: h.acknowledgement, flags: h.flags, window: h.window,
                      windowScale: h.windowScale, sackPermitted: h.sackPermitted,
                      sackRightEdge: h.sackHighestRightEdge, payloadLength: payloadLength)
        }

        var syn: Bool { flags & TCPHeader.syn != 0 }
        var ackFlag: Bool { flags & TCPHeader.ack != 0 }
        var rst: Bool { flags & TCPHeader.rst != 0 }
        var fin: Bool { flags & TCPHeader.fin != 0 }
        /// seq + payload + SYN + FIN.
        var end: UInt32 { seq &+ UInt32(truncatingIfNeeded: payloadLength) &+ (syn ? 1 : 0) &+ (fin ? 1 : 0) }
    }

    @inline(__always) static func before(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
    @inline(__always) static func after(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: b &- a) < 0 }

    /// Options into a direction's window data (`tcp_options`): scale and flags reset except BE_LIBERAL.
    static func parseOptions(_ s: Segment, into w: inout TCPWindow) {
        w.scale = 0
        w.flags &= TCPWindow.beLiberal
        if s.sackPermitted { w.flags |= TCPWindow.sackPermitted }
        if let ws = s.windowScale { w.scale = min(ws, 14); w.flags |= TCPWindow.windowScale }
    }

    /// The first packet of a new entry (`tcp_new`). nil when it cannot start a connection.
    public static func start(_ s: Segment, _ t: Timeouts) -> TCPConnection? {
        guard case .state(let st) = TCPRules.next(from: .none, index: TCPRules.index(s.flags), reply: false) else { return nil }
        var c = TCPConnection()
        if st == .synSent {
            c.original.end = s.end
            c.original.maxWindow = max(UInt32(s.window), 1)
            c.original.maxEnd = c.original.end
            parseOptions(s, into: &c.original)
        } else {
            guard t.tcpLoose else { return nil }
            c.original.end = s.end
            c.original.maxWindow = max(UInt32(s.window), 1)
            c.original.maxEnd = c.original.end &+ c.original.maxWindow
            c.original.flags = TCPWindow.sackPermitted | TCPWindow.beLiberal
            c.reply.flags = TCPWindow.sackPermitted | TCPWindow.beLiberal
        }
        c.lastIndex = .none
        return c
    }

    /// One packet of an entry (`nf_conntrack_tcp_packet` after the pre-checks).
    /// - Parameters:
    ///   - dir: 0 original, 1 reply.
    ///   - status: the entry's status before this packet (SEEN_REPLY not yet set for it).
    ///   - remaining: nanoseconds the entry has left (5.9 needs it).
    public static func packet(_ s: Segment, dir: UInt8, conn c: inout TCPConnection, status: Status,
                              remaining: UInt64, _ t: Timeouts) -> (L4Result, lowerTimeoutTo: UInt64?) {
        let oldState = c.state
        let index = TCPRules.index(s.flags)
        var outcome = TCPRules.next(from: oldState, index: index, reply: dir == 1)
        var old = oldState
        var newState: TCPState = .none
        var skipWindow = false

        switch outcome {
        case .state(.synSent) where oldState == .timeWait || oldState == .close:
            if (c.original.flags | c.reply.flags) & TCPWindow.closeInit != 0
                || (c.lastDirection == dir && c.lastIndex == .rst) {
                return (.reopen, nil)
            }
            outcome = .ignore
            fallthrough
        case .ignore:
            if index == .synack, c.lastIndex == .syn, c.lastDirection != dir, s.ack == c.lastEnd {
                // The firewall was out of sync: rebuild from the recorded SYN (5.5b).
                old = .synSent
                newState = .synRecv
                let ld = c.lastDirection
                c[ld].end = c.lastEnd
                c[ld].maxEnd = c.lastEnd
                c[ld].maxWindow = c.lastWindow == 0 ? 1 : UInt32(c.lastWindow)
                c[ld].scale = c.lastWindowScale
                c.lastFlags &= ~TCPConnection.challengeAckExpected
                c[ld].flags = c.lastFlags
                let liberal = c[dir].flags & TCPWindow.beLiberal
                c[dir] = TCPWindow()
                c[dir].flags = liberal
                break
            }
            c.lastIndex = index
            c.lastDirection = dir
            c.lastSeq = s.seq
            c.lastEnd = s.end
            c.lastWindow = s.window
            if index == .syn && dir == 0 {
                c.lastFlags = 0
                c.lastWindowScale = 0
                var seen = TCPWindow()
                parseOptions(s, into: &seen)
                if seen.flags & TCPWindow.windowScale != 0 {
                    c.lastFlags |= TCPWindow.windowScale
                    c.lastWindowScale = seen.scale
                }
                if seen.flags & TCPWindow.sackPermitted != 0 { c.lastFlags |= TCPWindow.sackPermitted }
                if oldState == .lastAck { c.lastFlags |= TCPConnection.challengeAckExpected }
            }
            if oldState == .synSent && index == .ack && dir == 1 { c.lastAck = s.ack }
            return (.ignore(.ignoredInState), nil)
        case .invalid:
            return (.invalid(.stateTable), nil)
        case .state(.timeWait):
            newState = .timeWait
            if oldState == .lastAck, index == .ack, c.lastDirection != dir, c.lastIndex == .syn,
               c.lastFlags & TCPConnection.challengeAckExpected != 0 {
                c.lastFlags &= ~TCPConnection.challengeAckExpected
                return (.ignore(.challengeAck), nil)
            }
        case .state(.synSent2):
            newState = .synSent2
            c.lastFlags |= TCPConnection.simultaneousOpen
        case .state(.synRecv):
            newState = .synRecv
            if dir == 1, index == .ack, c.lastFlags & TCPConnection.simultaneousOpen != 0 { newState = .established }
        case .state(.close):
            newState = .close
            guard index == .rst else { break }
            if [.finWait, .closeWait, .lastAck, .timeWait, .close].contains(oldState) { skipWindow = true; break }
            let other = dir ^ 1
            if c[other].flags & TCPWindow.maxAckSet != 0 && c.lastIndex != .syn {
                let established = oldState == .established && status.contains(.assured)
                if s.seq == 0 && !established { break }
                if before(s.seq, c[other].maxAck) && !t.tcpIgnoreInvalidRST { return (.invalid(.invalidRST), nil) }
                if !established || s.seq == c[other].maxAck { break }
                if c.lastIndex == .ack && c.lastDirection == dir && s.seq == c.lastEnd { break }
                newState = oldState
            }
            let synThrough = status.contains(.seenReply) && c.lastIndex == .syn && (!t.kernel612 || c.lastDirection != dir)
            if (synThrough || (!status.contains(.assured) && c.lastIndex == .ack)) && s.ack == c.lastEnd {
                skipWindow = true
                break
            }
            if oldState == .synSent && c.lastIndex == .ack && c.lastDirection == 1 && s.seq == c.lastAck {
                skipWindow = true
            }
        case .state(let st):
            newState = st
        }

        if !skipWindow {
            switch inWindow(s, dir: dir, index: index, conn: &c, state: oldState, t) {
            case .accept: break
            case .ignore(let why): return (.ignore(why), nil)
            case .invalid(let why):
                return (.invalid(why), handleInvalid(dir: dir, index: index, conn: &c, status: status, remaining: remaining, t))
            }
        }
        c.lastIndex = index
        c.lastDirection = dir
        c.state = newState
        if old != newState && newState == .finWait { c[dir].flags |= TCPWindow.closeInit }

        let table = t.tcp
        var timeout: UInt64
        let tNew = table[Int(newState.rawValue)]
        if c.retransmissions >= t.tcpMaxRetrans && tNew > table[Timeouts.retransIndex] {
            timeout = table[Timeouts.retransIndex]
        } else if index == .rst && !t.kernel612 {
            timeout = table[Int(TCPState.close.rawValue)]
        } else if index == .rst && newState == .established && tNew > table[Timeouts.unackIndex] {
            timeout = table[Timeouts.unackIndex]      // 6.12
        } else if (c.original.flags | c.reply.flags) & TCPWindow.dataUnacknowledged != 0 && tNew > table[Timeouts.unackIndex] {
            timeout = table[Timeouts.unackIndex]
        } else if c.lastWindow == 0 && tNew > table[Timeouts.retransIndex] {
            timeout = table[Timeouts.retransIndex]
        } else {
            timeout = tNew
        }

        if !status.contains(.seenReply) {
            if s.rst { return (.acceptAndDelete, nil) }
            if index == .syn && old == .synSent { return (.ignore(.synRetransmit), nil) }
            if newState == .established && timeout > table[Timeouts.unackIndex] { timeout = table[Timeouts.unackIndex] }
            return (.accept(timeout: timeout, assure: false), nil)
        }
        let assure = !status.contains(.assured) && (old == .synRecv || old == .established) && newState == .established
        return (.accept(timeout: timeout, assure: assure), nil)
    }

    enum WindowResult { case accept, ignore(InvalidReason), invalid(InvalidReason) }

    static func initSender(_ s: Segment, dir: UInt8, conn c: inout TCPConnection) {
        let end = s.end
        c[dir].end = end
        c[dir].maxEnd = end
        c[dir].maxWindow = s.window == 0 ? 1 : UInt32(s.window)
        parseOptions(s, into: &c[dir])
        if dir == 1 && !(c[dir].flags & TCPWindow.windowScale != 0 && c[0].flags & TCPWindow.windowScale != 0) {
            c[dir].scale = 0
            c[0].scale = 0
        }
    }

    /// `tcp_in_window` (5.6).
    static func inWindow(_ s: Segment, dir: UInt8, index: TCPRules.Index, conn c: inout TCPConnection,
                         state: TCPState, _ t: Timeouts) -> WindowResult {
        let other = dir ^ 1
        var seq = s.seq
        var ack = s.ack
        var sack = s.ack
        var end = s.end
        let winRaw = s.window
        var win = UInt32(winRaw)
        if c[other].flags & TCPWindow.sackPermitted != 0, let edge = s.sackRightEdge, after(edge, sack) { sack = edge }

        if c[dir].maxWindow == 0 {
            if s.syn {
                initSender(s, dir: dir, conn: &c)
                if !s.ackFlag { return .accept }
            } else {
                c[dir].end = end
                let swin = win << UInt32(c[dir].scale)
                c[dir].maxWindow = swin == 0 ? 1 : swin
                c[dir].maxEnd = end &+ c[dir].maxWindow
                if c[other].maxWindow == 0 {
                    c[other].end = sack
                    c[other].maxEnd = sack
                } else if sack == c[other].end &+ 1 {
                    c[other].end &+= 1
                }
            }
        } else if s.syn && after(end, c[dir].end) && (state == .synSent || state == .synRecv) {
            initSender(s, dir: dir, conn: &c)
            if dir == 1 && !s.ackFlag { return .accept }
        }

        if !s.ackFlag {
            ack = c[other].end
            sack = ack
        } else if s.rst && ack == 0 {
            ack = c[other].end
            sack = ack
        }
        if s.rst && seq == 0 && state == .synSent {
            seq = c[dir].end
            end = seq
        }
        let liberal = t.tcpBeLiberal || c[dir].flags & TCPWindow.beLiberal != 0
        func fail(_ r: WindowResult) -> WindowResult { liberal ? .accept : r }
        let maxAckWindow = max(c[dir].maxWindow, 66000)

        if !before(seq, c[dir].maxEnd &+ 1) {
            let overshot = end &- c[dir].maxEnd &+ 1
            let ackOK = after(sack, c[other].end &- maxAckWindow &- 1)
            let inRecv = c[other].maxWindow != 0 && after(end, c[dir].end &- c[other].maxWindow &- 1)
            if inRecv && ackOK && overshot <= c[other].maxWindow && before(sack, c[other].end &+ 1) {
                c[dir].end = end
                c[dir].flags |= TCPWindow.dataUnacknowledged
                return fail(.ignore(.moreThanWindow))
            }
            return fail(.invalid(.seqOverUpperBound))
        }
        if !before(sack, c[other].end &+ 1) { return fail(.invalid(.ackOverUpperBound)) }
        if !(c[other].maxWindow == 0 || after(end, c[dir].end &- c[other].maxWindow &- 1)) {
            return fail(.ignore(.seqUnderLowerBound))
        }
        if !after(sack, c[other].end &- maxAckWindow &- 1) { return fail(.ignore(.ackUnderLowerBound)) }

        if !s.syn { win <<= UInt32(c[dir].scale) }
        let swin = win &+ (sack &- ack)
        if c[dir].maxWindow < swin { c[dir].maxWindow = swin }
        if after(end, c[dir].end) {
            c[dir].end = end
            c[dir].flags |= TCPWindow.dataUnacknowledged
        }
        if s.ackFlag {
            if c[dir].flags & TCPWindow.maxAckSet == 0 {
                c[dir].maxAck = ack
                c[dir].flags |= TCPWindow.maxAckSet
            } else if after(ack, c[dir].maxAck) {
                c[dir].maxAck = ack
            }
        }
        if c[other].maxWindow != 0 && after(end, c[dir].maxEnd) { c[other].maxWindow &+= end &- c[dir].maxEnd }
        if after(sack &+ win, c[other].maxEnd &- 1) {
            c[other].maxEnd = sack &+ win
            if win == 0 { c[other].maxEnd &+= 1 }
        }
        if ack == c[other].end { c[other].flags &= ~TCPWindow.dataUnacknowledged }

        if index == .ack {
            if c.lastDirection == dir && c.lastSeq == seq && c.lastAck == ack && c.lastEnd == end && c.lastWindow == winRaw {
                c.retransmissions &+= 1
            } else {
                c.lastDirection = dir
                c.lastSeq = seq
                c.lastAck = ack
                c.lastEnd = end
                c.lastWindow = winRaw
                c.retransmissions = 0
            }
        }
        return .accept
    }

    /// `nf_tcp_handle_invalid` (5.9): an out-of-window FIN/RST on an ASSURED entry may lower
    /// the timeout; returns the new timeout when it does.
    static func handleInvalid(dir: UInt8, index: TCPRules.Index, conn c: inout TCPConnection, status: Status,
                              remaining: UInt64, _ t: Timeouts) -> UInt64? {
        guard status.contains(.assured), !status.contains(.fixedTimeout), index == .rst || index == .fin else { return nil }
        if c.lastDirection != dir && (c.lastIndex == .fin || c.lastIndex == .rst) {
            let unack = t.tcp[Timeouts.unackIndex]
            if remaining < 120 * Timeouts.second { return nil }
            return remaining > unack ? unack : nil
        }
        c.lastIndex = index
        c.lastDirection = dir
        return nil
    }
}
