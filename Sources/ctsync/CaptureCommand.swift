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
        @Argument(help: "pcap or pcapng files, - for standard input") var files: [String]
        @Option(name: .shortAndLong, help: "text or json") var output = "text"

        func validate() throws {
            guard output == "text" || output == "json" else { throw ValidationError("-o takes text or json, not \(output)") }
            guard !files.isEmpty else { throw ValidationError("give at least one capture file") }
        }

        func run() throws {
            let progress = isatty(2) != 0
            var failed = false
            for file in files {
                do {
                    let source = try CaptureSource(file: file)
                    let decoder = PacketDecoder(linkType: source.linkType)
                    var summary = CaptureSummary(linkType: source.linkType)
                    var damage: CaptureError?
                    do {
                        try source.forEach { f in
                            summary.add(timestamp: f.timestamp, capturedLength: f.data.count, originalLength: f.originalLength,
                                        result: decoder.decode(f.data, originalLength: f.originalLength))
                            if progress && f.number % 1_000_000 == 0 {
                                printErrorNoNewline("\r\(file): \(f.number / 1_000_000)M frames")
                            }
                        }
                    } catch let e as CaptureError { damage = e }
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

func printErrorNoNewline(_ s: String) {
    _ = s.withCString { Glibc.write(2, $0, strlen($0)) }
}
