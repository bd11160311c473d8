#if canImport(Glibc)
import Glibc
#endif

/// Reads a classic pcap file through mmap, handing out frames straight from the mapping.
/// libpcap's file reader copies every record through stdio into its own buffer; for the
/// common case (a classic pcap file on disk) this reader skips both copies. It checks what
/// libpcap checks and reports damage the same way; pcapng, standard input, BPF filters and
/// live captures still go through libpcap.
final class MappedPcap {
    let base: UnsafeRawPointer
    let size: Int
    let swapped: Bool
    let nanoseconds: Bool
    let snaplen: UInt32
    let linkType: Int32
    var offset = 24
    /// Pages before this offset have been given back (see `release`).
    var released = 0

    /// nil when the file is not a classic pcap file (the caller falls back to libpcap).
    init?(path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size >= 24 else { return nil }
        let size = Int(st.st_size)
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else { return nil }
        let raw = UnsafeRawPointer(p)
        let magic = raw.loadUnaligned(as: UInt32.self)
        let swapped: Bool, ns: Bool
        switch magic {
        case 0xa1b2_c3d4: swapped = false; ns = false
        case 0xa1b2_3c4d: swapped = false; ns = true
        case 0xd4c3_b2a1: swapped = true; ns = false
        case 0x4d3c_b2a1: swapped = true; ns = true
        default:
            munmap(p, size)
            return nil
        }
        func u32(_ o: Int) -> UInt32 {
            let v = raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)
            return swapped ? v.byteSwapped : v
        }
        let major = UInt16(truncatingIfNeeded: u32(4) & 0xffff)
        guard major == 2 else { munmap(p, size); return nil }   // let libpcap explain odd versions
        base = raw
        self.size = size
        self.swapped = swapped
        nanoseconds = ns
        snaplen = u32(16)
        // The link type is in the low 16 bits; the rest can carry FCS information.
        linkType = Int32(u32(20) & 0xffff)
        _ = madvise(UnsafeMutableRawPointer(mutating: raw), size, MADV_SEQUENTIAL)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }

    @inline(__always) func u32(_ o: Int) -> UInt32 {
        let v = base.loadUnaligned(fromByteOffset: o, as: UInt32.self)
        return swapped ? v.byteSwapped : v
    }

    enum Record {
        case frame(timestamp: UInt64, data: UnsafeRawBufferPointer, originalLength: Int)
        case end
        /// A libpcap-style message for a damaged record.
        case damaged(String)
    }

    /// Read pages are dropped from the process as the reader moves on (4 MiB at a time,
    /// keeping the last MiB, which holds every frame still handed out), so a large capture
    /// does not sit in the resident set; the file is still mapped and could be re-read.
    static let releaseStep = 4 << 20

    func release() {
        let page = 4096
        let end = (offset - (1 << 20)) / page * page
        guard end > released else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + released), end - released, MADV_DONTNEED)
        released = end
    }

    /// The next record, the end of the file, or what is wrong with the next record.
    @inline(__always) func next() -> Record {
        if offset == size { return .end }
        guard offset + 16 <= size else {
            return .damaged("truncated dump file; tried to read 16 header bytes, only got \(size - offset)")
        }
        let sec = UInt64(u32(offset)), frac = UInt64(u32(offset + 4))
        let caplen = Int(u32(offset + 8)), len = Int(u32(offset + 12))
        // libpcap refuses records longer than the larger of the snaplen and its maximum.
        guard caplen <= max(Int(snaplen), 262_144) else {
            return .damaged("invalid packet capture length \(caplen), bigger than snaplen of \(max(Int(snaplen), 262_144))")
        }
        guard offset + 16 + caplen <= size else {
            return .damaged("truncated dump file; tried to read \(caplen) captured bytes, only got \(size - offset - 16)")
        }
        let data = UnsafeRawBufferPointer(start: base + offset + 16, count: caplen)
        offset += 16 + caplen
        if offset - released >= MappedPcap.releaseStep { release() }
        let ns = sec &* 1_000_000_000 &+ (nanoseconds ? frac : frac &* 1000)
        return .frame(timestamp: ns, data: data, originalLength: max(len, caplen))
    }
}
