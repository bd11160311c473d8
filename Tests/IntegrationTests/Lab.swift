import Foundation
import XCTest

/// Shell, namespace and binary helpers for tests that run against the real kernel.
enum Lab {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    static var ctsync: String { packageRoot.appendingPathComponent(".build/debug/ctsync").path }

    /// Root and the tools are required. Under CI a missing requirement fails the
    /// test instead of skipping it, so integration tests cannot silently not run.
    static func requireRoot(file: StaticString = #filePath, line: UInt = #line) throws {
        var problems: [String] = []
        if getuid() != 0 { problems.append("not root") }
        for tool in ["ip", "nft", "conntrack"] where run("command -v \(tool)").status != 0 { problems.append("\(tool) missing") }
        if !FileManager.default.isExecutableFile(atPath: ctsync) { problems.append("\(ctsync) not built (run swift build)") }
        guard problems.isEmpty else {
            let why = "integration test needs: " + problems.joined(separator: ", ")
            if ProcessInfo.processInfo.environment["CI"] != nil {
                XCTFail(why, file: file, line: line)
                throw XCTSkip("failed: \(why)")
            }
            throw XCTSkip(why)
        }
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs a bash command line; stdin from `input` when given.
    @discardableResult
    static func run(_ command: String, input: String? = nil) -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        // Foundation watches the child through an inherited socket; close every fd above 2
        // so background jobs started by `command` do not keep waitUntilExit() waiting.
        // (No redirection on the loop: bash would park stderr in a high fd that the loop closes.)
        let closeInherited = #"for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; "#
        p.arguments = ["-c", closeInherited + command]
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        do { try p.run() } catch { return Result(status: -1, stdout: "", stderr: "\(error)") }
        if let input { inp.fileHandleForWriting.write(input.data(using: .utf8)!) }
        try? inp.fileHandleForWriting.close()
        // Read both pipes concurrently so neither fills up.
        nonisolated(unsafe) var errData = Data()
        let g = DispatchGroup()
        g.enter()
        DispatchQueue.global().async { errData = err.fileHandleForReading.readDataToEndOfFile(); g.leave() }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        g.wait()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}

struct LabError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// A throwaway network namespace in which conntrack is active; deleted on `close()`.
final class Namespace {
    let name: String
    nonisolated(unsafe) static var counter = 0

    /// - Parameter nat: also load NAT (a nat chain), needed to create entries with NAT.
    init(nat: Bool = false) throws {
        Namespace.counter += 1
        name = "ctst\(getpid())x\(Namespace.counter)"
        Lab.run("ip netns del \(name) 2>/dev/null")
        let r = Lab.run("""
            set -e
            ip netns add \(name)
            ip -n \(name) link set lo up
            ip netns exec \(name) nft -f - <<'NFT'
            table inet t {
              chain o {
                type filter hook output priority 0; policy accept;
                ct state new counter
              }
              chain f {
                type filter hook forward priority 0; policy accept;
                ct state new counter
              }
            }
            NFT
            """ + (nat ? "\nip netns exec \(name) nft add table ip n && ip netns exec \(name) nft add chain ip n post '{ type nat hook postrouting priority 100; }'" : ""))
        guard r.status == 0 else { throw LabError(message: "cannot create namespace \(name): \(r.stderr)") }
    }

    /// Runs a command line inside the namespace.
    @discardableResult
    func run(_ command: String, input: String? = nil) -> Lab.Result {
        Lab.run("ip netns exec \(name) bash -c \(Namespace.quote(command))", input: input)
    }

    func ctsync(_ args: String, input: String? = nil) -> Lab.Result { run("\(Lab.ctsync) \(args)", input: input) }

    /// Starts ctsync in the namespace in the background, stdout and stderr to files.
    /// `ip netns exec` execs ctsync, so the returned process is ctsync itself.
    func spawnCtsync(_ args: [String], stdout: String, stderr: String) throws -> Process {
        FileManager.default.createFile(atPath: stdout, contents: nil)
        FileManager.default.createFile(atPath: stderr, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", name, Lab.ctsync] + args
        p.standardOutput = FileHandle(forWritingAtPath: stdout)
        p.standardError = FileHandle(forWritingAtPath: stderr)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Waits until an event listener writing to `file` is subscribed: creates ICMP probe
    /// entries until one shows up there (at most 5 s), then deletes them.
    func waitForListener(writingTo file: String) throws {
        for k in 1...50 {
            run("conntrack -I -p icmp -s 192.0.2.254 -d 192.0.2.253 --icmp-type 8 --icmp-code 0 --icmp-id \(k) -t 30")
            usleep(100_000)
            if let text = try? String(contentsOfFile: file, encoding: .utf8), !text.isEmpty {
                run("conntrack -D -p icmp -s 192.0.2.254")
                usleep(100_000)
                return
            }
        }
        throw LabError(message: "event listener did not start within 5 s")
    }

    func close() { Lab.run("ip netns del \(name)") }

    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
}

/// Removes what legitimately differs between two runs or two namespaces:
/// timeouts tick, ids are random, and dump order is hash order.
func normalise(_ text: String) -> [String] {
    let rules: [(String, String)] = [
        (#"id=\d+"#, "id=N"), (#"<id>\d+</id>"#, "<id>N</id>"),
        (#"-t \d+"#, "-t T"), (#"<timeout>\d+</timeout>"#, "<timeout>T</timeout>"),
        (#"^((?:ipv[46] +\d+ )?\S+ +\d+ )\d+ "#, "$1T "),
        (#""timeout":\d+"#, "\"timeout\":T"), (#""use":\d+"#, "\"use\":U"),
    ]
    return text.split(separator: "\n").map { line in
        var s = String(line)
        for (pattern, template) in rules {
            s = s.replacingOccurrences(of: pattern, with: template, options: .regularExpression)
        }
        return s
    }.sorted()
}

/// The contrib/lab topology (client, router, standby, server) under a unique prefix.
final class LabNodes {
    let prefix: String
    static let script = Lab.packageRoot.appendingPathComponent("contrib/lab/lab.sh").path

    init(prefix: String) throws {
        try Lab.requireRoot()
        self.prefix = "\(prefix)\(getpid() % 100000)"
        let up = Lab.run("bash \(LabNodes.script) up \(self.prefix)")
        guard up.status == 0 else { throw LabError(message: "lab up: \(up.stderr)") }
    }

    /// Runs a command line on one node (client, router, standby, server).
    @discardableResult
    func on(_ node: String, _ command: String) -> Lab.Result {
        Lab.run("ip netns exec \(prefix)-\(node) bash -c \(Namespace.quote(command))")
    }

    func down() { Lab.run("bash \(LabNodes.script) down \(prefix)") }
}

/// conntrackd 1.4.x in the labs: its configuration for one node (FTFW over UDP on the sync
/// link, files under `dir` named after `node`), and the skip-or-fail when it is missing.
enum Conntrackd {
    static func config(dir: String, node: String, address: String, peer: String, interface: String) -> String {
        """
        General {
        \tHashSize 8192
        \tHashLimit 65536
        \tLogFile \(dir)/\(node).log
        \tSyslog off
        \tLockFile \(dir)/\(node).lock
        \tUNIX {
        \t\tPath \(dir)/\(node).ctl
        \t}
        \tNetlinkBufferSize 2097152
        \tNetlinkBufferSizeMaxGrowth 8388608
        \tFilter From Userspace {
        \t\tAddress Ignore {
        \t\t\tIPv4_address 127.0.0.1
        \t\t\tIPv4_address 192.0.2.0/24
        \t\t}
        \t}
        }
        Sync {
        \tMode FTFW {
        \t}
        \tUDP {
        \t\tIPv4_address \(address)
        \t\tIPv4_Destination_Address \(peer)
        \t\tPort 3780
        \t\tInterface \(interface)
        \t\tChecksum on
        \t}
        }

        """
    }

    /// Skips the test when conntrackd is not installed; fails it under CI.
    static func require() throws {
        guard Lab.run("command -v conntrackd").status == 0 else {
            if ProcessInfo.processInfo.environment["CI"] != nil { XCTFail("conntrackd is not installed (apt-get install conntrackd)") }
            throw XCTSkip("conntrackd is not installed")
        }
    }
}
