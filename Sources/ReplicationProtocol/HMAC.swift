/// SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104): what frame authentication needs,
/// without a cryptography dependency. Checked against the FIPS and RFC 4231 test vectors
/// (ReplicationProtocolTests).
public struct SHA256: Sendable {
    static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    var h: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19)
    /// The partial block, kept inline (no allocation per hash: frames are hashed by the million).
    var block: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    var filled = 0
    var length: UInt64 = 0

    public init() {}

    public mutating func update<C: Collection>(_ data: C) where C.Element == UInt8 {
        length &+= UInt64(data.count)
        if data.withContiguousStorageIfAvailable({ update(bytes: $0) }) == nil {
            let copy = Array(data)
            copy.withUnsafeBufferPointer { update(bytes: $0) }
        }
    }

    mutating func update(bytes p: UnsafeBufferPointer<UInt8>) {
        var i = 0
        let n = p.count
        var blk = block
        defer { block = blk }
        withUnsafeMutableBytes(of: &blk) { b in
            while i < n {
                // Whole blocks straight from the input when the buffer is empty.
                if filled == 0 && n - i >= 64 {
                    compress(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(p)[i..<(i + 64)]))
                    i += 64
                    continue
                }
                let take = min(64 - filled, n - i)
                b.baseAddress!.advanced(by: filled).copyMemory(from: p.baseAddress!.advanced(by: i), byteCount: take)
                filled += take
                i += take
                if filled == 64 {
                    compress(UnsafeRawBufferPointer(b))
                    filled = 0
                }
            }
        }
    }

    public mutating func finish() -> [UInt8] {
        let bits = length &* 8
        var pad = [UInt8](repeating: 0, count: filled < 56 ? 56 - filled : 120 - filled)
        pad[0] = 0x80
        let saved = length
        pad.withUnsafeBufferPointer { update(bytes: $0) }
        var lenBytes = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { lenBytes[i] = UInt8(truncatingIfNeeded: bits >> (56 - 8 * UInt64(i))) }
        lenBytes.withUnsafeBufferPointer { update(bytes: $0) }
        length = saved
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for v in [h.0, h.1, h.2, h.3, h.4, h.5, h.6, h.7] {
            out += [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
        }
        return out
    }

    public static func hash<C: Collection>(_ data: C) -> [UInt8] where C.Element == UInt8 {
        var s = SHA256()
        s.update(data)
        return s.finish()
    }

    @inline(__always) static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

    /// The round constants, allocated once (a global array lookup in the loop costs bounds checks).
    nonisolated(unsafe) static let kTable: UnsafeMutablePointer<UInt32> = {
        let p = UnsafeMutablePointer<UInt32>.allocate(capacity: 64)
        for i in 0..<64 { p[i] = k[i] }
        return p
    }()

    /// One 64-byte block; the message schedule is a rolling window of 16 words on the stack.
    mutating func compress(_ block: UnsafeRawBufferPointer) {
        let kt = SHA256.kTable
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 16) { wb in
            let w = wb.baseAddress!
            for i in 0..<16 { w[i] = UInt32(bigEndian: block.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
            var (a, b, c, d, e, f, g, hh) = h
            @inline(__always) func round(_ i: Int, _ wi: UInt32) {
                let s1 = SHA256.rotr(e, 6) ^ SHA256.rotr(e, 11) ^ SHA256.rotr(e, 25)
                let ch = (e & f) ^ (~e & g)
                let t1 = hh &+ s1 &+ ch &+ kt[i] &+ wi
                let s0 = SHA256.rotr(a, 2) ^ SHA256.rotr(a, 13) ^ SHA256.rotr(a, 22)
                let maj = (a & b) ^ (a & c) ^ (b & c)
                hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ s0 &+ maj
            }
            for i in 0..<16 { round(i, w[i]) }
            for i in 16..<64 {
                let x = w[(i - 15) & 15], y = w[(i - 2) & 15]
                let s0 = SHA256.rotr(x, 7) ^ SHA256.rotr(x, 18) ^ (x >> 3)
                let s1 = SHA256.rotr(y, 17) ^ SHA256.rotr(y, 19) ^ (y >> 10)
                let wi = w[i & 15] &+ s0 &+ w[(i - 7) & 15] &+ s1
                w[i & 15] = wi
                round(i, wi)
            }
            h = (h.0 &+ a, h.1 &+ b, h.2 &+ c, h.3 &+ d, h.4 &+ e, h.5 &+ f, h.6 &+ g, h.7 &+ hh)
        }
    }
}

/// HMAC-SHA-256 with a fixed key; `mac` over several parts without joining them.
public struct HMACKey: Sendable {
    let inner: SHA256
    let outer: SHA256
    let key: [UInt8]

    /// A faster implementation of the same function (the daemons install libcrypto's, which
    /// uses the CPU's SHA instructions); nil: the pure Swift one here. Both give the same MAC.
    nonisolated(unsafe) public static var accelerated: (@Sendable (_ key: [UInt8], _ data: UnsafeRawBufferPointer) -> [UInt8])?

    public init<C: Collection>(_ key: C) where C.Element == UInt8 {
        self.key = Array(key)
        var k = key.count > 64 ? SHA256.hash(key) : Array(key)
        k += [UInt8](repeating: 0, count: 64 - k.count)
        var i = SHA256(), o = SHA256()
        i.update(k.map { $0 ^ 0x36 })
        o.update(k.map { $0 ^ 0x5c })
        inner = i
        outer = o
    }

    public func mac(_ parts: [ArraySlice<UInt8>]) -> [UInt8] {
        if let fast = HMACKey.accelerated {
            if parts.count == 1 { return parts[0].withUnsafeBytes { fast(key, $0) } }
            return Array(parts.joined()).withUnsafeBytes { fast(key, $0) }
        }
        var i = inner
        for p in parts { i.update(p) }
        var o = outer
        o.update(i.finish())
        return o.finish()
    }

    public func mac<C: Collection>(_ data: C) -> [UInt8] where C.Element == UInt8 { mac([ArraySlice(Array(data))]) }

    /// The MAC of bytes in place (no copy into an array first).
    public func mac(bytes: UnsafeRawBufferPointer) -> [UInt8] {
        if let fast = HMACKey.accelerated { return fast(key, bytes) }
        var i = inner
        i.update(bytes: bytes.bindMemory(to: UInt8.self))
        var o = outer
        o.update(i.finish())
        return o.finish()
    }

    /// Compares in time independent of where the first difference is.
    public static func equal(_ a: ArraySlice<UInt8>, _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for (x, y) in zip(a, b) { d |= x ^ y }
        return d == 0
    }
}
