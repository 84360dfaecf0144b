import CDPDK
import SwitchyardCore

/// What a graph needs from the capture service, fixed when the graph is built (control thread).
///
///     control thread ── publishes ──► slot: sy_capture_tap* (nil: no capture)
///                                         │ read once per burst by every graph
///     graph: node ─► edge ── armed and this edge? ──► sy_capture_burst ─► ring ─► control thread
///
/// With no capture the whole cost is one load of `slot` and one predictable branch per burst
/// for each source and each node run (so at most one per edge).
struct CaptureHookup {
    /// The active tap (an `sy_capture_tap`), or nil. Written by the control thread only.
    let slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// This lcore's "capture" counter block (SY_CAPTURE_SEEN ...).
    let counters: UnsafeMutablePointer<UInt64>
    /// The number the capture service gives a stage instance name (stable across reloads).
    let stageKey: (String, StageDescriptor) -> UInt16

    /// For graphs built without a capture service (tests, tools): a slot that is never armed.
    static let disabled: CaptureHookup = {
        let slot = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1)
        slot.initialize(to: nil)
        let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: 4)
        counters.initialize(repeating: 0, count: 4)
        return CaptureHookup(slot: slot, counters: counters, stageKey: { _, _ in UInt16(SY_CAPTURE_NONE) })
    }()
}

/// Counter names of the "capture" scope (one block per lcore), in the order of SY_CAPTURE_SEEN ...
enum CaptureCounters {
    static let list = [
        CounterDescription(name: "seen", help: "packets that crossed the captured edge while a capture ran", severity: .info),
        CounterDescription(name: "filtered", help: "packets the capture filter rejected", severity: .info),
        CounterDescription(name: "copied", help: "copies handed to the control thread", severity: .info),
        CounterDescription(name: "copy-dropped",
                           help: "copies lost because the capture pool or ring was full (the packet itself went on)",
                           severity: .info),
    ]
}

/// Where a stage's drop reasons sit, for naming the reason of the packets a tapped stage drops.
struct DropReasons {
    /// Offsets into the stage's counter block of its own counters with severity `drop`.
    let offsets: UnsafeMutablePointer<Int>
    /// Index of each among the stage's own counters (what `sy_capture_meta.reason` holds).
    let indexes: UnsafeMutablePointer<UInt16>
    let count: Int
    /// Values before the stage ran (only written while its edge is captured).
    let before: UnsafeMutablePointer<UInt64>

    init(_ descriptor: StageDescriptor) {
        let own = descriptor.counters.enumerated().filter { $0.element.severity == .drop }
        count = own.count
        offsets = .allocate(capacity: max(count, 1))
        indexes = .allocate(capacity: max(count, 1))
        before = .allocate(capacity: max(count, 1))
        before.initialize(repeating: 0, count: max(count, 1))
        for (slot, (index, _)) in own.enumerated() {
            (offsets + slot).initialize(to: 1 + descriptor.dispositions.count + index)
            (indexes + slot).initialize(to: UInt16(index))
        }
    }

    func deallocate() {
        offsets.deallocate()
        indexes.deallocate()
        before.deallocate()
    }

    func snapshot(_ block: UnsafeMutablePointer<UInt64>) {
        for slot in 0..<count { before[slot] = sy_counter_read(block + offsets[slot]) }
    }

    /// The reason of all `dropped` packets when exactly one drop counter moved, by exactly that
    /// many; otherwise SY_CAPTURE_NONE (unknown).
    func reason(_ block: UnsafeMutablePointer<UInt64>, dropped: Int) -> UInt16 {
        var found = UInt16(SY_CAPTURE_NONE)
        for slot in 0..<count {
            let moved = sy_counter_read(block + offsets[slot]) &- before[slot]
            if moved == 0 { continue }
            if moved != UInt64(dropped) || found != UInt16(SY_CAPTURE_NONE) { return UInt16(SY_CAPTURE_NONE) }
            found = indexes[slot]
        }
        return found
    }
}
