import ConntrackCore
import Glibc
import XCTest

final class AddressTests: XCTestCase {
    /// glibc's inet_ntop, the reference our text output must equal.
    func ntop(_ a: IPAddress) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        let bytes = a.bytes
        bytes.withUnsafeBytes { p in
            _ = inet_ntop(a.family == .ipv4 ? AF_INET : AF_INET6, p.baseAddress, &buf, 64)
        }
        return String(cString: buf)
    }

    func testIPv6TextMatchesGlibcOnEveryZeroRunShape() {
        // Every pattern of zero / non-zero words, plus the embedded-IPv4 forms.
        for mask in 0..<256 {
            var w = [UInt16](repeating: 0, count: 8)
            for k in 0..<8 where mask & (1 << k) != 0 { w[k] = UInt16(0x100 * k + 1) }
            let a = IPAddress(bytes: w.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] })!
            XCTAssertEqual(a.description, ntop(a), "words \(w)")
            XCTAssertEqual(IPAddress(a.description), a, "round trip of \(a)")
        }
        for text in ["::ffff:192.0.2.1", "::192.0.2.1", "2001:db8::1", "::", "::1", "fe80::1:0:0:1"] {
            let a = IPAddress(text)!
            XCTAssertEqual(a.description, ntop(a))
        }
    }

    func testBadAddressesAreRejected() {
        for bad in ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1::2::3", ":::", "12345::", "1:2:3:4:5:6:7:8:9", "g::1", "1.2.3.4/"] {
            XCTAssertNil(IPAddress(bad), bad)
        }
    }

    func testNetworkContainment() {
        let n = IPNetwork("198.51.100.0/24")!
        XCTAssertTrue(n.contains(IPAddress("198.51.100.77")!))
        XCTAssertFalse(n.contains(IPAddress("198.51.101.1")!))
        XCTAssertFalse(n.contains(IPAddress("2001:db8::1")!))
        let v6 = IPNetwork("2001:db8:1::/48")!
        XCTAssertTrue(v6.contains(IPAddress("2001:db8:1:ffff::1")!))
        XCTAssertFalse(v6.contains(IPAddress("2001:db8:2::1")!))
        XCTAssertNil(IPNetwork("192.0.2.0/33"))
        XCTAssertTrue(IPNetwork("0.0.0.0/0")!.contains(IPAddress("203.0.113.9")!))
    }
}
