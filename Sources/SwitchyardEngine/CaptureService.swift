import CDPDK
import Foundation
import SwitchyardCore

/// An error a capture command answers with (the control socket turns it into `{"ok":false}`).
struct CaptureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Packet capture at any stage edge of the running engine (`switchyard ctl capture`).
///
///     capture.start ─► resolve the edge, compile the filter, open the file ─► publish the tap
///     tick (control loop, every 10 ms) ─► dequeue copies ─► write pcapng blocks ─► free copies
///         --count written or --seconds elapsed or capture.stop ─► unpublish, wait for every
///         lcore to pass a quiescent state (RCU), write what is left, close the file
///
/// One capture runs at a time. The lcores copy into a pool of the capture's own (`sy_capture`) and
/// hand the copies over an MP/SC ring; a full pool or ring loses the copy (counted as
/// `copy-dropped`), never the packet. Everything here runs on the control side under one lock; no
/// lcore ever takes it.
public final class CaptureService: @unchecked Sendable {
    /// What `capture.status` reports.
    struct Record {
        var id: Int
        var state: String // running, done, failed
        var edge: String
        var file: String
        var error: String?
        var captured: UInt64 = 0
        var filtered: UInt64 = 0
        var copyDropped: UInt64 = 0
        var written: UInt64 = 0
    }

    /// The running capture.
    private final class Active {
        var record: Record
        let tap: UnsafeMutablePointer<sy_capture_tap>
        let filter: OpaquePointer?
        let file: CaptureFile
        let count: UInt64
        let deadline: Date?
        /// Counter totals when the capture started (the blocks count over the engine's life).
        let baseline: [UInt64]
        let statsPort: UInt16?

        init(record: Record, tap: UnsafeMutablePointer<sy_capture_tap>, filter: OpaquePointer?, file: CaptureFile,
             count: UInt64, deadline: Date?, baseline: [UInt64], statsPort: UInt16?)
        {
            self.record = record
            self.tap = tap
            self.filter = filter
            self.file = file
            self.count = count
            self.deadline = deadline
            self.baseline = baseline
            self.statsPort = statsPort
        }
    }

    static let poolSize: UInt32 = 4095
    static let ringSize: UInt32 = 4096
    static let defaultCount = 100
    static let defaultSnaplen = 65535

    private let lock = NSLock()
    private let slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let blocks: [Int: CounterBlock]
    private let ports: [(name: String, id: UInt16)]
    private let qsbr: OpaquePointer?
    private let socket: Int32
    private let log: (String) -> Void
    /// Stage instance name → key, and key → (name, descriptor). Only grows (reloads add names).
    private var stageKeys: [String: UInt16] = [:]
    private var stages: [(name: String, descriptor: StageDescriptor)] = []
    private var pool: OpaquePointer?
    private var ring: OpaquePointer?
    private var active: Active?
    private var records: [Int: Record] = [:]
    private var nextID = 1
    private let drainBuffer = MbufVector.allocate(capacity: maximumBurstSize)

    /// `lcores`: every worker lcore (one "capture" counter block each); `ports`: name and DPDK id;
    /// `qsbr`: the lcores' RCU state, to know when an unpublished tap is no longer read.
    init(counters registry: CounterRegistry, lcores: [Int], ports: [(name: String, id: UInt16)], qsbr: OpaquePointer?,
         socket: Int32, log: @escaping (String) -> Void)
    {
        slot = .allocate(capacity: 1)
        slot.initialize(to: nil)
        var blocks: [Int: CounterBlock] = [:]
        for lcore in lcores {
            blocks[lcore] = registry.makeBlock(scope: "capture", kind: "capture", lcore: lcore,
                                               counters: CaptureCounters.list, alwaysShown: 0)
        }
        self.blocks = blocks
        self.ports = ports
        self.qsbr = qsbr
        self.socket = socket
        self.log = log
    }

    deinit {
        slot.deallocate()
        drainBuffer.deallocate()
    }

    /// What the graph of `lcore` needs (control thread, while building a graph).
    func hookup(lcore: Int) -> CaptureHookup {
        CaptureHookup(slot: slot, counters: blocks[lcore]?.values ?? CaptureHookup.disabled.counters,
                      stageKey: { [unowned self] name, descriptor in self.stageKey(name, descriptor) })
    }

    private func stageKey(_ name: String, _ descriptor: StageDescriptor) -> UInt16 {
        lock.withLock {
            if let key = stageKeys[name] {
                stages[Int(key)].descriptor = descriptor // a reload may change the kind
                return key
            }
            let key = UInt16(stages.count)
            stageKeys[name] = key
            stages.append((name, descriptor))
            return key
        }
    }

    // MARK: - Commands

    /// What to capture, as parsed from `capture.start`'s arguments.
    struct Request {
        enum Edge {
            case stage(String, disposition: String?)
            case rx(String)
            case tx(String)
        }

        var edge: Edge
        var filter: String?
        var count: Int?
        var seconds: Double?
        var snaplen: Int
        var output: String
    }

    /// Starts a capture; returns its id.
    func start(_ request: Request) throws -> Int {
        try lock.withLock {
            if let active { throw CaptureError("capture \(active.record.id) is already running (capture.stop ends it)") }
            var tap = sy_capture_tap()
            tap.snaplen = UInt32(request.snaplen)
            tap.stage = UInt16(SY_CAPTURE_NONE)
            var edge = ""
            var statsPort: UInt16?
            switch request.edge {
            case .stage(let name, let disposition):
                guard let key = stageKeys[name] else {
                    throw CaptureError("unknown stage '\(name)' (stages: \(stages.map(\.name).joined(separator: ", ")))")
                }
                let descriptor = stages[Int(key)].descriptor
                tap.kind = UInt8(SY_CAPTURE_STAGE)
                tap.stage = key
                if let disposition {
                    guard let index = descriptor.dispositions.firstIndex(of: disposition) else {
                        throw CaptureError("stage '\(name)' (\(descriptor.kind)) has no disposition '\(disposition)' (dispositions: \(descriptor.dispositions.joined(separator: ", ")))")
                    }
                    tap.disposition = UInt8(index)
                    edge = "stage \(name):\(disposition)"
                } else {
                    tap.any_disposition = 1
                    edge = "stage \(name)"
                }
            case .rx(let name), .tx(let name):
                guard let port = ports.first(where: { $0.name == name }) else {
                    throw CaptureError("unknown port '\(name)' (ports: \(ports.map(\.name).joined(separator: ", ")))")
                }
                if case .rx = request.edge {
                    tap.kind = UInt8(SY_CAPTURE_RX)
                    edge = "rx \(name)"
                } else {
                    tap.kind = UInt8(SY_CAPTURE_TX)
                    edge = "tx \(name)"
                }
                tap.port = port.id
                statsPort = port.id
            }
            var filter: OpaquePointer?
            if let expression = request.filter, !expression.trimmingCharacters(in: .whitespaces).isEmpty {
                var message = [CChar](repeating: 0, count: 512)
                guard let compiled = sy_capture_filter_compile(expression, UInt32(request.snaplen), &message, message.count)
                else { throw CaptureError("invalid filter '\(expression)': \(String(cString: message))") }
                filter = compiled
                tap.filter = compiled
                tap.jit = sy_capture_filter_jit(compiled)
            }
            do {
                try makePoolAndRing()
            } catch {
                if let filter { sy_capture_filter_free(filter) }
                throw error
            }
            tap.pool = pool
            tap.ring = ring
            let file: CaptureFile
            do {
                file = try CaptureFile(path: request.output, comment: "switchyard capture at \(edge)"
                                       + (request.filter.map { ", filter '\($0)'" } ?? ""))
            } catch {
                if let filter { sy_capture_filter_free(filter) }
                throw error
            }
            let id = nextID
            nextID += 1
            let published = UnsafeMutablePointer<sy_capture_tap>.allocate(capacity: 1)
            published.initialize(to: tap)
            let count = request.count ?? (request.seconds == nil ? Self.defaultCount : Int.max)
            let capture = Active(record: Record(id: id, state: "running", edge: edge, file: request.output),
                                 tap: published, filter: filter, file: file, count: UInt64(count),
                                 deadline: request.seconds.map { Date().addingTimeInterval($0) },
                                 baseline: totals(), statsPort: statsPort)
            active = capture
            records[id] = capture.record
            sy_atomic_store_ptr(slot, UnsafeMutableRawPointer(published))
            log("capture \(id): started at \(edge)\(request.filter.map { " with filter '\($0)'" } ?? "")"
                + (tap.jit != nil || filter == nil ? "" : " (filter interpreted: no JIT)") + " into \(request.output)")
            return id
        }
    }

    /// The status of capture `id` (the latest when nil).
    func status(id: Int?) throws -> Record {
        try lock.withLock {
            guard let id = id ?? records.keys.max() else { throw CaptureError("no capture has been started") }
            if let active, active.record.id == id {
                refresh(active)
                return active.record
            }
            guard let record = records[id] else { throw CaptureError("no capture with id \(id)") }
            return record
        }
    }

    /// Stops capture `id` (the running one when nil); returns its final status.
    func stop(id: Int?) throws -> Record {
        try lock.withLock {
            guard let active else {
                if let id, let record = records[id] { return record }
                throw CaptureError(id.map { "no capture with id \($0)" } ?? "no capture is running")
            }
            if let id, id != active.record.id {
                if let record = records[id] { return record }
                throw CaptureError("no capture with id \(id)")
            }
            finish(active, error: nil)
            return records[active.record.id]!
        }
    }

    /// Control loop: writes what the lcores copied; ends the capture when its count or time is reached.
    func tick() {
        lock.withLock {
            guard let active else { return }
            drain(active)
            if active.record.state != "running" || active.record.written >= active.count
                || active.deadline.map({ Date() >= $0 }) == true
            {
                finish(active, error: nil)
            }
        }
    }

    /// At shutdown, after the lcores stopped: ends a running capture and frees the pool.
    /// Returns the capture pool's state (every mbuf should be back), or nil if none was made.
    func shutdown() -> (name: String, available: Int, size: Int)? {
        lock.withLock {
            if let active { finish(active, error: nil) }
            guard let pool else { return nil }
            let state = (String(cString: sy_mempool_name(pool)), Int(sy_mempool_avail(pool)), Int(sy_mempool_size(pool)))
            if let ring { sy_ring_free(ring) }
            ring = nil
            if state.1 == state.2 { sy_mempool_free(pool) } // else leave it: freeing would hide the leak
            self.pool = nil
            return state
        }
    }

    // MARK: - Internals (lock held)

    private func makePoolAndRing() throws {
        if pool == nil {
            guard let made = sy_capture_pool_create("sy_capture", Self.poolSize, UInt16(RTE_MBUF_DEFAULT_BUF_SIZE), socket) else {
                throw CaptureError("cannot create the capture pool: \(String(cString: sy_strerror(sy_errno())))")
            }
            pool = made
        }
        if ring == nil {
            guard let made = sy_ring_create("sy_capture_ring", Self.ringSize, socket, false, true) else {
                throw CaptureError("cannot create the capture ring: \(String(cString: sy_strerror(sy_errno())))")
            }
            ring = made
        }
    }

    /// Sums over lcores of seen, filtered, copied, copy-dropped.
    private func totals() -> [UInt64] {
        (0..<CaptureCounters.list.count).map { index in blocks.values.reduce(0) { $0 + $1.value(index) } }
    }

    private func refresh(_ active: Active) {
        let now = totals()
        active.record.filtered = now[Int(SY_CAPTURE_FILTERED)] - active.baseline[Int(SY_CAPTURE_FILTERED)]
        active.record.captured = now[Int(SY_CAPTURE_COPIED)] - active.baseline[Int(SY_CAPTURE_COPIED)]
        active.record.copyDropped = now[Int(SY_CAPTURE_COPY_DROPPED)] - active.baseline[Int(SY_CAPTURE_COPY_DROPPED)]
        records[active.record.id] = active.record
    }

    /// Dequeues the copies on the ring (at most one ring's worth per call, so lcores copying at full
    /// rate cannot keep the control thread here); writes those within the count, frees all.
    private func drain(_ active: Active) {
        guard let ring else { return }
        var budget = Int(Self.ringSize)
        while budget > 0 {
            let n = Int(sy_ring_dequeue_burst(ring, drainBuffer, UInt32(min(maximumBurstSize, budget))))
            budget -= n
            if n == 0 { break }
            let room = active.record.state == "running" ? Int(min(UInt64(n), active.count - active.record.written)) : 0
            if room > 0 {
                let copies = (0..<room).map { drainBuffer[$0]! }
                do {
                    try active.file.write(copies[...], comment: comment)
                    active.record.written += UInt64(room)
                } catch {
                    active.record.state = "failed"
                    active.record.error = "\(error)"
                }
            }
            sy_pktmbuf_free_bulk(drainBuffer, UInt32(n))
        }
        refresh(active)
    }

    /// Unpublishes the tap, waits until no lcore can still read it, writes the rest, closes the file.
    private func finish(_ active: Active, error: String?) {
        sy_atomic_store_ptr(slot, nil)
        if let qsbr { sy_qsbr_synchronize(qsbr) }
        drain(active)
        if active.record.state == "running" { active.record.state = error == nil ? "done" : "failed" }
        if let error { active.record.error = error }
        let record = active.record
        active.file.close(stats: active.statsPort.map {
            (port: $0, received: record.captured, dropped: record.copyDropped,
             comment: "switchyard capture \(record.id): \(record.captured) copied, \(record.copyDropped) copies lost")
        })
        if let filter = active.filter { sy_capture_filter_free(filter) }
        active.tap.deallocate()
        records[record.id] = record
        self.active = nil
        log("capture \(record.id): \(record.state), \(record.written) packets written to \(record.file)"
            + " (\(record.captured) copied, \(record.filtered) filtered, \(record.copyDropped) copies lost)"
            + (record.error.map { ": \($0)" } ?? ""))
    }

    /// The comment of each packet: where it was copied (docs/operations.md, "Capture").
    private func comment(_ meta: sy_capture_meta) -> String {
        func stageName(_ key: UInt16) -> (name: String, descriptor: StageDescriptor)? {
            Int(key) < stages.count ? stages[Int(key)] : nil
        }
        func dispositionName(_ stage: (name: String, descriptor: StageDescriptor)?, _ d: UInt8) -> String {
            stage.flatMap { Int(d) < $0.descriptor.dispositions.count ? $0.descriptor.dispositions[Int(d)] : nil } ?? "\(d)"
        }
        let portName = ports.first { $0.id == meta.port }?.name ?? "port \(meta.port)"
        switch Int(meta.kind) {
        case SY_CAPTURE_RX:
            return "lcore \(meta.lcore), rx \(portName) queue \(meta.queue)"
        case SY_CAPTURE_TX:
            let stage = stageName(meta.stage)
            return "lcore \(meta.lcore), tx \(portName) queue \(meta.queue), from stage \(stage?.name ?? "?") disposition \(dispositionName(stage, meta.disposition))"
        default:
            let stage = stageName(meta.stage)
            var text = "lcore \(meta.lcore), stage \(stage?.name ?? "?"), disposition \(dispositionName(stage, meta.disposition))"
            if meta.disposition == 0 {
                if meta.reason != UInt16(SY_CAPTURE_NONE), let stage, Int(meta.reason) < stage.descriptor.counters.count {
                    text += ", reason \(stage.descriptor.counters[Int(meta.reason)].name)"
                } else {
                    text += ", reason unknown"
                }
            }
            return text
        }
    }
}
