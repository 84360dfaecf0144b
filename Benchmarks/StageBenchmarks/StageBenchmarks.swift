import Benchmark
import SwitchyardCore
#if SWITCHYARD_LOCAL_STAGES
import LocalStages // ../Stages/*/*.swift, built here until the root exports the stage modules
#else
import CounterStage
import DropStage
import MacSwapStage
#endif

/// Bursts per measured iteration: every metric below is the total over 1,000 bursts of 32 packets
/// (the text output divides the `*` metrics by 1,000, so it reads per burst).
private let scaling = BenchmarkScalingFactor.kilo

/// Tolerance for the pinned counters: none. The pinned values themselves are in
/// Thresholds/StageBenchmarks.<name>.p90.json (0 for the stages) and are checked by
/// `swift package benchmark thresholds check`.
private let exact = BenchmarkThresholds(absolute: [.p90: 0])

private let pinned: [BenchmarkMetric] = [.mallocCountTotal, .retainCount, .releaseCount]

private let metrics: [BenchmarkMetric] = [
    .wallClock, .cpuTotal, .throughput,
    .mallocCountTotal, .freeCountTotal, .objectAllocCount, .retainCount, .releaseCount,
    // .instructions is left out: perf_event counters are "not supported" on this VM (perf stat says so).
]

/// Registers one benchmark that runs `make()`'s runner over the same burst of 32 mbufs,
/// `scaledIterations` times per measurement, exactly as the engine calls it.
private func burstBenchmark(_ name: String, _ make: @escaping () throws -> BurstBench) {
    let slot = BenchSlot()
    Benchmark(
        name,
        configuration: .init(
            metrics: metrics,
            timeUnits: .nanoseconds,
            warmupIterations: 10,
            scalingFactor: scaling,
            maxDuration: .seconds(1),
            maxIterations: 2_000,
            thresholds: Dictionary(uniqueKeysWithValues: pinned.map { ($0, exact) }),
            setup: { slot.bench = try make() },
            teardown: {
                slot.bench?.destroy()
                slot.bench = nil
            })
    ) { benchmark in
        // Outside the loop: one load of a struct of pointers (no retain).
        let bench = slot.bench.unsafelyUnwrapped
        for _ in benchmark.scaledIterations {
            bench.runOnce()
        }
        blackHole(bench.dispositions[bench.count - 1])
        blackHole(bench.counters[0])
    }
}

let benchmarks: @Sendable () -> Void = {
    // The stages, as the engine runs them (one dynamic dispatch per burst through StageRunner).
    burstBenchmark("mac-swap") { try BurstBench.make(MacSwap.self) }
    burstBenchmark("counter") { try BurstBench.make(PacketCounter.self) }
    // drop's process() only writes dispositions and a counter; the engine frees the packets after it,
    // outside the stage, so the same mbufs can go through it again and again.
    burstBenchmark("drop") { try BurstBench.make(Drop.self) }

    // Meter checks: the harness alone must read zero, and one of each per burst must read exactly
    // 1,000 per iteration. If the malloc interposer or the ARC hooks stop counting, these fail.
    burstBenchmark("meter-idle") { BurstBench.make(runner: IdleRunner()) }
    burstBenchmark("meter-one-of-each") { BurstBench.make(runner: OneOfEachRunner()) }
}
