import ConntrackCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Streams writes to the kernel in netlink batches: many requests per sendmsg, an ack
/// asked only on the last request of each batch, so the kernel answers failures and
/// one ack per batch. Encoding runs on the caller's thread while a sender thread
/// sends the previous batch and reads its answers, so producing writes (parsing a
/// file, say) overlaps with the kernel inserting them. Memory is bounded by a few
/// batch buffers whatever the number of writes.
///
/// ctnetlink serialises writes under one mutex, so a second sending socket gains nothing.
public final class BatchWriter: @unchecked Sendable {
    struct Batch {
        var bytes: [UInt8]
        var firstIndex: Int
        var firstSequence: UInt32
        var count: Int
        var operations: [UInt8]          // 0 create, 1 update, 2 delete: for error messages
    }

    let table: ConntrackTable
    let batchBytes: Int
    private var current: Batch
    private var nextIndex = 0
    private let cond = NSCondition()
    private var queue: [Batch] = []
    private var closed = false
    private var failures: [(index: Int, error: ConntrackError)] = []
    private var failure: Error?
    private var senderDone = false
    private var builder: MessageBuilder

    public init(table: ConntrackTable, batchBytes: Int = 128 * 1024) throws {
        try table.guardWrite("write entries")
        self.table = table
        self.batchBytes = batchBytes
        current = Batch(bytes: [], firstIndex: 0, firstSequence: 0, count: 0, operations: [])
        builder = MessageBuilder(capacity: batchBytes + 4096)
        let t = Thread { [self] in self.sendLoop() }
        t.stackSize = 1 << 20
        t.start()
    }

    /// Encodes one write; hands a full batch to the sender (waiting while it is behind).
    public func add(_ w: TableWrite) throws {
        let seq = table.socket.nextSequence()
        if current.count == 0 { current.firstSequence = seq; current.firstIndex = nextIndex }
        table.encode(w, into: &builder, sequence: seq, ack: false)
        let op: UInt8
        switch w { case .create: op = 0; case .update: op = 1; case .delete: op = 2 }
        current.operations.append(op)
        current.count += 1
        nextIndex += 1
        if builder.bytes.count >= batchBytes { try flush() }
    }

    private func flush() throws {
        guard current.count > 0 else { return }
        // The batch's last message asks for the ack that ends it.
        builder.setAckOnLastMessage()
        current.bytes = builder.bytes
        builder.bytes.removeAll(keepingCapacity: true)
        cond.lock()
        while queue.count >= 2 && failure == nil { cond.wait() }
        if let failure { cond.unlock(); throw failure }
        queue.append(current)
        cond.broadcast()
        cond.unlock()
        current = Batch(bytes: [], firstIndex: nextIndex, firstSequence: 0, count: 0, operations: [])
    }

    /// Sends what is left, waits for every answer and returns the failures in index order.
    public func finish() throws -> [(index: Int, error: ConntrackError)] {
        try flush()
        cond.lock()
        closed = true
        cond.broadcast()
        while !senderDone { cond.wait() }
        cond.unlock()
        if let failure { throw failure }
        return failures.sorted { $0.index < $1.index }
    }

    private func sendLoop() {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 8)
        defer { buf.deallocate() }
        while true {
            cond.lock()
            while queue.isEmpty && !closed { cond.wait() }
            if queue.isEmpty { senderDone = true; cond.broadcast(); cond.unlock(); return }
            let batch = queue.removeFirst()
            cond.broadcast()
            cond.unlock()
            do {
                let found = try send(batch, buffer: buf)
                cond.lock(); failures += found; cond.unlock()
            } catch {
                cond.lock(); failure = error; senderDone = true; queue.removeAll(); cond.broadcast(); cond.unlock()
                return
            }
        }
    }

    private func send(_ batch: Batch, buffer buf: UnsafeMutableRawBufferPointer) throws -> [(index: Int, error: ConntrackError)] {
        try table.socket.send(batch.bytes, operation: "write entries")
        let lastSeq = batch.firstSequence &+ UInt32(batch.count - 1)
        var found: [(index: Int, error: ConntrackError)] = []
        var finished = false
        while !finished {
            let n = try table.socket.receive(into: buf, operation: "write entries")
            try forEachMessage(in: UnsafeRawBufferPointer(rebasing: buf[0..<n]), operation: "write entries") { m in
                guard let code = m.errorCode else { return true }
                let k = Int(m.sequence &- batch.firstSequence)
                if code != 0, k >= 0, k < batch.count {
                    let op = ["create entry", "update entry", "delete entry"][Int(batch.operations[k])]
                    found.append((batch.firstIndex + k, ConntrackError(.system(-code), operation: op)))
                }
                finished = m.sequence == lastSeq
                return !finished
            }
        }
        return found
    }
}
