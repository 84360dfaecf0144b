import CDPDK
import Foundation
import SwitchyardCore

/// The engine's run phase, shared by the control thread and every lcore.
enum EnginePhase: UInt32 {
    /// Poll ports and rings.
    case running = 0
    /// Stop receiving from ports; keep draining rings.
    case draining = 1
    /// Leave the poll loop.
    case exit = 2
}

/// What an lcore publishes about itself for the control thread (shutdown drain, stats).
/// Written by the lcore, read by the control thread, through atomics.
final class LcoreStatus: @unchecked Sendable {
    /// Written twice per burst: lines of their own (CacheLines), not beside another lcore's.
    private let words = CacheLines.allocate(UInt32.self, count: 4, initializedTo: 0)
    private let epoch = CacheLines.allocate(UInt64.self, count: 1, initializedTo: 0)

    init() {}

    deinit {
        words.deallocate()
        epoch.deallocate()
    }

    /// Set while a burst is inside the graph.
    @inline(__always) func beginBurst() {
        sy_atomic_store_u32(words, 1)
        sy_counter_add(epoch, 1)
    }

    @inline(__always) func endBurst() { sy_atomic_store_u32(words, 0) }

    var inBurst: Bool { sy_atomic_load_u32(words) != 0 }
    /// Bursts this lcore has taken in: unchanged between two looks means it moved nothing meanwhile.
    var burstEpoch: UInt64 { sy_counter_read(epoch) }

    /// The phase this lcore has last seen (so the control thread knows rx has stopped).
    var seenPhase: UInt32 {
        get { sy_atomic_load_u32(words + 1) }
        set { sy_atomic_store_u32(words + 1, newValue) }
    }

    var exited: Bool {
        get { sy_atomic_load_u32(words + 2) != 0 }
        set { sy_atomic_store_u32(words + 2, newValue ? 1 : 0) }
    }
}

/// One worker lcore: its graph slot, idle policy and status, and the poll loop.
///
///     loop:  phase? ─► graph = slot (acquire) ─► graph.poll() ─► quiescent(qsbr) ─► idle policy
///
/// The graph pointer is re-read every iteration, so the control thread can publish a new graph
/// (hot reload) without stopping the lcore; it frees the old one after `rte_rcu_qsbr` shows that
/// every lcore has passed a quiescent state since the swap.
final class LcoreRuntime: @unchecked Sendable {
    let id: Int
    let idle: IdlePolicy
    let status = LcoreStatus()
    private let phase: UnsafeMutablePointer<UInt32>
    private let qsbr: OpaquePointer
    /// The published graph (an unmanaged +1 reference owned by this slot).
    private let graphSlot = CacheLines.allocate(UnsafeMutableRawPointer?.self, count: 1, initializedTo: nil)
    /// This lcore's own block (`EngineCounters.lcore`): polls, busy-polls, packets, busy-cycles.
    let counters: CounterBlock

    init(id: Int, idle: IdlePolicy, graph: LcoreGraph, phase: UnsafeMutablePointer<UInt32>, qsbr: OpaquePointer,
         counters: CounterBlock)
    {
        self.id = id
        self.counters = counters
        self.idle = idle
        self.phase = phase
        self.qsbr = qsbr
        graphSlot.pointee = Unmanaged.passRetained(graph).toOpaque()
    }

    deinit {
        if let old = graphSlot.pointee { Unmanaged<LcoreGraph>.fromOpaque(old).release() }
        graphSlot.deallocate()
    }

    var graph: LcoreGraph { Unmanaged<LcoreGraph>.fromOpaque(sy_atomic_load_ptr(graphSlot)!).takeUnretainedValue() }

    /// Publishes `graph` and returns once no lcore can still be running the old one, which is released.
    /// Control thread only.
    func replaceGraph(with graph: LcoreGraph) {
        let old = sy_atomic_load_ptr(graphSlot)
        sy_atomic_store_ptr(graphSlot, Unmanaged.passRetained(graph).toOpaque())
        sy_qsbr_synchronize(qsbr)
        if let old { Unmanaged<LcoreGraph>.fromOpaque(old).release() }
    }

    /// The poll loop. Runs on the lcore's own thread until the phase is `exit`.
    func run() -> Int32 {
        let me = UInt32(id)
        guard sy_qsbr_register(qsbr, me) == 0 else {
            status.exited = true
            return -1
        }
        var emptyPolls = 0
        var sleepMicroseconds: UInt32 = 1
        // Busy share and cycles per packet: one TSC read per iteration; an iteration's cycles count
        // as busy when it received packets.
        let polls = counters.values, busyPolls = counters.values + 1, packets = counters.values + 2,
            busyCycles = counters.values + 3
        var iterationStart = sy_rdtsc()
        while true {
            let current = sy_atomic_load_u32(phase)
            if current == EnginePhase.exit.rawValue { break }
            if status.seenPhase != current { status.seenPhase = current }
            let graph = Unmanaged<LcoreGraph>.fromOpaque(sy_atomic_load_ptr(graphSlot)!)
            let received = graph._withUnsafeGuaranteedRef {
                $0.poll(receiveFromPorts: current == EnginePhase.running.rawValue, status: status)
            }
            sy_qsbr_quiescent(qsbr, me)
            let now = sy_rdtsc()
            sy_counter_add(polls, 1)
            if received > 0 {
                sy_counter_add(busyPolls, 1)
                sy_counter_add(packets, UInt64(received))
                sy_counter_add(busyCycles, now &- iterationStart)
            }
            iterationStart = now
            if received > 0 {
                emptyPolls = 0
                sleepMicroseconds = 1
                continue
            }
            emptyPolls &+= 1
            switch idle {
            case .busy:
                sy_pause()
            case .backoff(let maxSleep):
                // Spin briefly (a burst may be right behind), then sleep, doubling up to the cap.
                if emptyPolls < 64 {
                    sy_pause()
                } else {
                    usleep(sleepMicroseconds)
                    sleepMicroseconds = min(sleepMicroseconds * 2, UInt32(maxSleep))
                }
            }
        }
        sy_qsbr_unregister(qsbr, me)
        status.exited = true
        return 0
    }
}

/// rte_eal_remote_launch entry point: `arg` is an unretained LcoreRuntime.
let lcoreEntry: sy_lcore_function_t = { arg in
    Unmanaged<LcoreRuntime>.fromOpaque(arg!).takeUnretainedValue().run()
}
