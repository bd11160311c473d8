import Foundation
import PacketCapture
import PacketDecoding
import XCTest

/// Reading pcap files through libpcap: frames, nanosecond times, and damaged files.
final class CaptureFileTests: XCTestCase {
    typealias B = PacketBuilder

    func write(_ bytes: [UInt8]) throws -> String {
        let path = NSTemporaryDirectory() + "ctsync-test-\(UUID().uuidString).pcap"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func frames() -> [(ns: UInt64, bytes: [UInt8], wireLength: Int?)] {
        (0..<3).map { i in
            (ns: 1_700_000_000_123_456_789 + UInt64(i), bytes: B.ethernet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17,
                                                                              payload: B.udp(sport: UInt16(1000 + i), dport: 53))), wireLength: nil)
        }
    }

    func testFramesAndNanosecondTimestamps() throws {
        let source = try CaptureSource(file: try write(B.pcap(linkType: 1, frames: frames())))
        XCTAssertEqual(source.linkType, LinkType.ethernet.rawValue)
        var seen: [(Int, UInt64, UInt16)] = []
        let decoder = PacketDecoder(linkType: source.linkType)
        try source.forEach { f in
            guard case .success(let p) = decoder.decode(f.data, originalLength: f.originalLength) else { return XCTFail() }
            seen.append((f.number, f.timestamp, p.sourcePort))
        }
        XCTAssertEqual(seen.map(\.0), [1, 2, 3])
        XCTAssertEqual(seen.map(\.1), [1_700_000_000_123_456_789, 1_700_000_000_123_456_790, 1_700_000_000_123_456_791])
        XCTAssertEqual(seen.map(\.2), [1000, 1001, 1002])
    }

    func testACutOffFileDeliversWhatIsWholeThenNamesTheFrame() throws {
        let whole = B.pcap(linkType: 1, frames: frames())
        let source = try CaptureSource(file: try write(Array(whole[0..<(whole.count - 10)])))
        var delivered = 0
        XCTAssertThrowsError(try source.forEach { _ in delivered += 1 }) { error in
            guard case .damaged(let frame, _) = (error as? CaptureError)?.kind else { return XCTFail("\(error)") }
            XCTAssertEqual(frame, 3)
        }
        XCTAssertEqual(delivered, 2)
    }

    func testANonPcapFileIsRefused() throws {
        XCTAssertThrowsError(try CaptureSource(file: try write(Array("not a capture\n".utf8)))) { error in
            guard case .open(let m) = (error as? CaptureError)?.kind else { return XCTFail("\(error)") }
            XCTAssertFalse(m.contains("\n"))
        }
    }

    func testSummaryCountsProtocolsDirectionsAndSkips() {
        var s = CaptureSummary(linkType: LinkType.linuxSLL2.rawValue)
        let d = PacketDecoder(linkType: LinkType.linuxSLL2.rawValue)
        let good = B.sll2(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 6, payload: B.tcp(sport: 1, dport: 2)), packetType: 4, interfaceIndex: 3)
        let bad = Array(good[0..<30])
        for (t, f) in [(UInt64(5), good), (2, bad), (9, good)] {
            s.add(timestamp: t, capturedLength: f.count, originalLength: f.count, result: f.withUnsafeBytes { d.decode($0) })
        }
        XCTAssertEqual(s.frames, 3)
        XCTAssertEqual(s.byProtocol[6], 2)
        XCTAssertEqual(s.byPacketType[4], 2)
        XCTAssertEqual(s.skipped, [.truncatedIPHeader: 1])
        XCTAssertEqual(s.firstTimestamp, 2)
        XCTAssertEqual(s.lastTimestamp, 9)
        XCTAssertTrue(s.text(name: "x").contains("directions: outgoing 2"))
        XCTAssertTrue(s.json(name: "x").contains("\"skipped\":{\"truncated IP header\":1}"))
    }

    func testMergeReadsSeveralFilesInTimestampOrder() throws {
        func frame(_ port: UInt16) -> [UInt8] {
            B.ethernet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17, payload: B.udp(sport: port, dport: 53)))
        }
        let a = try write(B.pcap(linkType: 1, frames: [(ns: 10, bytes: frame(1), wireLength: nil), (ns: 30, bytes: frame(3), wireLength: nil)]))
        let b = try write(B.pcap(linkType: 1, frames: [(ns: 20, bytes: frame(2), wireLength: nil), (ns: 40, bytes: frame(4), wireLength: nil)]))
        let merged = MergedCapture([try CaptureSource(file: a), try CaptureSource(file: b)])
        let decoder = PacketDecoder(linkType: 1)
        var order: [(Int, UInt64, UInt16)] = []
        try merged.forEach { k, f in
            guard case .success(let p) = decoder.decode(f.data) else { return XCTFail() }
            order.append((k, f.timestamp, p.sourcePort))
        }
        XCTAssertEqual(order.map(\.0), [0, 1, 0, 1])
        XCTAssertEqual(order.map(\.1), [10, 20, 30, 40])
        XCTAssertEqual(order.map(\.2), [1, 2, 3, 4])
    }

    /// Classic pcap in the other byte order and with microsecond stamps, as old tools write it.
    func testBigEndianMicrosecondPcap() throws {
        func be32(_ v: UInt32) -> [UInt8] { B.be32(v) }
        let frame = B.ethernet(B.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17, payload: B.udp(sport: 7, dport: 53)))
        var file = be32(0xa1b2_c3d4) + B.be16(2) + B.be16(4) + be32(0) + be32(0) + be32(65535) + be32(1)
        file += be32(1_700_000_000) + be32(250_000) + be32(UInt32(frame.count)) + be32(UInt32(frame.count)) + frame
        let source = try CaptureSource(file: try write(file))
        var stamps: [UInt64] = []
        try source.forEach { stamps.append($0.timestamp) }
        XCTAssertEqual(stamps, [1_700_000_000_250_000_000])
    }

    func testARecordLongerThanAnySnaplenIsDamage() throws {
        var file = B.pcap(linkType: 1, frames: frames())
        // First record's caplen (offset 24 + 8) set to 1 MiB.
        file.replaceSubrange(32..<36, with: withUnsafeBytes(of: UInt32(1 << 20).littleEndian) { Array($0) })
        let source = try CaptureSource(file: try write(file))
        XCTAssertThrowsError(try source.forEach { _ in }) { error in
            guard case .damaged(let frame, let m) = (error as? CaptureError)?.kind else { return XCTFail("\(error)") }
            XCTAssertEqual(frame, 1)
            XCTAssertTrue(m.contains("invalid packet capture length"), m)
        }
    }
}
