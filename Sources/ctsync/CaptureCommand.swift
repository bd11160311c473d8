import ArgumentParser
import Foundation
import PacketCapture
import PacketDecoding
#if canImport(Glibc)
import Glibc
#endif

extension Ctsync {
    struct Capture: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Work with packet captures.", subcommands: [Inspect.self])
    }
}

extension Ctsync.Capture {
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Summarise captures: link type, frames, time span, protocols, and what was skipped and why.")
        @Argument(help: "pcap or pcapng files, - for standard input") var files: [String] = []
        @Option(name: .shortAndLong, help: "text or json") var output = "text"
        @Option(name: [.customShort("i"), .long], help: "capture live on this interface (any for all) instead of reading files")
        var interface: String?
        @Option(help: "BPF filter for a live capture") var filter: String?
        @Flag(help: "also print one line per frame (and per reassembled datagram)") var frames = false
        @Flag(help: "read the files as one capture, merged by timestamp (they must share a link type)") var merge = false
        @Option(name: [.customShort("c"), .long], help: "stop a live capture after this many frames") var count: Int?
        @Option(help: "stop a live capture after this many seconds") var duration: Double?
        @Option(help: "snapshot length of a live capture") var snaplen: Int32 = 262_144
        @Option(help: "kernel buffer size of a live capture, in bytes") var bufferSize: Int32?

        func validate() throws {
            guard output == "text" || output == "json" else { throw ValidationError("-o takes text or json, not \(output)") }
            if interface == nil {
                guard !files.isEmpty else { throw ValidationError("give at least one capture file, or --interface") }
            } else {
                guard files.isEmpty else { throw ValidationError("give files or --interface, not both") }
                guard count != nil || duration != nil else { throw ValidationError("a live capture needs --count or --duration") }
            }
            if let count, count <= 0 { throw ValidationError("--count must be positive") }
            if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        }

        func run() throws {
            if let interface { return try live(interface) }
            if merge { return try merged() }
            let progress = isatty(2) != 0
            var failed = false
            for file in files {
                do {
                    let source = try CaptureSource(file: file)
                    var inspector = FrameInspector(linkType: source.linkType, printFrames: frames)
                    var damage: CaptureError?
                    do {
                        try source.forEach { f in
                            inspector.inspect(f, label: "\(f.number)")
                            if progress && f.number % 1_000_000 == 0 {
                                printErrorNoNewline("\r\(file): \(f.number / 1_000_000)M frames")
                            }
                        }
                    } catch let e as CaptureError { damage = e }
                    let summary = inspector.finish()
                    if progress && summary.frames >= 1_000_000 { printErrorNoNewline("\r\u{1b}[K") }
                    FileHandle.standardOutput.write((output == "json" ? summary.json(name: source.name) : summary.text(name: source.name)).data(using: .utf8)!)
                    if let damage { printError("ctsync: \(damage)"); failed = true }
                } catch let e as CaptureError {
                    printError("ctsync: \(e)")
                    failed = true
                }
            }
            if failed { throw ExitCode(2) }
        }
    }
}

extension Ctsync.Capture.Inspect {
    /// All files as one capture in timestamp order: one summary; --frames shows which file each frame came from.
    func merged() throws {
        let sources: [CaptureSource]
        do { sources = try files.map { try CaptureSource(file: $0) } } catch let e as CaptureError {
            printError("ctsync: \(e)")
            throw ExitCode(2)
        }
        guard Set(sources.map(\.linkType)).count == 1 else {
            printError("ctsync: --merge needs captures of one link type; got " + sources.map { "\($0.name): \($0.linkType)" }.joined(separator: ", "))
            throw ExitCode(2)
        }
        var inspector = FrameInspector(linkType: sources[0].linkType, printFrames: frames)
        var number = 0
        do {
            try MergedCapture(sources).forEach { k, f in
                number += 1
                inspector.inspect(f, label: "\(number) \(sources[k].name)#\(f.number)")
            }
        } catch let e as CaptureError {
            _ = inspector.finish()
            printError("ctsync: \(e)")
            throw ExitCode(2)
        }
        let summary = inspector.finish()
        let name = files.joined(separator: " + ")
        FileHandle.standardOutput.write((output == "json" ? summary.json(name: name) : summary.text(name: name)).data(using: .utf8)!)
    }

    /// A live capture until --count frames or --duration seconds; libpcap's drop counters are reported.
    func live(_ interface: String) throws {
        let source: CaptureSource
        do {
            source = try CaptureSource(interface: interface, filter: filter, snaplen: snaplen, immediate: true, bufferSize: bufferSize)
        } catch let e as CaptureError {
            printError("ctsync: \(e)")
            throw ExitCode(2)
        }
        var inspector = FrameInspector(linkType: source.linkType, printFrames: frames)
        let deadline = duration.map { Date().addingTimeInterval($0) }
        if let deadline {
            // The read timeout returns control every 100 ms; a timer thread ends the loop on time.
            let s = UnsafeSendable(source)
            Thread.detachNewThread {
                Thread.sleep(until: deadline)
                s.value.stop()
            }
        }
        try source.forEach { f in
            inspector.inspect(f, label: "\(f.number)")
            if let count, f.number >= count { source.stop() }
        }
        let summary = inspector.finish()
        var text = output == "json" ? summary.json(name: source.name) : summary.text(name: source.name)
        if let st = source.statistics() {
            if output == "json" {
                text.removeLast(2)
                text += ",\"received\":\(st.received),\"dropped_kernel\":\(st.droppedByKernel),\"dropped_interface\":\(st.droppedByInterface)}\n"
            } else {
                text += "capture drops: \(st.droppedByKernel) by the kernel, \(st.droppedByInterface) by the interface (\(st.received) received)\n"
            }
        }
        FileHandle.standardOutput.write(text.data(using: .utf8)!)
    }
}

/// Decodes frames, counts them, reassembles fragments and (with --frames) prints a line
/// per frame: the work every inspect mode shares. A struct held in a local variable: as a
/// class, Swift's dynamic exclusivity checks on its fields cost 16% of decode time.
struct FrameInspector {
    let decoder: PacketDecoder
    var summary: CaptureSummary
    var packet = DecodedPacket()
    let defrag = Defragmenter()
    let lines = OutputSink()
    let printFrames: Bool

    init(linkType: Int32, printFrames: Bool) {
        decoder = PacketDecoder(linkType: linkType)
        summary = CaptureSummary(linkType: linkType)
        self.printFrames = printFrames
    }

    mutating func inspect(_ f: CaptureFrame, label: @autoclosure () -> String) {
        if let skip = decoder.decode(f.data, originalLength: f.originalLength, into: &packet) {
            summary.add(timestamp: f.timestamp, capturedLength: f.data.count, originalLength: f.originalLength, skipped: skip)
            if printFrames { lines.write("\(label()) \(CaptureSummary.seconds(f.timestamp)) skipped: \(skip.rawValue)\n") }
            return
        }
        summary.add(timestamp: f.timestamp, capturedLength: f.data.count, originalLength: f.originalLength, decoded: packet)
        if printFrames { lines.write("\(label()) \(CaptureSummary.seconds(f.timestamp)) \(packet.line)\n") }
        guard packet.fragment != nil else { return }
        let outcome = defrag.add(packet, frame: f.data, at: f.timestamp)
        summary.count(outcome)
        if printFrames, case .reassembled(let whole) = outcome,
           case .success(let p) = whole.withUnsafeBytes({ PacketDecoder(linkType: LinkType.raw.rawValue).decode($0) }) {
            lines.write("  reassembled: \(p.line)\n")
        }
    }

    /// Flushes the frame lines and returns the summary.
    mutating func finish() -> CaptureSummary {
        lines.flush()
        summary.fragmentsExpired = defrag.expired
        return summary
    }
}

/// Hands a non-Sendable reference to another thread where the callee is known to be thread-safe
/// (pcap_breakloop is documented as callable from another thread).
final class UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}

func printErrorNoNewline(_ s: String) {
    _ = s.withCString { Glibc.write(2, $0, strlen($0)) }
}
