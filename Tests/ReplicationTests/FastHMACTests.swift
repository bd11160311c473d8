import Replication
import ReplicationProtocol
import XCTest

final class FastHMACTests: XCTestCase {
    override func tearDown() { HMACKey.accelerated = nil }

    func testLibcryptoGivesTheSameMACAsOurOwn() {
        var g = SystemRandomNumberGenerator()
        let cases: [([UInt8], [UInt8])] = (0..<50).map { i in
            ((0..<(i % 3 == 0 ? 100 : 32)).map { _ in UInt8.random(in: 0...255, using: &g) },
             (0..<(i * 37)).map { _ in UInt8.random(in: 0...255, using: &g) })
        }
        HMACKey.accelerated = nil
        let ours = cases.map { HMACKey($0.0).mac($0.1) }
        FastHMAC.install()
        let theirs = cases.map { HMACKey($0.0).mac($0.1) }
        XCTAssertEqual(ours, theirs)
        // RFC 4231 test case 2, through the accelerated path.
        XCTAssertEqual(HMACKey(Array("Jefe".utf8)).mac(Array("what do ya want for nothing?".utf8)).map { String(format: "%02x", $0) }.joined(),
                       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }
}
