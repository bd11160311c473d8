import ConntrackCore

/// What `ctsync capture inspect` reports about one capture: counts only, so it can
/// read any size of file in constant memory.
public struct CaptureSummary: Sendable, Equatable {
    public var linkType: Int32
    public var frames = 0
    public var capturedBytes = 0
    public var truncatedFrames = 0
    public var firstTimestamp: UInt64?
    public var lastTimestamp: UInt64?
    public var decoded = 0
    public var ipv4 = 0
    public var ipv6 = 0
    public var fragments = 0
    public var vlanTagged = 0
    public var badIPv4Checksums = 0
    /// Decoded packets by upper-layer protocol number.
    public var byProtocol = [Int](repeating: 0, count: 256)
    /// SLL packet types (incoming, outgoing, ...) by value 0...4, other in 5.
    public var byPacketType = [Int](repeating: 0, count: 6)
    public var skipped: [SkipReason: Int] = [:]
    /// Datagrams put back together from fragments, and fragments thrown away, by reason.
    public var reassembled = 0
    public var fragmentsDropped: [Defragmenter.DropReason: Int] = [:]
    public var fragmentsExpired = 0

    public init(linkType: Int32) { self.linkType = linkType }

    /// Counts one frame and its decode result.
    public mutating func add(timestamp: UInt64, capturedLength: Int, originalLength: Int,
                             result: Result<DecodedPacket, SkipReason>) {
        switch result {
        case .success(let p): add(timestamp: timestamp, capturedLength: capturedLength, originalLength: originalLength, decoded: p)
        case .failure(let r): add(timestamp: timestamp, capturedLength: capturedLength, originalLength: originalLength, skipped: r)
        }
    }

    /// Counts one decoded frame.
    public mutating func add(timestamp: UInt64, capturedLength: Int, originalLength: Int, decoded p: DecodedPacket) {
        frame(timestamp: timestamp, capturedLength: capturedLength, originalLength: originalLength)
        decoded += 1
        if p.family == .ipv4 { ipv4 += 1 } else { ipv6 += 1 }
        if p.fragment != nil { fragments += 1 }
        if p.link.vlanDepth > 0 { vlanTagged += 1 }
        if p.ipChecksumValid == false { badIPv4Checksums += 1 }
        byProtocol[Int(p.l4proto)] += 1
        if let t = p.link.packetType { byPacketType[Int(min(t, 5))] += 1 }
    }

    /// Counts what the defragmenter did with one fragment.
    public mutating func count(_ outcome: Defragmenter.Outcome) {
        switch outcome {
        case .held: break
        case .reassembled: reassembled += 1
        case .dropped(let r): fragmentsDropped[r, default: 0] += 1
        }
    }

    /// Counts one skipped frame.
    public mutating func add(timestamp: UInt64, capturedLength: Int, originalLength: Int, skipped reason: SkipReason) {
        frame(timestamp: timestamp, capturedLength: capturedLength, originalLength: originalLength)
        skipped[reason, default: 0] += 1
    }

    mutating func frame(timestamp: UInt64, capturedLength: Int, originalLength: Int) {
        frames += 1
        capturedBytes += capturedLength
        if originalLength > capturedLength { truncatedFrames += 1 }
        if firstTimestamp == nil || timestamp < firstTimestamp! { firstTimestamp = timestamp }
        if lastTimestamp == nil || timestamp > lastTimestamp! { lastTimestamp = timestamp }
    }

    public var skippedTotal: Int { skipped.values.reduce(0, +) }

    static func protocolName(_ n: Int) -> String {
        switch L4Protocol(number: UInt8(n)) {
        case .other(let k): return "proto-\(k)"
        case let p: return p.name.description
        }
    }

    /// The human summary, one fact per line.
    public func text(name: String) -> String {
        var lines: [String] = []
        let lt = LinkType(rawValue: linkType).map { "\($0.name) (\(linkType))" } ?? "unknown (\(linkType))"
        lines.append("capture: \(name)")
        lines.append("link type: \(lt)")
        lines.append("frames: \(frames) (\(capturedBytes) bytes captured, \(truncatedFrames) cut by the snaplen)")
        if let f = firstTimestamp, let l = lastTimestamp {
            lines.append("time span: \(Self.seconds(f)) to \(Self.seconds(l)) (\(Self.duration(l - f)))")
        }
        lines.append("decoded: \(decoded) (ipv4 \(ipv4), ipv6 \(ipv6), fragments \(fragments), vlan-tagged \(vlanTagged), bad IPv4 header checksums \(badIPv4Checksums))")
        let protos = (0..<256).filter { byProtocol[$0] > 0 }.map { "\(Self.protocolName($0)) \(byProtocol[$0])" }
        lines.append("protocols: " + (protos.isEmpty ? "none" : protos.joined(separator: ", ")))
        if fragments > 0 {
            let drops = Defragmenter.DropReason.allCases.compactMap { r in fragmentsDropped[r].map { "\(r.rawValue) \($0)" } }
            lines.append("reassembled: \(reassembled) datagrams; fragments dropped: " + (drops.isEmpty ? "0" : drops.joined(separator: ", "))
                         + "; incomplete datagrams expired: \(fragmentsExpired)")
        }
        if byPacketType.contains(where: { $0 > 0 }) {
            let names = ["incoming", "broadcast", "multicast", "other-host", "outgoing", "other"]
            lines.append("directions: " + (0..<6).filter { byPacketType[$0] > 0 }.map { "\(names[$0]) \(byPacketType[$0])" }.joined(separator: ", "))
        }
        if skipped.isEmpty {
            lines.append("skipped: 0")
        } else {
            lines.append("skipped: \(skippedTotal)")
            for r in SkipReason.allCases { if let n = skipped[r] { lines.append("  \(r.rawValue): \(n)") } }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One JSON object (keys documented in docs/capture.md).
    public func json(name: String) -> String {
        func str(_ s: String) -> String {
            var b: [UInt8] = []
            ConntrackJSON.writeString(s, to: &b)
            return String(decoding: b, as: UTF8.self)
        }
        var parts: [String] = ["\"v\":1", "\"capture\":\(str(name))", "\"link_type\":\(linkType)"]
        if let lt = LinkType(rawValue: linkType) { parts.append("\"link_type_name\":\"\(lt.name)\"") }
        parts += ["\"frames\":\(frames)", "\"captured_bytes\":\(capturedBytes)", "\"cut_by_snaplen\":\(truncatedFrames)"]
        if let f = firstTimestamp, let l = lastTimestamp { parts += ["\"first_ns\":\(f)", "\"last_ns\":\(l)"] }
        parts += ["\"decoded\":\(decoded)", "\"ipv4\":\(ipv4)", "\"ipv6\":\(ipv6)", "\"fragments\":\(fragments)",
                  "\"vlan_tagged\":\(vlanTagged)", "\"bad_ipv4_checksums\":\(badIPv4Checksums)"]
        let protos = (0..<256).filter { byProtocol[$0] > 0 }.map { "\"\(Self.protocolName($0))\":\(byProtocol[$0])" }
        parts.append("\"protocols\":{" + protos.joined(separator: ",") + "}")
        parts.append("\"reassembled\":\(reassembled)")
        let drops = Defragmenter.DropReason.allCases.compactMap { r in fragmentsDropped[r].map { "\(str(r.rawValue)):\($0)" } }
        parts.append("\"fragments_dropped\":{" + drops.joined(separator: ",") + "}")
        parts.append("\"fragments_expired\":\(fragmentsExpired)")
        let names = ["incoming", "broadcast", "multicast", "other_host", "outgoing", "other"]
        let dirs = (0..<6).filter { byPacketType[$0] > 0 }.map { "\"\(names[$0])\":\(byPacketType[$0])" }
        if !dirs.isEmpty { parts.append("\"directions\":{" + dirs.joined(separator: ",") + "}") }
        let sk = SkipReason.allCases.compactMap { r in skipped[r].map { "\(str(r.rawValue)):\($0)" } }
        parts.append("\"skipped\":{" + sk.joined(separator: ",") + "}")
        return "{" + parts.joined(separator: ",") + "}\n"
    }

    public static func seconds(_ ns: UInt64) -> String {
        let frac = String(ns % 1_000_000_000)
        return "\(ns / 1_000_000_000).\(String(repeating: "0", count: 9 - frac.count))\(frac)"
    }

    static func duration(_ ns: UInt64) -> String {
        let s = Double(ns) / 1e9
        return s < 1 ? "\(Int(s * 1000)) ms" : "\((s * 1000).rounded() / 1000) s"
    }
}
