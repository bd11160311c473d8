import ArgumentParser
import Foundation
import Logging
import ConntrackCore
import KernelConntrack
#if canImport(Glibc)
import Glibc
#endif

@main
struct Ctsync: ParsableCommand {
    /// Log to stderr; CTSYNC_LOG=debug|info|notice|warning|error sets the level (default
    /// error for commands, info for daemons).
    static let logging: Void = bootstrapLogging(default: .error)

    nonisolated(unsafe) static var loggingStarted = false

    static func bootstrapLogging(default level: Logger.Level) {
        guard !loggingStarted else { return }
        loggingStarted = true
        let level = ProcessInfo.processInfo.environment["CTSYNC_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? level
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }

    /// Argument errors end in one line on stderr and exit status 2, like every other bad
    /// input (not the parser's usage block and status 64); --help still prints in full.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                let first = message(for: error).split(separator: "\n").first.map(String.init) ?? "bad arguments"
                printError("ctsync: " + first.replacingOccurrences(of: "Error: ", with: ""))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "ctsync",
        abstract: "See, trust and sync Linux connection-tracking state.",
        discussion: """
        Table commands take conntrack(8)'s filter and output options, for example
          ctsync dump -p tcp --state ESTABLISHED -s 192.0.2.0/24 -o json
          ctsync conntrack -L -o extended      (a drop-in for conntrack 1.4.7)
        Writes are refused in the host's own network namespace unless --host-table is given.
        """,
        subcommands: [Dump.self, Get.self, Create.self, Update.self, Delete.self, Flush.self,
                      Count.self, Stats.self, Events.self, Conntrack.self, Show.self, Capture.self, Track.self, Diff.self, Sync.self, Snapshot.self,
                      Watch.self, Replicate.self]
    )
}

/// A subcommand that hands its arguments to conntrack's option parser with the command fixed.
protocol TableCommand: ParsableCommand {
    static var fixedCommand: ConntrackArguments.Command { get }
    var arguments: [String] { get }
}

extension TableCommand {
    func run() throws {
        _ = Ctsync.logging
        // The arguments pass through to conntrack's parser, so help is answered here.
        if arguments.first == "--help" || arguments.first == "-h" {
            print(Ctsync.helpMessage(for: Self.self))
            return
        }
        let names = LazyLabels()
        let parsed: ConntrackArguments
        do {
            parsed = try ConntrackArguments.parse(arguments, fixed: Self.fixedCommand, labelNames: names.get)
        } catch let o as OtherProblem {
            printError("ctsync: \(o)")
            throw ExitCode(1)
        } catch {
            printError("ctsync: \(error)")
            throw ExitCode(2)
        }
        let status = ConntrackRunner(args: parsed, program: "ctsync").run()
        if status != 0 { throw ExitCode(status) }
    }
}

/// Reads connlabel.conf only when a label is used.
final class LazyLabels {
    private var loaded = false
    private var names: [Int: String]?
    func get() -> [Int: String]? {
        if !loaded { names = LabelMap.load(); loaded = true }
        return names
    }
}

extension Ctsync {
    struct Dump: TableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the conntrack, expect, dying or unconfirmed table (streamed, bounded memory).",
            discussion: "Options as conntrack -L: [TABLE] -s -d -r -q -p --sport --dport --state -u -m -w -f -n -g -j -z -o text|extended|json|save|xml")
        static let fixedCommand = ConntrackArguments.Command.list
        @Argument(parsing: .captureForPassthrough, help: "conntrack -L options") var arguments: [String] = []
    }
    struct Get: TableCommand {
        static let configuration = CommandConfiguration(abstract: "Read one entry by its full tuple (conntrack -G).")
        static let fixedCommand = ConntrackArguments.Command.get
        @Argument(parsing: .captureForPassthrough, help: "conntrack -G options") var arguments: [String] = []
    }
    struct Create: TableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an entry (conntrack -I).")
        static let fixedCommand = ConntrackArguments.Command.create
        @Argument(parsing: .captureForPassthrough, help: "conntrack -I options") var arguments: [String] = []
    }
    struct Update: TableCommand {
        static let configuration = CommandConfiguration(abstract: "Change mark, status, timeout or labels of matching entries (conntrack -U).")
        static let fixedCommand = ConntrackArguments.Command.update
        @Argument(parsing: .captureForPassthrough, help: "conntrack -U options") var arguments: [String] = []
    }
    struct Delete: TableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete matching entries in netlink batches (conntrack -D).")
        static let fixedCommand = ConntrackArguments.Command.delete
        @Argument(parsing: .captureForPassthrough, help: "conntrack -D options") var arguments: [String] = []
    }
    struct Flush: TableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete every entry or expectation (conntrack -F).")
        static let fixedCommand = ConntrackArguments.Command.flush
        @Argument(parsing: .captureForPassthrough, help: "conntrack -F options") var arguments: [String] = []
    }
    struct Count: TableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the number of entries (conntrack -C).")
        static let fixedCommand = ConntrackArguments.Command.count
        @Argument(parsing: .captureForPassthrough, help: "conntrack -C options") var arguments: [String] = []
    }
    struct Stats: TableCommand {
        static let configuration = CommandConfiguration(abstract: "Per-CPU statistics (conntrack -S).")
        static let fixedCommand = ConntrackArguments.Command.stats
        @Argument(parsing: .captureForPassthrough, help: "conntrack -S options") var arguments: [String] = []
    }
    struct Events: TableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Follow events (conntrack -E); overflows are reported as gaps, --resync re-dumps and prints what changed.")
        static let fixedCommand = ConntrackArguments.Command.event
        @Argument(parsing: .captureForPassthrough, help: "conntrack -E options, -b BYTES, --resync") var arguments: [String] = []
    }

    struct Conntrack: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A drop-in for conntrack(8) 1.4.7: same commands, options, output and exit status; adds -A and -R.")
        @Argument(parsing: .captureForPassthrough, help: "conntrack arguments") var arguments: [String] = []

        func run() throws {
            _ = Ctsync.logging
            let program = "conntrack v1.4.7 (conntrack-tools)"
            let names = LazyLabels()
            let parsed: ConntrackArguments
            do {
                parsed = try ConntrackArguments.parse(arguments, lenient: true, labelNames: names.get)
            } catch let o as OtherProblem {
                printError("\(program): \(o)")
                throw ExitCode(1)
            } catch {
                printError("\(program): \(error)")
                printError("Try `conntrack -h' or 'conntrack --help' for more information.")
                throw ExitCode(2)
            }
            let status = ConntrackRunner(args: parsed, program: program).run()
            if status != 0 { throw ExitCode(status) }
        }
    }
}

extension Ctsync {
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a JSON-lines snapshot (from `ctsync dump -o json`) in another format.")
        @Argument(help: "JSON-lines file, or - for standard input") var file: String
        @Option(name: .shortAndLong, help: "text|extended|save|xml|json, with conntrack's -o modifiers") var output = "text"

        func run() throws {
            let parsed: ConntrackArguments
            do {
                parsed = try ConntrackArguments.parse(["-o", output], fixed: .list, labelNames: { LabelMap.load() })
            } catch {
                printError("ctsync show: \(error)")
                throw ExitCode(2)
            }
            let runner = ConntrackRunner(args: parsed, program: "ctsync show")
            let entries: [ConntrackEntry]
            do { entries = try SnapshotContents.read(file).entries } catch {
                printError("ctsync show: \(error)")
                throw ExitCode(2)
            }
            var xmlOpen = false
            let opts = runner.textOptions()
            for e in entries {
                runner.write(e, event: nil, options: opts, save: ConntrackSave.Options(), xmlOpen: &xmlOpen)
            }
            if xmlOpen { runner.out.write(ConntrackXML.footer) }
            runner.out.flush()
        }
    }
}
