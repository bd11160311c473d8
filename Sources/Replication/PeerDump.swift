import ConntrackCore
import Foundation
import Logging
import NIOCore
import NIOPosix
import ReplicationProtocol

/// Reads a standby's cache over the replication protocol (`ctsync diff peer:HOST:PORT`):
/// an authenticated session, a DUMP_REQUEST, the bulk transfer it answers with.
public enum PeerDump {
    public struct Failure: Error, CustomStringConvertible { public var description: String }

    public static func fetch(host: String, port: Int, psk: [UInt8], timeout: TimeAmount = .seconds(30)) throws
        -> (entries: [ConntrackEntry], expectations: [Expectation]) {
        FastHMAC.install()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let promise = group.next().makePromise(of: ([ConntrackEntry], [Expectation]).self)
        let session = Session(role: .initiator, psk: HMACKey(psk), node: "ctsync diff", logger: Logger(label: "ctsync.diff.peer"))
        final class Collected: @unchecked Sendable { var entries: [ConntrackEntry] = []; var expectations: [Expectation] = []; var done = false; var finished = false }
        let got = Collected()
        session.onReady = { s in s.send(.dumpRequest) }
        session.onFrame = { s, f in
            do {
                switch f.type {
                case .entry: got.entries.append(try EntryPayload.decode(f.payload).1)
                case .expectation:
                    got.expectations.append(try ConntrackJSON.decodeExpectation(line: String(decoding: f.payload.dropFirst(), as: UTF8.self)))
                case .bulkEnd:
                    got.done = true
                    if !got.finished { got.finished = true; promise.succeed((got.entries, got.expectations)) }
                    s.context?.close(promise: nil)
                default: break
                }
            } catch {
                if !got.finished { got.finished = true; promise.fail(Failure(description: "the peer sent a bad frame: \(error)")) }
                s.context?.close(promise: nil)
            }
        }
        session.onClose = { _, failure in
            if !got.finished {
                got.finished = true
                promise.fail(Failure(description: failure.map { "connection closed: \($0)" } ?? "the peer closed the connection (wrong key?)"))
            }
        }
        do {
            _ = try ClientBootstrap(group: group)
                .connectTimeout(.seconds(5))
                .channelInitializer { ch in ch.pipeline.addHandler(session) }
                .connect(host: host, port: port).wait()
        } catch {
            throw Failure(description: "cannot connect to \(host):\(port): \(error)")
        }
        group.next().scheduleTask(in: timeout) {
            if !got.finished {
                got.finished = true
                promise.fail(Failure(description: "no answer from \(host):\(port) within \(timeout.nanoseconds / 1_000_000_000) s"))
            }
        }
        return try promise.futureResult.wait()
    }
}
