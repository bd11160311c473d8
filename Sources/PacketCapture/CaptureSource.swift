import CPcap
#if canImport(Glibc)
import Glibc
#endif

/// A failure opening or reading a capture, with what was read before it.
public struct CaptureError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// The file or interface could not be opened (libpcap's message).
        case open(String)
        /// Reading stopped at a damaged or cut-off record.
        case damaged(frame: Int, message: String)
        /// The BPF filter did not compile.
        case filter(String)
    }
    public var kind: Kind
    public var source: String

    public var description: String {
        switch kind {
        case .open(let m): return "\(source): cannot open capture: \(m)"
        case .damaged(let frame, let m):
            return "\(source): damaged or cut-off capture after frame \(frame - 1) (reading frame \(frame)): \(m)"
        case .filter(let m): return "\(source): bad filter: \(m)"
        }
    }
}

/// One captured frame, valid only during the callback (it points into libpcap's buffer).
public struct CaptureFrame {
    /// 1-based frame number in this source.
    public var number: Int
    /// Nanoseconds since the epoch (microsecond files are scaled).
    public var timestamp: UInt64
    public var data: UnsafeRawBufferPointer
    /// Length on the wire; more than `data.count` when the snaplen cut the frame.
    public var originalLength: Int
}

/// libpcap's counters at the end of a live capture: the model must know what it missed.
public struct CaptureStatistics: Sendable, Equatable {
    public var received: UInt32
    public var droppedByKernel: UInt32
    public var droppedByInterface: UInt32
}

/// A pcap or pcapng file, standard input, or a live interface, read through libpcap.
/// Frames are handed out zero-copy from libpcap's buffer.
public final class CaptureSource {
    let handle: OpaquePointer?
    /// Classic pcap files on disk are read through a mapping instead of libpcap's stdio path.
    let mappedReader: MappedPcap?
    /// The same reader without reference counting: `next()` runs once per frame, and a
    /// retain/release pair there was 6% of `ctsync track`. `mappedReader` keeps it alive.
    let mapped: Unmanaged<MappedPcap>?
    public let name: String
    public let linkType: Int32
    public let isLive: Bool
    @exclusivity(unchecked) public private(set) var framesRead = 0

    /// Opens a pcap or pcapng file ("-" for standard input) with nanosecond timestamps.
    public init(file path: String) throws {
        if path != "-", let m = MappedPcap(path: path) {
            mappedReader = m
            mapped = Unmanaged.passUnretained(m)
            handle = nil
            name = path
            linkType = CaptureSource.linkType(fromDLT: m.linkType)
            isLive = false
            return
        }
        mappedReader = nil
        mapped = nil
        var err = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        let h: OpaquePointer?
        if path == "-" {
            // A FILE for fd 0 of our own, rather than the C global `stdin`.
            guard let input = fdopen(0, "rb") else {
                throw CaptureError(kind: .open(String(cString: strerror(errno))), source: "standard input")
            }
            setvbuf(input, nil, _IOFBF, 1 << 20)
            h = pcap_fopen_offline_with_tstamp_precision(input, UInt32(PCAP_TSTAMP_PRECISION_NANO), &err)
        } else {
            // Our own FILE with a 1 MiB buffer: libpcap reads records through stdio, and the
            // default 4 KiB buffer costs a read(2) every few dozen frames.
            guard let file = fopen(path, "rb") else {
                throw CaptureError(kind: .open(String(cString: strerror(errno))), source: path)
            }
            setvbuf(file, nil, _IOFBF, 1 << 20)
            h = pcap_fopen_offline_with_tstamp_precision(file, UInt32(PCAP_TSTAMP_PRECISION_NANO), &err)
            if h == nil { fclose(file) }
        }
        guard let h else {
            throw CaptureError(kind: .open(CaptureSource.clean(CaptureSource.message(err))), source: path == "-" ? "standard input" : path)
        }
        handle = h
        name = path == "-" ? "standard input" : path
        linkType = CaptureSource.linkType(fromDLT: pcap_datalink(h))
        isLive = false
    }

    /// Opens a live interface ("any" included).
    public init(interface: String, filter: String? = nil, snaplen: Int32 = 262_144, immediate: Bool = true,
                bufferSize: Int32? = nil, promiscuous: Bool = false) throws {
        var err = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard let h = pcap_create(interface, &err) else {
            throw CaptureError(kind: .open(CaptureSource.message(err)), source: interface)
        }
        mappedReader = nil
        mapped = nil
        pcap_set_snaplen(h, snaplen)
        pcap_set_promisc(h, promiscuous ? 1 : 0)
        pcap_set_immediate_mode(h, immediate ? 1 : 0)
        pcap_set_timeout(h, 100)
        pcap_set_tstamp_precision(h, Int32(PCAP_TSTAMP_PRECISION_NANO))
        if let bufferSize { pcap_set_buffer_size(h, bufferSize) }
        let rc = pcap_activate(h)
        if rc < 0 {
            let m = String(cString: pcap_geterr(h))
            pcap_close(h)
            throw CaptureError(kind: .open(m), source: interface)
        }
        // On "any", prefer LINUX_SLL2: it carries the interface index as well as the direction.
        var list: UnsafeMutablePointer<Int32>?
        let n = pcap_list_datalinks(h, &list)
        if n > 0, let list {
            if UnsafeBufferPointer(start: list, count: Int(n)).contains(276) { pcap_set_datalink(h, 276) }
            pcap_free_datalinks(list)
        }
        handle = h
        name = interface
        linkType = CaptureSource.linkType(fromDLT: pcap_datalink(h))
        isLive = true
        if let filter { try apply(filter: filter) }
    }

    deinit { if let handle { pcap_close(handle) } }

    /// libpcap reports DLT_ values; they equal the files' LINKTYPE_ values except DLT_RAW,
    /// which is 12 (14 on OpenBSD) for LINKTYPE_RAW 101.
    static func linkType(fromDLT dlt: Int32) -> Int32 {
        dlt == 12 || dlt == 14 ? 101 : dlt
    }

    /// Compiles and installs a BPF filter.
    public func apply(filter: String) throws {
        guard let handle else {
            throw CaptureError(kind: .filter("filters apply to live captures and pcapng files only"), source: name)
        }
        var prog = bpf_program()
        guard pcap_compile(handle, &prog, filter, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
            throw CaptureError(kind: .filter(String(cString: pcap_geterr(handle))), source: name)
        }
        defer { pcap_freecode(&prog) }
        guard pcap_setfilter(handle, &prog) == 0 else {
            throw CaptureError(kind: .filter(String(cString: pcap_geterr(handle))), source: name)
        }
    }

    /// Calls `body` for each frame until the end of the file (or `stop()` for live captures).
    /// A damaged or cut-off record throws after every good frame before it was delivered.
    public func forEach(_ body: (CaptureFrame) throws -> Void) throws {
        while let frame = try next() { try body(frame) }
    }

    /// The next frame, or nil at the end (or after `stop()`). The frame's bytes stay valid
    /// until the next call on this source.
    public func next() throws -> CaptureFrame? {
        if let mapped {
            switch mapped._withUnsafeGuaranteedRef({ $0.next() }) {
            case .frame(let timestamp, let data, let originalLength):
                framesRead += 1
                return CaptureFrame(number: framesRead, timestamp: timestamp, data: data, originalLength: originalLength)
            case .end:
                return nil
            case .damaged(let message):
                throw CaptureError(kind: .damaged(frame: framesRead + 1, message: message), source: name)
            }
        }
        guard let handle else { return nil }
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        while true {
            let rc = pcap_next_ex(handle, &header, &data)
            switch rc {
            case 1:
                guard let header, let data else { continue }
                framesRead += 1
                let h = header.pointee
                let ns = UInt64(h.ts.tv_sec) &* 1_000_000_000 &+ UInt64(h.ts.tv_usec)   // tv_usec holds ns here
                return CaptureFrame(number: framesRead, timestamp: ns,
                                    data: UnsafeRawBufferPointer(start: data, count: Int(h.caplen)),
                                    originalLength: Int(h.len))
            case 0:
                continue                         // live: the read timeout expired
            case -2:
                return nil                       // end of file, or stop()
            default:
                throw CaptureError(kind: .damaged(frame: framesRead + 1, message: CaptureSource.clean(String(cString: pcap_geterr(handle)))),
                                   source: name)
            }
        }
    }

    /// Ends a live `forEach` loop (safe from a signal handler's flag check or another thread).
    public func stop() { if let handle { pcap_breakloop(handle) } }

    /// Receive and drop counters of a live capture; nil for files.
    public func statistics() -> CaptureStatistics? {
        guard isLive, let handle else { return nil }
        var s = pcap_stat()
        guard pcap_stats(handle, &s) == 0 else { return nil }
        return CaptureStatistics(received: s.ps_recv, droppedByKernel: s.ps_drop, droppedByInterface: s.ps_ifdrop)
    }

    static func message(_ buffer: [CChar]) -> String {
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return clean(String(decoding: bytes, as: UTF8.self))
    }

    /// One line: libpcap's messages sometimes end in a newline.
    static func clean(_ s: String) -> String {
        s.split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}

/// Several captures read as one stream in timestamp order (a k-way merge), for captures
/// taken at once on different interfaces or hosts. Ties keep the order of the sources.
public final class MergedCapture {
    public let sources: [CaptureSource]

    public init(_ sources: [CaptureSource]) { self.sources = sources }

    /// Calls `body` with each frame and the index of its source, oldest first.
    public func forEach(_ body: (Int, CaptureFrame) throws -> Void) throws {
        var heads: [CaptureFrame?] = try sources.map { try $0.next() }
        while true {
            var best = -1
            for (i, h) in heads.enumerated() {
                guard let h else { continue }
                if best < 0 || h.timestamp < heads[best]!.timestamp { best = i }
            }
            guard best >= 0 else { return }
            try body(best, heads[best]!)
            heads[best] = try sources[best].next()
        }
    }
}
