/// conntrack(8)'s userspace filter vocabulary, matched against entries:
/// every field that is set must match (logical AND), as in conntrack -L.
public struct EntryFilter: Sendable, Equatable {
    public var family: AddressFamily?
    public var l4proto: UInt8?
    public var originalSource: IPNetwork?
    public var originalDestination: IPNetwork?
    public var replySource: IPNetwork?
    public var replyDestination: IPNetwork?
    public var originalSourcePort: UInt16?
    public var originalDestinationPort: UInt16?
    public var replySourcePort: UInt16?
    public var replyDestinationPort: UInt16?
    public var icmpType: UInt8?
    public var icmpCode: UInt8?
    public var icmpID: UInt16?
    public var tcpState: TCPState?
    /// All of these status bits must be set.
    public var status: Status?
    public var mark: UInt32?
    public var markMask: UInt32 = 0xffff_ffff
    public var zone: UInt16?
    public var originalZone: UInt16?
    public var replyZone: UInt16?
    /// Source NAT applied; with an address (and port), to that one.
    public var sourceNAT: NATMatch?
    public var destinationNAT: NATMatch?
    public var anyNAT: NATMatch?
    /// Every one of these labels must be set.
    public var labels: Labels?
    public var secmark: UInt32?
    public var id: UInt32?

    public struct NATMatch: Sendable, Equatable {
        public var address: IPAddress?
        public var port: UInt16?
        public init(address: IPAddress? = nil, port: UInt16? = nil) { self.address = address; self.port = port }
    }

    public init() {}

    public var isEmpty: Bool { self == EntryFilter() }

    public func matches(_ e: ConntrackEntry) -> Bool {
        let o = e.original, r = e.reply
        if let f = family, o.family != f { return false }
        if let p = l4proto, o.l4proto != p { return false }
        if let n = originalSource, !n.contains(o.source) { return false }
        if let n = originalDestination, !n.contains(o.destination) { return false }
        if let n = replySource, !n.contains(r.source) { return false }
        if let n = replyDestination, !n.contains(r.destination) { return false }
        if let p = originalSourcePort, o.sourcePort != p || !o.l4.hasPorts { return false }
        if let p = originalDestinationPort, o.destinationPort != p || !o.l4.hasPorts { return false }
        if let p = replySourcePort, r.sourcePort != p || !r.l4.hasPorts { return false }
        if let p = replyDestinationPort, r.destinationPort != p || !r.l4.hasPorts { return false }
        if let t = icmpType, o.icmpType != t { return false }
        if let c = icmpCode, o.icmpCode != c { return false }
        if let i = icmpID, o.icmpID != i { return false }
        if let s = tcpState, e.tcpState != s { return false }
        if let s = status, !(e.status ?? []).isSuperset(of: s) { return false }
        if let m = mark, (e.mark ?? 0) & markMask != m & markMask { return false }
        if let z = zone, (e.zone ?? 0) != z { return false }
        if let z = originalZone, (o.zone ?? 0) != z { return false }
        if let z = replyZone, (r.zone ?? 0) != z { return false }
        if let m = sourceNAT, !natMatches(m, source: true, e) { return false }
        if let m = destinationNAT, !natMatches(m, source: false, e) { return false }
        if let m = anyNAT, !natMatches(m, source: true, e) && !natMatches(m, source: false, e) { return false }
        if let l = labels {
            let have = e.labels ?? Labels()
            if have.low & l.low != l.low || have.high & l.high != l.high { return false }
        }
        if let s = secmark, e.secmark != s { return false }
        if let i = id, e.id != i { return false }
        return true
    }

    func natMatches(_ m: NATMatch, source: Bool, _ e: ConntrackEntry) -> Bool {
        let natted = source ? (e.status?.contains(.srcNAT) ?? e.isSourceNAT) : (e.status?.contains(.dstNAT) ?? e.isDestinationNAT)
        guard natted else { return false }
        // The translated address is the reply destination for SNAT, the reply source for DNAT.
        let addr = source ? e.reply.destination : e.reply.source
        let port = source ? e.reply.destinationPort : e.reply.sourcePort
        if let a = m.address, a != addr { return false }
        if let p = m.port, p != port { return false }
        return true
    }
}
