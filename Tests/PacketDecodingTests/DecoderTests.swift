import ConntrackCore
import Foundation
import PacketDecoding
import XCTest

final class DecoderTests: XCTestCase {
    typealias B = PacketBuilder

    func decode(_ frame: [UInt8], _ link: LinkType, wire: Int? = nil) -> Result<DecodedPacket, SkipReason> {
        frame.withUnsafeBytes { PacketDecoder(linkType: link.rawValue).decode($0, originalLength: wire) }
    }

    func packet(_ frame: [UInt8], _ link: LinkType, file: StaticString = #filePath, line: UInt = #line) throws -> DecodedPacket {
        switch decode(frame, link) {
        case .success(let p): return p
        case .failure(let r): XCTFail("skipped: \(r.rawValue)", file: file, line: line); throw r
        }
    }

    let syn = B.tcp(sport: 40000, dport: 443, seq: 7, flags: 0x02,
                    options: .init(mss: 1460, windowScale: 7, sackPermitted: true, timestamps: (11, 0)))

    func testEthernetTCPSynWithOptions() throws {
        let p = try packet(B.ethernet(B.ipv4(src: "198.51.100.2", dst: "203.0.113.2", proto: 6, payload: syn)), .ethernet)
        XCTAssertEqual(p.family, .ipv4)
        XCTAssertEqual(p.source, IPAddress("198.51.100.2"))
        XCTAssertEqual(p.tuple, Tuple(source: IPAddress("198.51.100.2")!, destination: IPAddress("203.0.113.2")!, l4proto: 6,
                                      sourcePort: 40000, destinationPort: 443))
        let t = try XCTUnwrap(p.tcp)
        XCTAssertEqual(t.flags, TCPHeader.syn)
        XCTAssertEqual(t.sequence, 7)
        XCTAssertEqual(t.mss, 1460)
        XCTAssertEqual(t.windowScale, 7)
        XCTAssertTrue(t.sackPermitted)
        XCTAssertEqual(t.timestampValue, 11)
        XCTAssertEqual(p.ipChecksumValid, true)
    }

    func testSACKBlocksAndPayloadSlice() throws {
        let seg = B.tcp(sport: 1, dport: 2, flags: 0x18, options: .init(sack: [(100, 200), (300, 400)]), payload: Array("hello".utf8))
        let frame = B.ethernet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 6, payload: seg))
        let p = try packet(frame, .ethernet)
        XCTAssertEqual(p.tcp?.sackBlocks, 2)
        XCTAssertEqual(p.tcp?.sackHighestRightEdge, 400)
        XCTAssertEqual(Array(frame[p.payloadOffset..<(p.payloadOffset + p.payloadLength)]), Array("hello".utf8))
    }

    func testVLANStackOf8021adAnd8021Q() throws {
        let frame = B.ethernet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17, payload: B.udp(sport: 53, dport: 5353)),
                               vlans: [(0x88a8, 100), (0x8100, 200)])
        let p = try packet(frame, .ethernet)
        XCTAssertEqual(p.link.vlanDepth, 2)
        XCTAssertEqual(p.link.outerVLAN, 100)
        XCTAssertEqual(p.link.innerVLAN, 200)
        XCTAssertEqual(p.destinationPort, 5353)
    }

    func testSLL2CarriesDirectionAndInterfaceIndex() throws {
        let ip = B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 6, payload: syn)
        let incoming = try packet(B.sll2(ip, packetType: 0, interfaceIndex: 7), .linuxSLL2)
        XCTAssertEqual(incoming.link.packetType, SLLPacketType.host.rawValue)
        XCTAssertEqual(incoming.link.interfaceIndex, 7)
        let outgoing = try packet(B.sll2(ip, packetType: 4, interfaceIndex: 9), .linuxSLL2)
        XCTAssertEqual(outgoing.link.packetType, SLLPacketType.outgoing.rawValue)
        XCTAssertEqual(outgoing.link.interfaceIndex, 9)
        XCTAssertEqual(outgoing.destinationPort, 443)
    }

    func testSLLAndRawAndNullAndLoop() throws {
        let ip4 = B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17, payload: B.udp(sport: 1, dport: 2))
        let ip6 = B.ipv6(src: "2001:db8::1", dst: "2001:db8::2", proto: 17, payload: B.udp(sport: 3, dport: 4))
        XCTAssertEqual(try packet(B.sll(ip4, packetType: 4), .linuxSLL).link.packetType, 4)
        XCTAssertEqual(try packet(ip4, .raw).destinationPort, 2)
        XCTAssertEqual(try packet(ip6, .raw).family, .ipv6)
        XCTAssertEqual(try packet(ip4, .ipv4).sourcePort, 1)
        XCTAssertEqual(try packet(ip6, .ipv6).sourcePort, 3)
        XCTAssertEqual(try packet(B.null(ip6), .null).destination, IPAddress("2001:db8::2"))
        XCTAssertEqual(try packet(B.loop(ip4), .loop).destination, IPAddress("192.0.2.2"))
    }

    func testIPv6ExtensionHeadersAndFragments() throws {
        let udp = B.udp(sport: 9, dport: 10, payload: [1, 2, 3])
        let withHop = try packet(B.ipv6(src: "2001:db8::1", dst: "2001:db8::2", proto: 17, payload: udp,
                                        extensions: [B.hopByHop()]), .ipv6)
        XCTAssertEqual(withHop.l4proto, 17)
        XCTAssertEqual(withHop.destinationPort, 10)

        let first = try packet(B.ipv6(src: "2001:db8::1", dst: "2001:db8::2", proto: 17, payload: udp,
                                      extensions: [B.fragmentHeader(offset: 0, more: true, id: 0xabcd)]), .ipv6)
        XCTAssertEqual(first.fragment, FragmentInfo(identification: 0xabcd, offset: 0, moreFragments: true))
        XCTAssertTrue(first.hasTransport)

        let later = try packet(B.ipv6(src: "2001:db8::1", dst: "2001:db8::2", proto: 17, payload: [0, 1, 2, 3, 4, 5, 6, 7],
                                      extensions: [B.fragmentHeader(offset: 1232, more: false, id: 0xabcd)]), .ipv6)
        XCTAssertEqual(later.fragment?.offset, 1232)
        XCTAssertFalse(later.hasTransport, "a non-first fragment has no transport header")
    }

    func testIPv4Fragments() throws {
        let first = try packet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17, payload: B.udp(sport: 1, dport: 2, payload: [0, 0, 0, 0, 0, 0, 0, 0]),
                                      id: 77, flagsFragment: 0x2000), .ipv4)
        XCTAssertEqual(first.fragment, FragmentInfo(identification: 77, offset: 0, moreFragments: true))
        XCTAssertTrue(first.hasTransport)
        let last = try packet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17, payload: [9, 9, 9, 9], id: 77, flagsFragment: 2), .ipv4)
        XCTAssertEqual(last.fragment, FragmentInfo(identification: 77, offset: 16, moreFragments: false))
        XCTAssertFalse(last.hasTransport)
    }

    func testICMPErrorQuotesTheInnerHeader() throws {
        let quoted = Array(B.ipv4(src: "198.51.100.2", dst: "203.0.113.2", proto: 17, payload: B.udp(sport: 5000, dport: 9))[0..<28])
        let err = B.icmp(type: 3, code: 3, payload: quoted)
        let p = try packet(B.ipv4(src: "203.0.113.2", dst: "198.51.100.2", proto: 1, payload: err), .ipv4)
        XCTAssertEqual(p.icmpType, 3)
        let inner = try XCTUnwrap(p.inner)
        XCTAssertEqual(inner.source, IPAddress("198.51.100.2"))
        XCTAssertEqual(inner.l4proto, 17)
        XCTAssertEqual(inner.sourcePort, 5000)
        XCTAssertEqual(inner.destinationPort, 9)
        XCTAssertTrue(inner.hasTransport)
        // An echo request quotes nothing.
        XCTAssertNil(try packet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 1, payload: B.icmp(type: 8, code: 0, id: 5)), .ipv4).inner)
    }

    func testGREKeysSCTPDCCPAndUDPLite() throws {
        let gre0 = [0x20, 0x00, 0x08, 0x00] + B.be32(0x1234_5678)
        XCTAssertEqual(try packet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 47, payload: gre0), .ipv4).greKey, 0x1234_5678)
        let gre1 = [0x30, 0x81, 0x88, 0x0b] + B.be16(0) + B.be16(0x4242) + B.be32(1)    // PPTP: key + seq
        let pptp = try packet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 47, payload: gre1), .ipv4)
        XCTAssertEqual(pptp.greVersion, 1)
        XCTAssertEqual(pptp.greKey, 0x4242)
        let sctp = B.be16(5) + B.be16(6) + B.be32(0xdead_beef) + B.be32(0) + [1, 0, 0, 20]
        let s = try packet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 132, payload: sctp), .ipv4)
        XCTAssertEqual(s.sctpVerificationTag, 0xdead_beef)
        XCTAssertEqual(s.sctpFirstChunkType, 1)
        let dccp = B.be16(7) + B.be16(8) + [3, 0, 0, 0] + [0x01, 0, 0, 0] + [0, 0, 0, 0]
        XCTAssertEqual(try packet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 33, payload: dccp), .ipv4).dccpType, 0)
        XCTAssertEqual(try packet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 136, payload: B.udp(sport: 11, dport: 12)), .ipv4).destinationPort, 12)
    }

    func testChecksumVerification() throws {
        let frame = B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 6, payload: syn)
        let p = try packet(frame, .ipv4)
        XCTAssertEqual(frame.withUnsafeBytes { Checksum.verifyTransport(p, in: $0) }, true)
        var bad = frame
        bad[bad.count - 1] ^= 0xff
        let q = try packet(bad, .ipv4)
        XCTAssertEqual(bad.withUnsafeBytes { Checksum.verifyTransport(q, in: $0) }, false)
        var badHeader = frame
        badHeader[8] = 1   // TTL changed, header checksum not updated
        XCTAssertEqual(try packet(badHeader, .ipv4).ipChecksumValid, false)
    }

    // MARK: Robustness: every case is a counted skip, never a crash or an out-of-bounds read.

    func testEveryTruncationOfEveryLinkTypeIsSafe() {
        let ip4 = B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 6, payload: syn)
        let ip6 = B.ipv6(src: "2001:db8::1", dst: "2001:db8::2", proto: 6, payload: syn, extensions: [B.hopByHop()])
        let frames: [([UInt8], LinkType)] = [
            (B.ethernet(ip4, vlans: [(0x8100, 1)]), .ethernet), (B.sll(ip6, packetType: 0), .linuxSLL),
            (B.sll2(ip4, packetType: 4, interfaceIndex: 2), .linuxSLL2), (ip6, .raw), (B.null(ip4), .null),
        ]
        for (frame, link) in frames {
            for cut in 0..<frame.count {
                // Every prefix, as a lying capture (no wire length) and as a snaplen cut.
                let piece = Array(frame[0..<cut])
                _ = decode(piece, link)
                _ = decode(piece, link, wire: frame.count)
            }
        }
    }

    func testLyingLengthIsSkipped() {
        let ip = B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17, payload: B.udp(sport: 1, dport: 2), totalLength: 1500)
        XCTAssertEqual(decode(ip, .ipv4).failureReason, .ipLengthBeyondFrame)
    }

    func testSnaplenCutIsDecodedAsFarAsItGoes() throws {
        let full = B.ethernet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 6, payload: syn + [UInt8](repeating: 0, count: 1000)))
        let cut = Array(full[0..<96])
        guard case .success(let p) = decode(cut, .ethernet, wire: full.count) else { return XCTFail("not decoded") }
        XCTAssertEqual(p.destinationPort, 443)
    }

    func testBadHeadersAreNamed() {
        var badIHL = B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17, payload: B.udp(sport: 1, dport: 2))
        badIHL[0] = 0x43
        XCTAssertEqual(decode(badIHL, .ipv4).failureReason, .badIPHeaderLength)
        var badVersion = badIHL
        badVersion[0] = 0x55
        XCTAssertEqual(decode(badVersion, .ipv4).failureReason, .badIPVersion)
        var badOffset = B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 6, payload: syn)
        badOffset[20 + 12] = 0x20
        XCTAssertEqual(decode(badOffset, .ipv4).failureReason, .badTCPHeaderLength)
        XCTAssertEqual(decode([0x08, 0x06] + [UInt8](repeating: 0, count: 40), .raw).failureReason, .badIPVersion)
        let arp = [UInt8](repeating: 0, count: 12) + [0x08, 0x06] + [UInt8](repeating: 0, count: 28)
        XCTAssertEqual(decode(arp, .ethernet).failureReason, .notIP)
        XCTAssertEqual([UInt8](repeating: 0, count: 40).withUnsafeBytes { PacketDecoder(linkType: 147).decode($0) }.failureReason, .unknownLinkType)
        XCTAssertEqual(decode(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 6, payload: [0, 1, 2]), .ipv4).failureReason, .truncatedTransportHeader)
    }

    func testRandomFramesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50_000 {
            let n = Int.random(in: 0..<120, using: &rng)
            var f = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if n > 0 { f[0] = [0x45, 0x46, 0x60, 0x4f][Int.random(in: 0..<4, using: &rng)] }
            for link in LinkType.allCases { _ = decode(f, link); _ = decode(f, link, wire: n + 100) }
        }
    }
}

extension Result where Failure == SkipReason {
    var failureReason: SkipReason? { if case .failure(let r) = self { return r }; return nil }
}
