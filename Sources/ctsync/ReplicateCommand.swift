import ArgumentParser
import ConntrackCore
import Dispatch
import Foundation
import KernelConntrack
import Logging
import PacketCapture
import PacketDecoding
import Replication
import ReplicationProtocol
#if canImport(Glibc)
import Glibc
#endif

extension Ctsync {
    struct Replicate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Keep a standby node's conntrack state in step with the active node's (authenticated, over TCP).",
            discussion: """
            On the active node:   ctsync replicate active --peer 192.0.2.2:7890 --key-file /etc/ctsync/key
            On the standby:       ctsync replicate standby --listen 192.0.2.2:7890 --key-file /etc/ctsync/key
            Then, on the standby: ctsync replicate status | ready --max-lag N | commit | resync | flush
            The standby keeps the active node's table in an external cache; `commit` writes it into
            its kernel (before the virtual address moves to it). docs/replication-protocol.md.
            """,
            subcommands: [Active.self, Standby.self, Status.self, Ready.self, Commit.self, Resync.self, Flush.self, Decode.self])
    }
}

/// Options shared by the daemons.
struct DaemonOptions: ParsableArguments {
    @Option(help: "file holding the pre-shared key (at least 16 bytes; needed for ctsync peers)") var keyFile: String?
    @Option(help: "this node's name in the peers' logs") var name: String = ProcessInfo.processInfo.hostName
    @Option(help: "control socket path") var control = "/run/ctsync-replicate.sock"
    @Option(help: "serve Prometheus metrics on ADDR:PORT (/metrics)") var metrics: String?

    /// Runs a daemon until SIGINT or SIGTERM: starts it, answers its control socket (`status`
    /// and `ready N` for every daemon, `commands` for the rest), serves metrics when asked,
    /// then stops everything.
    func serve(_ program: String, describing what: String, status: @escaping @Sendable (UInt64) -> NodeStatus,
               commands: [String: @Sendable () -> String], start: () throws -> Void, stop: () -> Void) throws {
        let control: ControlServer
        do {
            try start()
            control = try ControlServer(path: self.control) { line in
                let words = line.split(separator: " ")
                switch words.first.map(String.init) {
                case "status"?: return "ok\n" + status(0).lines.joined(separator: "\n")
                case "ready"?:
                    let st = status(words.count > 1 ? UInt64(words[1]) ?? 0 : 0)
                    return (st.ready ? "ok\n" : "error: not ready\n") + st.lines.joined(separator: "\n")
                case let c? where commands[c] != nil: return commands[c]!()
                default: return "error: this daemon answers " + (["status", "ready N"] + commands.keys.sorted()).joined(separator: ", ")
                }
            }
        } catch {
            printError("\(program): \(error)")
            throw ExitCode(2)
        }
        control.start()
        let server = try serveMetrics(program) { status(0).prometheus }
        printError("\(program): \(what); control socket \(self.control)")
        waitForTermination()
        server?.stop()
        control.stop()
        stop()
    }

    /// Starts the metrics server when asked.
    func serveMetrics(_ program: String, _ render: @escaping @Sendable () -> String) throws -> MetricsServer? {
        guard let metrics else { return nil }
        do {
            let m = try MetricsServer(address: metrics, render: render)
            m.start()
            return m
        } catch {
            printError("\(program): --metrics \(metrics): \(error)")
            throw ExitCode(2)
        }
    }

    /// The key, required when `needed` (ctsync peers); otherwise unused random bytes.
    func key(_ program: String, needed: Bool = true) throws -> [UInt8] {
        guard let keyFile else {
            if !needed { return (0..<32).map { _ in UInt8.random(in: 0...255) } }
            printError("\(program): --key-file is needed to talk to ctsync peers")
            throw ExitCode(2)
        }
        guard let data = FileManager.default.contents(atPath: keyFile) else {
            printError("\(program): cannot read the key file \(keyFile)")
            throw ExitCode(2)
        }
        var k = Array(data)
        while let last = k.last, last == 10 || last == 13 { k.removeLast() }
        guard k.count >= 16 else {
            printError("\(program): the key in \(keyFile) is \(k.count) bytes; at least 16 are needed")
            throw ExitCode(2)
        }
        return k
    }
}

/// A conntrackd peer: `LOCAL:PORT,PEER:PORT` (IPv4; conntrackd's UDP channel uses one port
/// on both ends) and its sync mode.
struct ConntrackdOptions: ParsableArguments {
    @Option(help: "also speak conntrackd's sync protocol over UDP: LOCAL-ADDR:PORT,PEER-ADDR:PORT (e.g. 192.0.2.2:3780,192.0.2.1:3780)")
    var conntrackd: String?
    @Option(help: "conntrackd sync mode: ftfw or notrack") var conntrackdMode = "ftfw"

    func endpoints(_ program: String) throws -> ((String, Int), (String, Int), ConntrackdLink.Mode)? {
        guard let conntrackd else { return nil }
        let parts = conntrackd.split(separator: ",").map(String.init)
        guard parts.count == 2, let local = parseEndpoint(parts[0]), let peer = parseEndpoint(parts[1]) else {
            printError("\(program): --conntrackd takes LOCAL-ADDR:PORT,PEER-ADDR:PORT, not `\(conntrackd)'")
            throw ExitCode(2)
        }
        guard let mode = ConntrackdLink.Mode(rawValue: conntrackdMode) else {
            printError("\(program): --conntrackd-mode takes ftfw or notrack, not `\(conntrackdMode)'")
            throw ExitCode(2)
        }
        return (local, peer, mode)
    }

    func link(_ program: String, logger: String) throws -> ConntrackdLink? {
        guard let (local, peer, mode) = try endpoints(program) else { return nil }
        do {
            return try ConntrackdLink(local: local, peer: peer, mode: mode, logger: Logger(label: logger))
        } catch {
            printError("\(program): --conntrackd: \(error)")
            throw ExitCode(2)
        }
    }
}

/// HOST:PORT or [IPv6]:PORT.
func parseEndpoint(_ s: String) -> (String, Int)? {
    if s.hasPrefix("["), let close = s.firstIndex(of: "]"), s[s.index(after: close)...].hasPrefix(":"),
       let port = Int(s[s.index(close, offsetBy: 2)...]), (1...65535).contains(port) {
        return (String(s[s.index(after: s.startIndex)..<close]), port)
    }
    guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (1...65535).contains(port),
          !s[..<colon].isEmpty, !s[..<colon].contains(":") else { return nil }
    return (String(s[..<colon]), port)
}

/// Runs until SIGINT or SIGTERM.
func waitForTermination() {
    let done = DispatchSemaphore(value: 0)
    var sources: [DispatchSourceSignal] = []
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        s.setEventHandler { done.signal() }
        s.resume()
        sources.append(s)
    }
    done.wait()
    _ = sources
}

extension Ctsync.Replicate {
    struct Active: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Follow this node's table (dump, then ctnetlink events) and stream it to the standbys.")
        @Option(help: "a standby's HOST:PORT (repeatable)") var peer: [String] = []
        @OptionGroup var conntrackdOptions: ConntrackdOptions
        @Option(name: .customLong("where"), parsing: .unconditional, help: "conntrack -L filters: only matching entries are replicated")
        var filterText: String?
        @Option(help: "seconds between comparisons of the table with what the standbys hold (catches changes no event reported)")
        var refresh: Int64 = 10
        @Option(help: "ADDR or ADDR/LEN: entries with this address at either end are not replicated (repeatable; conntrackd's Address Ignore)")
        var ignoreAddress: [String] = []
        @Option(help: "event socket receive buffer in bytes (an overflow makes a full re-send)") var eventBuffer = 8 << 20
        @OptionGroup var daemon: DaemonOptions

        func validate() throws {
            for p in peer where parseEndpoint(p) == nil {
                printError("ctsync replicate active: --peer takes HOST:PORT, not `\(p)'")
                throw ExitCode(2)
            }
            if let m = daemon.metrics, MetricsServer.parse(m) == nil {
                printError("ctsync replicate active: --metrics takes ADDR:PORT, not `\(m)'")
                throw ExitCode(2)
            }
            if peer.isEmpty && conntrackdOptions.conntrackd == nil {
                printError("ctsync replicate active: give at least one --peer HOST:PORT (or --conntrackd)")
                throw ExitCode(2)
            }
            _ = try conntrackdOptions.endpoints("ctsync replicate active")
            for a in ignoreAddress where IPNetwork(a) == nil {
                printError("ctsync replicate active: --ignore-address takes ADDR or ADDR/LEN, not `\(a)'")
                throw ExitCode(2)
            }
            if !(4096...(1 << 30)).contains(eventBuffer) {
                printError("ctsync replicate active: --event-buffer takes bytes from 4096 to 1073741824")
                throw ExitCode(2)
            }
            if !(1...86_400).contains(refresh) {
                printError("ctsync replicate active: --refresh takes seconds from 1 to 86400")
                throw ExitCode(2)
            }
        }

        func run() throws {
            Ctsync.bootstrapLogging(default: .info)
            let key = try daemon.key("ctsync replicate active", needed: !peer.isEmpty)
            let filter = try TableSides.filter(filterText, program: "ctsync replicate active")
            let udpLinks = try conntrackdOptions.endpoints("ctsync replicate active").map { [$0.1] } ?? []
            let ignored = ignoreAddress.compactMap(IPNetwork.init)
            let node = ActiveNode(psk: key, name: daemon.name, peers: peer.compactMap(parseEndpoint), udpLinks: udpLinks,
                                  refresh: refresh, eventBuffer: eventBuffer,
                                  filter: { e in
                                      let o = e.original, r = e.reply
                                      if ignored.contains(where: { n in [o.source, o.destination, r.source, r.destination].contains { n.contains($0) } }) { return false }
                                      return filter?.matches(e) ?? true
                                  })
            if let v = try? String(contentsOfFile: "/proc/sys/net/netfilter/nf_conntrack_events", encoding: .utf8),
               v.trimmingCharacters(in: .whitespacesAndNewlines) == "2" {
                printError("ctsync replicate active: note: nf_conntrack_events=2: entries older than this process send no events; " +
                           "their changes reach the standbys with the comparison every \(refresh) s (set it to 1 to have them at once)")
            }
            let link = try conntrackdOptions.link("ctsync replicate active", logger: "ctsync.replicate.conntrackd")
            let targets = (peer + [conntrackdOptions.conntrackd.map { "conntrackd " + $0 }].compactMap { $0 }).joined(separator: ", ")
            try daemon.serve("ctsync replicate active", describing: "streaming to \(targets)", status: node.status,
                             commands: ["resync": { "ok\nbulk transfer to \(node.resync()) standbys" }],
                             start: {
                                 try node.start()
                                 if let link { node.attach(link) }
                             },
                             stop: node.stop)
        }
    }

    struct Standby: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Accept the active node's stream and keep its table in an external cache (or --inject it).")
        @Option(help: "HOST:PORT to listen on for ctsync active nodes") var listen: String?
        @OptionGroup var conntrackdOptions: ConntrackdOptions
        @Flag(help: "write every change into this node's kernel at once instead of caching it") var inject = false
        @Flag(help: "allow writing to the host's own conntrack table (commit, --inject)") var hostTable = false
        @Option(help: "seconds between anti-entropy digests sent to the active node") var digestInterval: Int64 = 30
        @OptionGroup var daemon: DaemonOptions

        func validate() throws {
            if let listen, parseEndpoint(listen) == nil {
                printError("ctsync replicate standby: --listen takes HOST:PORT, not `\(listen)'")
                throw ExitCode(2)
            }
            if let m = daemon.metrics, MetricsServer.parse(m) == nil {
                printError("ctsync replicate standby: --metrics takes ADDR:PORT, not `\(m)'")
                throw ExitCode(2)
            }
            if listen == nil && conntrackdOptions.conntrackd == nil {
                printError("ctsync replicate standby: give --listen HOST:PORT (or --conntrackd)")
                throw ExitCode(2)
            }
            _ = try conntrackdOptions.endpoints("ctsync replicate standby")
        }

        func run() throws {
            Ctsync.bootstrapLogging(default: .info)
            let key = try daemon.key("ctsync replicate standby", needed: listen != nil)
            guard (1...86_400).contains(digestInterval) else {
                printError("ctsync replicate standby: --digest-interval takes seconds from 1 to 86400")
                throw ExitCode(2)
            }
            let node = StandbyNode(psk: key, name: daemon.name, inject: inject, allowHostTable: hostTable, digestInterval: digestInterval)
            let hostTable = self.hostTable
            let link = try conntrackdOptions.link("ctsync replicate standby", logger: "ctsync.replicate.conntrackd")
            let sources = ([listen] + [conntrackdOptions.conntrackd.map { "conntrackd " + $0 }]).compactMap { $0 }.joined(separator: ", ")
            try daemon.serve("ctsync replicate standby", describing: "listening on \(sources)", status: node.status,
                             commands: [
                                 "commit": {
                                     do {
                                         let o = try Replication.Commit.run(node.cache, allowHostTable: hostTable)
                                         let line = "committed \(o.written) entries and \(o.expectationsWritten) expectations in \(String(format: "%.3f", o.seconds)) s"
                                         return o.failed == 0 ? "ok\n" + line : "error: \(o.failed) writes failed (first: \(o.firstError ?? "?"))\n" + line
                                     } catch {
                                         return "error: commit: \(error)"
                                     }
                                 },
                                 "flush": { node.cache.flush(); return "ok\nexternal cache flushed" },
                                 "resync": { "ok\nasked \(node.requestResync()) active nodes for a bulk transfer" },
                             ],
                             start: {
                                 if let listen, let (host, port) = parseEndpoint(listen) { try node.start(host: host, port: port) }
                                 if let link { node.attach(link) }
                             },
                             stop: node.stop)
        }
    }

    /// The control-socket commands: one line to the daemon, its answer printed.
    struct ControlOptions: ParsableArguments {
        @Option(help: "control socket path") var control = "/run/ctsync-replicate.sock"
    }

    static func ask(_ control: String, _ command: String, program: String) throws {
        let answer: String
        do { answer = try ControlServer.ask(control, command) } catch {
            printError("\(program): \(error)")
            throw ExitCode(2)
        }
        var lines = answer.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        guard let first = lines.first else {
            printError("\(program): the daemon closed the connection without an answer")
            throw ExitCode(2)
        }
        for l in lines.dropFirst() { print(l) }
        if first != "ok" {
            printError("\(program): \(first.hasPrefix("error: ") ? String(first.dropFirst(7)) : first)")
            throw ExitCode(1)
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Peers, lag, bulk transfers and cache size of the local daemon.")
        @OptionGroup var options: ControlOptions
        func run() throws { try Ctsync.Replicate.ask(options.control, "status", program: "ctsync replicate status") }
    }

    struct Ready: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Exit 0 when the node is in step (for keepalived's track_script), 1 otherwise.")
        @Option(help: "frames not yet acknowledged (active) or not yet received (standby) that still count as in step")
        var maxLag: UInt64 = 0
        @OptionGroup var options: ControlOptions
        func run() throws { try Ctsync.Replicate.ask(options.control, "ready \(maxLag)", program: "ctsync replicate ready") }
    }

    struct Commit: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the standby's external cache into its kernel (timeouts shortened by the time since each entry arrived; TCP entries marked liberal).")
        @OptionGroup var options: ControlOptions
        func run() throws { try Ctsync.Replicate.ask(options.control, "commit", program: "ctsync replicate commit") }
    }

    struct Resync: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ask for (standby) or send (active) a full bulk transfer.")
        @OptionGroup var options: ControlOptions
        func run() throws { try Ctsync.Replicate.ask(options.control, "resync", program: "ctsync replicate resync") }
    }

    struct Flush: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Empty the standby's external cache.")
        @OptionGroup var options: ControlOptions
        func run() throws { try Ctsync.Replicate.ask(options.control, "flush", program: "ctsync replicate flush") }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print and check a capture of a conntrackd sync link: messages, sequence gaps, NACKs, what the receiver should hold.")
        @Argument(help: "pcap or pcapng file of the sync link (UDP)") var capture: String
        @Option(help: "conntrackd's UDP port") var port: UInt16 = 3780
        @Flag(name: .shortAndLong, help: "only the summary") var quiet = false

        func run() throws {
            let source: CaptureSource
            do { source = try CaptureSource(file: capture) } catch {
                printError("ctsync replicate decode: \(error)")
                throw ExitCode(2)
            }
            let decoder = PacketDecoder(linkType: source.linkType)
            var packet = DecodedPacket()
            var analyzer = SyncLinkAnalyzer()
            let out = OutputSink()
            var datagrams = 0
            do {
                while let f = try source.next() {
                    guard decoder.decode(f.data, originalLength: f.originalLength, into: &packet) == nil,
                          packet.l4proto == 17, packet.hasTransport, packet.destinationPort == port || packet.sourcePort == port else { continue }
                    let end = min(f.data.count, packet.networkOffset + packet.networkLength)
                    guard packet.payloadOffset <= end else { continue }
                    datagrams += 1
                    let payload = Array(f.data[packet.payloadOffset..<end])
                    let lines = analyzer.add(payload, from: "\(packet.source)", to: "\(packet.destination)",
                                             time: CaptureSummary.seconds(f.timestamp))
                    if !quiet { for l in lines { out.write(l); out.lineDone() } }
                }
            } catch {
                out.flush()
                printError("ctsync replicate decode: \(error)")
                throw ExitCode(2)
            }
            out.write("\(datagrams) datagrams on UDP port \(port)")
            out.lineDone()
            for l in analyzer.summary() { out.write(l); out.lineDone() }
            out.flush()
        }
    }
}
