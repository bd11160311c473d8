import ConntrackCore
import ReplicationProtocol
import XCTest

final class HMACTests: XCTestCase {
    func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    func testSHA256MatchesTheFIPSVectors() {
        XCTAssertEqual(hex(SHA256.hash(Array("abc".utf8))), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(hex(SHA256.hash([UInt8]())), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(hex(SHA256.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    func testHMACMatchesRFC4231() {
        let key = HMACKey([UInt8](repeating: 0x0b, count: 20))
        XCTAssertEqual(hex(key.mac(Array("Hi There".utf8))), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        let long = HMACKey([UInt8](repeating: 0xaa, count: 131))
        XCTAssertEqual(hex(long.mac(Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))),
                       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }
}

final class FrameTests: XCTestCase {
    let key = HMACKey(Array("correct horse battery staple".utf8))

    func frames(_ n: Int, from first: Int = 1) -> [UInt8] {
        (first..<(first + n)).flatMap { FrameCodec.encode(Frame(type: .alive, sequence: UInt64($0)), key: key) }
    }

    func testFramesArriveWholeWhateverTheChunking() throws {
        let bytes = FrameCodec.encode(Frame(type: .ack, sequence: 1, payload: [0, 0, 0, 0, 0, 0, 0, 9]), key: key) + frames(3, from: 2)
        var r = FrameReader(key: key)
        var got: [Frame] = []
        for b in bytes {                           // one byte at a time
            r.append([b])
            while let f = try r.next() { got.append(f) }
        }
        XCTAssertEqual(got.first, Frame(type: .ack, sequence: 1, payload: [0, 0, 0, 0, 0, 0, 0, 9]))
        XCTAssertEqual(got.map(\.sequence), [1, 2, 3, 4])
    }

    func testAWrongKeyIsRejected() {
        var r = FrameReader(key: HMACKey(Array("another key".utf8)))
        r.append(frames(1))
        XCTAssertThrowsError(try r.next()) { XCTAssertEqual(($0 as? FrameError)?.message, "authentication failed (wrong key or altered frame)") }
    }

    func testAnAlteredByteIsRejected() {
        var b = FrameCodec.encode(Frame(type: .entry, sequence: 1, payload: Array("xyz".utf8)), key: key)
        b[21] ^= 1
        var r = FrameReader(key: key)
        r.append(b)
        XCTAssertThrowsError(try r.next())
    }

    func testAReplayedSequenceIsRejectedAndTheReaderStaysFailed() throws {
        let one = FrameCodec.encode(Frame(type: .alive, sequence: 1), key: key)
        var r = FrameReader(key: key)
        r.append(one + one)
        XCTAssertNotNil(try r.next())
        XCTAssertThrowsError(try r.next()) { XCTAssertEqual(($0 as? FrameError)?.message, "replayed frame (sequence 1, expected 2)") }
        r.append(FrameCodec.encode(Frame(type: .alive, sequence: 2), key: key))
        XCTAssertThrowsError(try r.next(), "nothing is accepted after an error")
    }

    func testABadLengthIsRejectedBeforeAnyPayloadIsRead() {
        var b = FrameCodec.encode(Frame(type: .alive, sequence: 1), key: key)
        b[8] = 0x7f                              // 2 GB payload announced
        var r = FrameReader(key: key)
        r.append(b.prefix(FrameCodec.headerSize))
        XCTAssertThrowsError(try r.next()) { XCTAssertTrue(($0 as? FrameError)?.message.contains("over the") == true) }
    }

    func testRandomBytesAreRejectedAtOnce() {
        var g = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var r = FrameReader(key: key)
            let junk = (0..<Int.random(in: 1...200, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
            r.append(junk)
            // Either more bytes are awaited (a prefix of the magic) or the frame is refused; never a frame.
            let f = try? r.next()
            XCTAssertNil(f ?? nil)
        }
    }

    func testSessionKeysDifferPerConnection() {
        let a = Hello.sessionKey(psk: key, initiator: [1], responder: [2]).mac([9])
        let b = Hello.sessionKey(psk: key, initiator: [1], responder: [3]).mac([9])
        XCTAssertNotEqual(a, b)
        let h = Hello(nonce: Array(repeating: 7, count: 16), features: 5, node: "fw-a")
        XCTAssertEqual(try Hello(payload: h.payload), h)
        XCTAssertThrowsError(try Hello(payload: [1, 2, 3]))
    }

    func testEntryPayloadsAreLossless() throws {
        let o = Tuple(source: IPAddress("192.0.2.1")!, destination: IPAddress("198.51.100.2")!, l4proto: 6, sourcePort: 1, destinationPort: 2)
        var e = ConntrackEntry(original: o, reply: o.inverted())
        e.labels = Labels(bits: [1, 100]); e.zone = 3; e.countersOriginal = Counters(packets: 5, bytes: 6)
        e.protoInfo = .tcp(TCPInfo(state: 3, windowScaleOriginal: 7, windowScaleReply: 9))
        let (ev, back) = try FramePayload.decodeEntry(FramePayload.entry(e, .update))
        XCTAssertEqual(ev, .update)
        XCTAssertEqual(back, e)
        XCTAssertThrowsError(try FramePayload.decodeEntry([9]))
        XCTAssertThrowsError(try FramePayload.decodeEntry([0] + Array("{}".utf8)))
    }
}

final class EntryBatchTests: XCTestCase {
    func batch(_ records: [[UInt8]]) -> EntryBatch {
        var b = EntryBatch(event: .update)
        for r in records { r.withUnsafeBytes { b.append(family: 2, attributes: $0) } }
        return b
    }

    func testRecordsComeBackAsTheyWent() throws {
        let b = batch([[1, 2, 3], [], [9]])
        let (event, records) = try EntryBatch.records(b.payload)
        XCTAssertEqual(event, .update)
        XCTAssertEqual(records.map { Array(b.payload[$0.attributes]) }, [[1, 2, 3], [], [9]])
        XCTAssertEqual(records.map(\.family), [2, 2, 2])
    }

    func testARecordThatOverrunsIsRefused() {
        var p = batch([[1, 2, 3]]).payload
        p.removeLast()
        XCTAssertThrowsError(try EntryBatch.records(p)) {
            XCTAssertEqual(($0 as? FrameError)?.message, "entry batch: record at byte 1 claims 3 bytes, 2 remain")
        }
        XCTAssertThrowsError(try EntryBatch.records([0, 2, 0]), "a record header cut off")
        XCTAssertThrowsError(try EntryBatch.records([7]), "an event byte out of range")
        XCTAssertThrowsError(try EntryBatch.records([]))
    }

    func testABatchStopsGrowingAtItsLimit() {
        var b = batch([[UInt8](repeating: 0, count: 1000)])
        XCTAssertFalse(b.isFull(adding: EntryBatch.limit - 1010))
        XCTAssertTrue(b.isFull(adding: EntryBatch.limit))
        b = EntryBatch(event: .new)
        XCTAssertFalse(b.isFull(adding: 60000), "an empty batch takes any record that fits")
        XCTAssertFalse(EntryBatch.fits(70000))
    }

    func testAReaderKeepsOnlyWhatItHasNotRead() throws {
        let key = HMACKey([1, 2, 3])
        var r = FrameReader(key: key)
        let big = [UInt8](repeating: 5, count: 40000)
        let stream = (1...50).flatMap { FrameCodec.encode(Frame(type: .entryBatch, sequence: UInt64($0), payload: big), key: key) }
        var got = 0
        for at in stride(from: 0, to: stream.count, by: 30000) {   // 2 MB, never cut at a frame's end
            r.append(stream[at..<min(at + 30000, stream.count)])
            while let f = try r.next() { XCTAssertEqual(f.payload.count, 40000); got += 1 }
        }
        XCTAssertEqual(got, 50)
        XCTAssertLessThan(r.bufferCapacityForTests, 300_000)
    }
}

final class ConntrackdWireTests: XCTestCase {
    func entry() -> ConntrackEntry {
        let o = Tuple(source: IPAddress("10.1.0.1")!, destination: IPAddress("10.1.0.2")!, l4proto: 6, sourcePort: 1111, destinationPort: 22)
        var e = ConntrackEntry(original: o, reply: o.inverted())
        e.status = [.assured, .confirmed]
        e.protoInfo = .tcp(TCPInfo(state: 3))
        e.timeout = 120
        e.mark = 42
        return e
    }

    func testTheDocumentedExampleMessage() throws {
        // peers.md (b): version 1, CT_NEW, HELLO, 84 bytes: IPV4, STATUS, L4PROTO, PORT, TCP_STATE, TIMEOUT, MARK, SYNPROXY.
        var e = entry()
        e.synproxy = Synproxy(isn: 0, its: 0, tsoff: 0)
        let m = ConntrackdWire.encode(.entryNew, e, flags: .hello, sequence: 77)
        XCTAssertEqual(Array(m[0..<4]), [0x10, 0x20, 0x00, 0x54])
        XCTAssertEqual(m.count, 84)
        guard case .entry(.entryNew, let back, let flags, 77) = try ConntrackdWire.decode(m[...]) else { return XCTFail() }
        XCTAssertEqual(flags, .hello)
        XCTAssertEqual(back, e)
    }

    func testNATIsCarriedAsTheReplyTuplesDifferences() throws {
        var e = entry()
        e.reply.destination = IPAddress("203.0.113.1")!       // masquerade
        e.reply.destinationPort = 40000
        e.status = [.assured, .confirmed, .srcNAT, .srcNATDone, .dstNATDone]
        e.helper = "ftp"
        e.labels = Labels(bits: [0, 33])
        e.zone = 9
        let m = ConntrackdWire.encode(.entryUpdate, e, sequence: 1)
        guard case .entry(.entryUpdate, let back, _, _) = try ConntrackdWire.decode(m[...]) else { return XCTFail() }
        XCTAssertEqual(back, e)
    }

    func testWhatConntrackdRejectsIsRejected() {
        var long = entry()
        long.helper = "a-long-helper-name"                     // 18 bytes + NUL: over 16 with the header
        let m = ConntrackdWire.encode(.entryNew, long, sequence: 1)
        XCTAssertThrowsError(try ConntrackdWire.decode(m[...]))
        var bad = ConntrackdWire.encode(.entryNew, entry(), sequence: 1)
        bad[0] = 0x20                                          // version 2
        XCTAssertThrowsError(try ConntrackdWire.decode(bad[...]))
        var unknown = ConntrackdWire.encode(.entryNew, entry(), sequence: 1)
        unknown[10] = 0; unknown[11] = 33                     // first attribute's type: 33
        XCTAssertThrowsError(try ConntrackdWire.decode(unknown[...]))
        let cut = ConntrackdWire.encode(.entryNew, entry(), sequence: 1)
        for n in 0..<cut.count { XCTAssertThrowsError(try ConntrackdWire.decode(cut[..<n]), "prefix \(n)") }
    }

    func testControlMessagesAndSplitting() throws {
        let ack = ConntrackdWire.control(.ack, from: 5, to: 9, sequence: 10)
        let alive = ConntrackdWire.control(.alive, sequence: 11)
        XCTAssertEqual(ack.count, 16)
        XCTAssertEqual(alive.count, 8)
        let data = ack + alive + ConntrackdWire.encode(.entryNew, entry(), sequence: 12)
        let (parts, rest) = try ConntrackdWire.split(Array(data.dropLast(3)))
        XCTAssertEqual(parts.count, 2, "the cut-off entry waits for its last bytes")
        XCTAssertEqual(rest, data.count - 3 - 24)
        XCTAssertEqual(try ConntrackdWire.decode(parts[0]), .control(.ack, from: 5, to: 9, sequence: 10))
        XCTAssertEqual(try ConntrackdWire.decode(parts[1]), .control(.alive, from: 0, to: 0, sequence: 11))
    }
}

final class SyncLinkAnalyzerTests: XCTestCase {
    func entry(_ sport: UInt16) -> ConntrackEntry {
        let o = Tuple(source: IPAddress("10.1.0.1")!, destination: IPAddress("10.1.0.2")!, l4proto: 17, sourcePort: sport, destinationPort: 53)
        var e = ConntrackEntry(original: o, reply: o.inverted())
        e.status = [.confirmed]
        e.timeout = 30
        return e
    }

    func testAGapAnsweredByANackIsRecoveredAndOneWithoutIsNamed() {
        var a = SyncLinkAnalyzer()
        _ = a.add(ConntrackdWire.encode(.entryNew, entry(1), flags: .hello, sequence: 100), from: "192.0.2.1", to: "192.0.2.2", time: "1")
        let lines = a.add(ConntrackdWire.encode(.entryNew, entry(2), sequence: 103), from: "192.0.2.1", to: "192.0.2.2", time: "2")
        XCTAssertEqual(lines.first, "2 192.0.2.1 > 192.0.2.2 GAP: sequence 101…102 missing (2 messages)")
        _ = a.add(ConntrackdWire.control(.nack, from: 101, to: 102, sequence: 5000), from: "192.0.2.2", to: "192.0.2.1", time: "3")
        _ = a.add(ConntrackdWire.encode(.entryDelete, entry(1), sequence: 110), from: "192.0.2.1", to: "192.0.2.2", time: "4")
        let summary = a.summary()
        XCTAssertTrue(summary.contains("192.0.2.1: 2 sequence gaps, 8 messages missing from the capture; 1 of the gaps were asked for again (NACK); 1 never asked for: the receiver is missing those changes unless a later resync carried them"), "\(summary)")
        XCTAssertTrue(summary.contains("192.0.2.1: its receiver should hold 1 entries from what was sent"), "\(summary)")
    }

    func testANackNotFollowedByAsManyMessagesPointsAtTheResendQueue() {
        var a = SyncLinkAnalyzer()
        _ = a.add(ConntrackdWire.encode(.entryNew, entry(1), flags: .hello, sequence: 100), from: "s", to: "r", time: "1")
        _ = a.add(ConntrackdWire.encode(.entryNew, entry(2), sequence: 106), from: "s", to: "r", time: "2")
        _ = a.add(ConntrackdWire.control(.nack, from: 101, to: 105, sequence: 7), from: "r", to: "s", time: "3")
        _ = a.add(ConntrackdWire.encode(.entryNew, entry(3), sequence: 107), from: "s", to: "r", time: "4")
        let summary = a.summary()
        XCTAssertTrue(summary.contains("s: 1 NACKs asked for 5 messages again but only 1 data messages followed: its resend queue had lost them (ResendQueueSize overflow), or the capture ended first"), "\(summary)")
    }

    func testGarbageIsCountedAsRefused() {
        var a = SyncLinkAnalyzer()
        let lines = a.add([0x20, 0, 0, 8, 0, 0, 0, 1], from: "x", to: "y", time: "0")
        XCTAssertTrue(lines.first?.contains("refused") == true)
        XCTAssertEqual(a.senders["x"]?.refused, 1)
    }
}
