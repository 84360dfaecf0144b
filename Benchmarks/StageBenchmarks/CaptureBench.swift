import CDPDK
import MacSwapStage
import SwitchyardCore
import SwitchyardTesting

/// The capture tap's cost (docs/operations.md, "Capture"), measured around the mac-swap burst the
/// way the engine's graph walk pays it at one edge:
///
///     capture-off:             mac-swap ─► load the capture slot (empty) ─► done
///     capture-on-filter-none:  mac-swap ─► load the slot (armed) ─► sy_capture_burst: the BPF filter
///                              "udp port 1" (JIT) on every packet, none matches, nothing copied
///
///     capture-on-filter-none-drop: the same tap after the drop stage (12 ns: it only writes the
///                              dispositions), which shows the tap's own cost more plainly
///
/// Subtract `mac-swap` (or `drop`) for the tap alone. The filter is compiled by libpcap and converted and
/// loaded by rte_bpf exactly as `capture.start` does it.
struct CaptureBench: MeasuredBurst {
    let burst: BurstBench
    let slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    let counters: UnsafeMutablePointer<UInt64>
    let meta: sy_capture_meta
    let tap: UnsafeMutablePointer<sy_capture_tap>?

    static func make<S: Stage>(_ stage: S.Type = MacSwap.self, filter: String?) throws -> CaptureBench {
        let burst = try BurstBench.make(stage)
        let slot = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1)
        slot.initialize(to: nil)
        let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: 4)
        counters.initialize(repeating: 0, count: 4)
        var meta = sy_capture_meta()
        meta.kind = UInt8(SY_CAPTURE_STAGE)
        var tap: UnsafeMutablePointer<sy_capture_tap>?
        if let filter {
            let serial = TestEAL.nextSerial()
            var state = sy_capture_tap()
            state.kind = UInt8(SY_CAPTURE_STAGE)
            state.snaplen = 65535
            var message = [CChar](repeating: 0, count: 256)
            guard let program = sy_capture_filter_compile(filter, 65535, &message, message.count) else {
                fatalError("filter '\(filter)': \(String(cString: message))")
            }
            state.filter = program
            state.jit = sy_capture_filter_jit(program)
            state.pool = sy_capture_pool_create("sy_capbench\(serial)", 1023, 2048, 0)
            state.ring = sy_ring_create("sy_capbench_r\(serial)", 1024, 0, false, true)
            guard state.pool != nil, state.ring != nil else { fatalError("capture pool or ring") }
            tap = .allocate(capacity: 1)
            tap!.initialize(to: state)
            slot.pointee = UnsafeMutableRawPointer(tap!)
        }
        let bench = CaptureBench(burst: burst, slot: slot, counters: counters, meta: meta, tap: tap)
        bench.runOnce()
        if filter != nil && counters[Int(SY_CAPTURE_FILTERED)] != UInt64(burst.count) {
            fatalError("the filter '\(filter!)' matched packets of the burst")
        }
        return bench
    }

    /// One burst, then the edge's capture check, as `LcoreGraph` does it.
    @inline(__always)
    func runOnce() {
        burst.runOnce()
        if let armed = sy_atomic_load_ptr(slot) {
            sy_capture_burst(armed.assumingMemoryBound(to: sy_capture_tap.self), burst.mbufs, UInt32(burst.count), meta,
                             counters)
        }
    }

    var lastDisposition: UInt8 { burst.dispositions[burst.count - 1] }

    func destroy() {
        burst.destroy()
        if let tap {
            sy_capture_filter_free(tap.pointee.filter)
            sy_ring_free(tap.pointee.ring)
            sy_mempool_free(tap.pointee.pool)
            tap.deallocate()
        }
        slot.deallocate()
        counters.deallocate()
    }
}
