import ConntrackCore
@testable import KernelConntrack
import XCTest

/// The netlink codec works on bytes only: encode with MessageBuilder, decode, compare.
final class CodecTests: XCTestCase {
    func encodeEntryAttributes(_ e: ConntrackEntry) -> [UInt8] { CtNetlinkCodec.encodeEntryAttributes(e) }

    func sample() -> ConntrackEntry {
        let o = Tuple(source: IPAddress("2001:db8::1")!, destination: IPAddress("2001:db8::2")!, l4proto: 6,
                      sourcePort: 40000, destinationPort: 443, zone: 2)
        var e = ConntrackEntry(original: o, reply: o.inverted())
        e.status = [.seenReply, .assured, .confirmed]
        e.timeout = 431999
        e.mark = 0xdeadbeef
        e.zone = 2
        e.protoInfo = .tcp(TCPInfo(state: 3, windowScaleOriginal: 7, windowScaleReply: 9,
                                   flagsOriginal: TCPFlagsMask(flags: 0x23, mask: 0x23), flagsReply: TCPFlagsMask(flags: 0x22, mask: 0x22)))
        e.labels = Labels(bits: [1, 100])
        return e
    }

    func testEncodedEntryDecodesToTheSameEntry() throws {
        let e = sample()
        let bytes = encodeEntryAttributes(e)
        let back = try bytes.withUnsafeBytes { try CtNetlinkCodec.decodeEntry(family: 10, attributes: $0) }
        XCTAssertEqual(back, e)
    }

    func testEveryTruncationIsRejectedOrDecodedWithoutReadingPastTheEnd() {
        let bytes = encodeEntryAttributes(sample())
        for cut in 0..<bytes.count {
            let prefix = Array(bytes[0..<cut])
            // Must not crash; may throw or succeed with fewer fields.
            _ = try? prefix.withUnsafeBytes { try CtNetlinkCodec.decodeEntry(family: 10, attributes: $0) }
        }
    }

    func testALengthPastTheBufferIsMalformed() {
        var bytes = encodeEntryAttributes(sample())
        bytes[0] = 0xff; bytes[1] = 0x7f       // first attribute claims 32 KiB
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try CtNetlinkCodec.decodeEntry(family: 10, attributes: $0) }) { error in
            guard case .malformed = (error as? ConntrackError)?.kind else { return XCTFail("\(error)") }
        }
    }

    func testAnEntryWithoutOriginalTupleIsMalformed() {
        var b = MessageBuilder()
        b.attrBE32(CTA.mark, 1)
        XCTAssertThrowsError(try b.bytes.withUnsafeBytes { try CtNetlinkCodec.decodeEntry(family: 2, attributes: $0) })
    }

    func testRandomBytesNeverCrashTheDecoders() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20000 {
            let n = Int.random(in: 0..<96, using: &rng)
            var bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Bias towards plausible attribute headers.
            if n >= 4 { bytes[0] = UInt8(n); bytes[1] = 0 }
            _ = try? bytes.withUnsafeBytes { try CtNetlinkCodec.decodeEntry(family: 2, attributes: $0) }
            _ = try? bytes.withUnsafeBytes { try CtNetlinkCodec.decodeExpectation(attributes: $0) }
            var events: [ConntrackEvent] = []
            _ = try? bytes.withUnsafeBytes { try EventStream.decode($0, into: &events) }
        }
    }

    func testEventKindsFromMessageTypeAndFlags() throws {
        func message(type: UInt16, flags: UInt16) -> [UInt8] {
            var b = MessageBuilder()
            b.begin(subsystem: NL.subsysConntrack, type: type, flags: flags, sequence: 0, family: 10)
            b.bytes += encodeEntryAttributes(sample())
            b.end()
            return b.bytes
        }
        var events: [ConntrackEvent] = []
        let datagram = message(type: CtMsg.new, flags: NL.create | NL.excl) + message(type: CtMsg.new, flags: 0)
            + message(type: CtMsg.delete, flags: 0)
        try datagram.withUnsafeBytes { try EventStream.decode($0, into: &events) }
        XCTAssertEqual(events, [.entry(.new, sample()), .entry(.update, sample()), .entry(.destroy, sample())])
    }
}

/// Records: the attributes kept as they came, for forwarding.
extension CodecTests {
    func testTheTimeoutIsFoundAmongTheAttributes() throws {
        var b = MessageBuilder()
        b.attrBE32(CTA.mark, 1)
        b.attrBE32(CTA.timeout, 0x01020304)
        let at = try XCTUnwrap(b.bytes.withUnsafeBytes { CtNetlinkCodec.timeoutOffset(in: $0) })
        XCTAssertEqual(Array(b.bytes[at..<(at + 4)]), [1, 2, 3, 4])
        XCTAssertNil([UInt8]().withUnsafeBytes { CtNetlinkCodec.timeoutOffset(in: $0) })
    }

    func testEventsCanKeepTheirRecords() throws {
        let attrs = encodeEntryAttributes(sample())
        var b = MessageBuilder()
        b.begin(subsystem: NL.subsysConntrack, type: CtMsg.new, flags: NL.create, sequence: 0, family: 10)
        b.bytes += attrs
        b.end()
        var records: [[UInt8]?] = []
        try b.bytes.withUnsafeBytes { try EventStream.decode($0, keepingRecords: true) { _, r in records.append(r) } }
        XCTAssertEqual(records, [[10] + attrs])
    }
}
