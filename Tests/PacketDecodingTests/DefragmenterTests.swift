import ConntrackCore
import PacketDecoding
import XCTest

/// Reassembly as nf_defrag does it: one whole datagram when the last gap closes.
final class DefragmenterTests: XCTestCase {
    typealias B = PacketBuilder

    let udpPayload = (0..<3000).map { UInt8($0 % 251) }

    /// IPv4 fragments of one UDP datagram: (frame, offset) in sending order.
    func v4Fragments(id: UInt16 = 99, sizes: [Int] = [1000, 1000, 1000]) -> (whole: [UInt8], frames: [[UInt8]]) {
        let whole = B.ipv4(src: "198.51.100.2", dst: "203.0.113.2", proto: 17, payload: B.udp(sport: 4000, dport: 53, payload: udpPayload), id: id, flagsFragment: 0)
        let data = Array(whole[20...])
        var frames: [[UInt8]] = []
        var off = 0
        for (i, size) in sizes.enumerated() {
            let last = i == sizes.count - 1
            let chunk = Array(data[off..<(last ? data.count : off + size)])
            frames.append(B.ipv4(src: "198.51.100.2", dst: "203.0.113.2", proto: 17, payload: chunk, id: id,
                                 flagsFragment: UInt16(off / 8) | (last ? 0 : 0x2000)))
            off += size
        }
        return (whole, frames)
    }

    func feed(_ d: Defragmenter, _ frame: [UInt8], at t: UInt64 = 1, link: LinkType = .raw) -> Defragmenter.Outcome {
        frame.withUnsafeBytes { buf in
            guard case .success(let p) = PacketDecoder(linkType: link.rawValue).decode(buf) else { XCTFail("undecodable"); return .dropped(.malformed) }
            return d.add(p, frame: buf, at: t)
        }
    }

    func testIPv4FragmentsOutOfOrderGiveTheOriginalDatagram() throws {
        let (whole, frames) = v4Fragments(sizes: [1000, 1000, 1000])
        let d = Defragmenter()
        XCTAssertEqual(feed(d, frames[2]), .held)
        XCTAssertEqual(feed(d, frames[0]), .held)
        guard case .reassembled(let out) = feed(d, frames[1]) else { return XCTFail("not reassembled") }
        XCTAssertEqual(out, whole)
        XCTAssertEqual(d.pendingDatagrams, 0)
        let p = try out.withUnsafeBytes { try PacketDecoder(linkType: LinkType.raw.rawValue).decode($0).get() }
        XCTAssertEqual(p.networkLength, 3028, "the tracker sees one packet of 3028 bytes, as the kernel counts it")
        XCTAssertEqual(p.destinationPort, 53)
        XCTAssertNil(p.fragment)
        XCTAssertEqual(p.ipChecksumValid, true)
    }

    func testIPv6FragmentsGiveOneDatagramWithoutTheFragmentHeader() throws {
        let udp = B.withL4Checksum(B.udp(sport: 4000, dport: 53, payload: udpPayload), proto: 17,
                                   src: B.v6("2001:db8:1::2"), dst: B.v6("2001:db8:2::2"))
        let whole = B.ipv6(src: "2001:db8:1::2", dst: "2001:db8:2::2", proto: 17, payload: udp)
        let d = Defragmenter()
        var outcome: Defragmenter.Outcome = .held
        for (off, size) in [(0, 1232), (1232, 1232), (2464, udp.count - 2464)] {
            let last = off + size == udp.count
            let frame = B.ipv6(src: "2001:db8:1::2", dst: "2001:db8:2::2", proto: 17, payload: Array(udp[off..<(off + size)]),
                               extensions: [B.fragmentHeader(offset: off, more: !last, id: 7)])
            outcome = feed(d, frame)
        }
        guard case .reassembled(let out) = outcome else { return XCTFail("not reassembled: \(outcome)") }
        XCTAssertEqual(out, whole)
        XCTAssertEqual(out.count, 3048, "IPv6 in 3 fragments: one packet of 3048 bytes")
    }

    func testOverlapDropsTheDatagramAndDuplicatesAreIgnored() {
        let (_, frames) = v4Fragments(sizes: [1000, 1000, 1000])
        let d = Defragmenter()
        XCTAssertEqual(feed(d, frames[0]), .held)
        XCTAssertEqual(feed(d, frames[0]), .held, "an exact duplicate changes nothing")
        let overlapping = B.ipv4(src: "198.51.100.2", dst: "203.0.113.2", proto: 17, payload: [UInt8](repeating: 7, count: 16),
                                 id: 99, flagsFragment: UInt16(992 / 8) | 0x2000)
        XCTAssertEqual(feed(d, overlapping), .dropped(.overlap))
        XCTAssertEqual(d.pendingDatagrams, 0)
        XCTAssertEqual(feed(d, frames[1]), .held, "a later fragment starts a new queue")
    }

    func testIncompleteDatagramsExpire() {
        let (_, frames) = v4Fragments()
        let d = Defragmenter(ipv4TimeoutSeconds: 30)
        XCTAssertEqual(feed(d, frames[0], at: 1_000_000_000), .held)
        XCTAssertEqual(feed(d, frames[1], at: 20_000_000_000), .held)
        // 31 s after the first fragment the queue is gone: the last one alone completes nothing.
        XCTAssertEqual(feed(d, frames[2], at: 32_000_000_000), .held)
        XCTAssertEqual(d.expired, 1)
        XCTAssertEqual(d.pendingDatagrams, 1)
    }

    func testMemoryLimit() {
        let d = Defragmenter(memoryLimit: 1500)
        let (_, a) = v4Fragments(id: 1)
        let (_, b) = v4Fragments(id: 2)
        XCTAssertEqual(feed(d, a[0]), .held)
        XCTAssertEqual(feed(d, b[0]), .dropped(.memoryLimit))
    }

    func testNonLastFragmentsMustBeMultiplesOf8() {
        let odd = B.ipv4(src: "198.51.100.2", dst: "203.0.113.2", proto: 17, payload: [UInt8](repeating: 1, count: 13), id: 5, flagsFragment: 0x2000)
        XCTAssertEqual(feed(Defragmenter(), odd), .dropped(.malformed))
    }

    func testIPv6DestinationOptionsAfterTheFragmentHeaderStayInThePayload() throws {
        // Fragmentable part = destination options (8 bytes) + UDP.
        let udp = B.udp(sport: 4000, dport: 53, payload: [UInt8](repeating: 5, count: 40))
        let dstopts: [UInt8] = [17, 0, 1, 4, 0, 0, 0, 0]
        let fragmentable = dstopts + udp
        let d = Defragmenter()
        var outcome: Defragmenter.Outcome = .held
        for (off, size) in [(0, 24), (24, fragmentable.count - 24)] {
            let last = off + size == fragmentable.count
            var fh = B.fragmentHeader(offset: off, more: !last, id: 3)
            fh.1[0] = 60    // next header of the fragmentable part: destination options
            let frame = [0x60, 0, 0, 0] + B.be16(UInt16(8 + size)) + [44, 64] + B.v6("2001:db8::1") + B.v6("2001:db8::2")
                + fh.1 + Array(fragmentable[off..<(off + size)])
            outcome = feed(d, frame)
        }
        guard case .reassembled(let out) = outcome else { return XCTFail("not reassembled: \(outcome)") }
        XCTAssertEqual(out[6], 60, "the IPv6 header now points at the destination options")
        XCTAssertEqual(Array(out[40...]), fragmentable)
        let p = try out.withUnsafeBytes { try PacketDecoder(linkType: LinkType.raw.rawValue).decode($0).get() }
        XCTAssertEqual(p.l4proto, 17)
        XCTAssertEqual(p.destinationPort, 53)
    }
}
