import ConntrackCore

extension DecodedPacket {
    /// One line describing the packet, for `ctsync capture inspect --frames` and golden tests:
    /// link facts, family, protocol, endpoints, then protocol details.
    public var line: String {
        var parts: [String] = []
        if let t = link.packetType { parts.append("dir=" + (SLLPacketType(rawValue: t)?.name ?? "type\(t)")) }
        if let i = link.interfaceIndex { parts.append("if=\(i)") }
        if link.vlanDepth > 0 { parts.append("vlan=" + [link.outerVLAN, link.innerVLAN].compactMap { $0.map(String.init) }.joined(separator: "/")) }
        parts.append(family.name)
        let proto = L4Protocol(number: l4proto)
        parts.append(proto == .other(l4proto) ? "proto-\(l4proto)" : proto.name.description)
        if hasTransport && proto.hasPorts {
            parts.append("\(endpoint(source, sourcePort)) > \(endpoint(destination, destinationPort))")
        } else {
            parts.append("\(source) > \(destination)")
        }
        parts.append("len=\(networkLength)")
        if ipChecksumValid == false { parts.append("bad-ip-checksum") }
        if let f = fragment { parts.append("frag id=\(f.identification) off=\(f.offset)" + (f.moreFragments ? " mf" : "")) }
        if let t = tcp {
            let names: [(UInt8, Character)] = [(TCPHeader.syn, "S"), (TCPHeader.fin, "F"), (TCPHeader.rst, "R"),
                                               (TCPHeader.psh, "P"), (TCPHeader.ack, "."), (TCPHeader.urg, "U")]
            var f = String(names.filter { t.flags & $0.0 != 0 }.map(\.1))
            if f.isEmpty { f = "none" }
            var s = "[\(f)] seq=\(t.sequence) ack=\(t.acknowledgement) win=\(t.window)"
            if let m = t.mss { s += " mss=\(m)" }
            if let w = t.windowScale { s += " wscale=\(w)" }
            if t.sackPermitted { s += " sackok" }
            if t.sackBlocks > 0 { s += " sack=\(t.sackBlocks)" }
            if let v = t.timestampValue { s += " ts=\(v)/\(t.timestampEcho ?? 0)" }
            parts.append(s)
        }
        if hasTransport && (proto == .icmp || proto == .icmpv6) {
            var s = "type=\(icmpType) code=\(icmpCode) id=\(icmpID)"
            if let i = inner {
                let ip = L4Protocol(number: i.l4proto)
                s += " inner \(ip == .other(i.l4proto) ? "proto-\(i.l4proto)" : ip.name.description) "
                s += ip.hasPorts && i.hasTransport ? "\(endpoint(i.source, i.sourcePort)) > \(endpoint(i.destination, i.destinationPort))"
                    : "\(i.source) > \(i.destination)"
            }
            parts.append(s)
        }
        if let k = greKey { parts.append("gre v\(greVersion) key=0x\(String(k, radix: 16))") }
        if proto == .sctp && hasTransport { parts.append("vtag=0x\(String(sctpVerificationTag, radix: 16))") }
        if sawAH { parts.append("ah") }
        if sawESP { parts.append("esp") }
        return parts.joined(separator: " ")
    }

    func endpoint(_ a: IPAddress, _ port: UInt16) -> String {
        a.family == .ipv6 ? "[\(a)]:\(port)" : "\(a):\(port)"
    }
}
