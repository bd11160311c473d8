import ConntrackCore

/// Reads the datagrams of a conntrackd sync link (as captured) and says what happened:
/// one line per message, and per sender the sequence gaps, whether the receiver asked for
/// them again (NACK), acknowledgements, resyncs, refused messages, and the entries the
/// receiver should hold from what it was sent. Pure: the caller feeds datagrams in order.
public struct SyncLinkAnalyzer {
    public struct Sender: Sendable {
        public var messages = 0, data = 0, acks = 0, nacks = 0, resyncs = 0, alives = 0, hellos = 0, refused = 0
        public var lastSequence: UInt32?
        /// Sequence ranges this sender skipped (lost between it and the capture, or never sent).
        public var gaps: [(from: UInt32, to: UInt32)] = []
        /// Ranges the other side asked for again.
        public var nackedBy: [(from: UInt32, to: UInt32)] = []
        /// For each NACK received: how many messages it asked for, and how many data
        /// messages this sender sent after it (FTFW re-sends them with new numbers).
        public var resends: [(asked: Int, sent: Int)] = []
    }

    public private(set) var senders: [String: Sender] = [:]
    /// Entries a receiver should hold, by sender: the last NEW/UPDATE of each, minus DELETEs.
    public private(set) var tables: [String: [EntryKey: ConntrackEntry]] = [:]
    public init() {}

    static func name(_ t: ConntrackdWire.MessageType) -> String {
        switch t {
        case .entryNew: return "CT_NEW"
        case .entryUpdate: return "CT_UPD"
        case .entryDelete: return "CT_DEL"
        case .expectationNew: return "EXP_NEW"
        case .expectationUpdate: return "EXP_UPD"
        case .expectationDelete: return "EXP_DEL"
        case .control: return "CTL"
        }
    }

    static func flagNames(_ f: ConntrackdWire.Flags) -> String {
        let names: [(ConntrackdWire.Flags, String)] = [(.resync, "RESYNC"), (.nack, "NACK"), (.ack, "ACK"), (.alive, "ALIVE"),
                                                       (.hello, "HELLO"), (.helloBack, "HELLO_BACK")]
        return names.filter { f.contains($0.0) }.map(\.1).joined(separator: "|")
    }

    /// One captured datagram from `source` to `destination` (addresses as text); returns the
    /// lines describing its messages.
    public mutating func add(_ datagram: [UInt8], from source: String, to destination: String, time: String) -> [String] {
        var out: [String] = []
        var s = senders[source] ?? Sender()
        defer { senders[source] = s }
        let parts: [ArraySlice<UInt8>]
        do { parts = try ConntrackdWire.split(datagram).messages } catch {
            s.refused += 1
            return ["\(time) \(source) > \(destination) refused datagram: \(error)"]
        }
        for part in parts {
            let m: ConntrackdWire.Message
            do { m = try ConntrackdWire.decode(part) } catch {
                s.refused += 1
                out.append("\(time) \(source) > \(destination) refused message: \(error)")
                continue
            }
            s.messages += 1
            let flags = m.flags
            if flags.contains(.hello) { s.hellos += 1 }
            if let last = s.lastSequence, !flags.contains(.hello), m.sequence != last &+ 1,
               Int32(bitPattern: m.sequence &- last) > 1 {
                s.gaps.append((last &+ 1, m.sequence &- 1))
                out.append("\(time) \(source) > \(destination) GAP: sequence \(last &+ 1)…\(m.sequence &- 1) missing (\(m.sequence &- last &- 1) messages)")
            }
            if s.lastSequence == nil || Int32(bitPattern: m.sequence &- s.lastSequence!) > 0 || flags.contains(.hello) { s.lastSequence = m.sequence }
            var line = "\(time) \(source) > \(destination) seq=\(m.sequence)"
            switch m {
            case .entry(let t, _, _, _), .expectation(let t, _, _, _):
                // A data message: counted, matched against pending NACKs, printed.
                s.data += 1
                if let i = s.resends.firstIndex(where: { $0.sent < $0.asked }) { s.resends[i].sent += 1 }
                var text: [UInt8] = []
                switch m {
                case .entry(_, let e, _, _):
                    ConntrackText.write(e, options: TextFormatOptions(), to: &text)
                    tables[source, default: [:]][EntryKey(e)] = t == .entryDelete ? nil : e
                case .expectation(_, let x, _, _):
                    ConntrackText.write(x, options: TextFormatOptions(), to: &text)
                case .control:
                    break
                }
                line += " \(SyncLinkAnalyzer.name(t))"
                if !flags.isEmpty { line += "[\(SyncLinkAnalyzer.flagNames(flags))]" }
                line += " " + String(decoding: text, as: UTF8.self)
            case .control(let f, let from, let to, _):
                line += " \(SyncLinkAnalyzer.flagNames(f))"
                if f.contains(.ack) { s.acks += 1; line += " \(from)…\(to)" }
                if f.contains(.nack) {
                    s.nacks += 1
                    line += " \(from)…\(to)"
                    senders[destination, default: Sender()].nackedBy.append((from, to))
                    senders[destination, default: Sender()].resends.append((Int(to &- from) + 1, 0))
                }
                if f.contains(.resync) { s.resyncs += 1 }
                if f.contains(.alive) { s.alives += 1 }
            }
            out.append(line)
        }
        return out
    }

    /// The closing summary, one line per fact.
    public func summary() -> [String] {
        var out: [String] = []
        for (name, s) in senders.sorted(by: { $0.key < $1.key }) {
            let lost = s.gaps.reduce(0) { $0 + Int($1.to &- $1.from) + 1 }
            let unasked = s.gaps.filter { g in !s.nackedBy.contains { n in covers(n, g) } }
            out.append("\(name): \(s.messages) messages (\(s.data) data, \(s.acks) ACK, \(s.nacks) NACK, \(s.resyncs) RESYNC, \(s.alives) ALIVE, \(s.hellos) with HELLO), \(s.refused) refused")
            out.append("\(name): \(s.gaps.count) sequence gaps, \(lost) messages missing from the capture; \(s.gaps.count - unasked.count) of the gaps were asked for again (NACK)"
                       + (unasked.isEmpty ? "" : "; \(unasked.count) never asked for: the receiver is missing those changes unless a later resync carried them"))
            let short = s.resends.filter { $0.sent < $0.asked }
            if !short.isEmpty {
                let asked = short.reduce(0) { $0 + $1.asked }, sent = short.reduce(0) { $0 + $1.sent }
                out.append("\(name): \(short.count) NACKs asked for \(asked) messages again but only \(sent) data messages followed: " +
                           "its resend queue had lost them (ResendQueueSize overflow), or the capture ended first")
            }
            if let t = tables[name] { out.append("\(name): its receiver should hold \(t.count) entries from what was sent") }
        }
        return out
    }

    func covers(_ n: (from: UInt32, to: UInt32), _ g: (from: UInt32, to: UInt32)) -> Bool {
        Int32(bitPattern: g.from &- n.from) >= 0 && Int32(bitPattern: n.to &- g.to) >= 0
    }
}
