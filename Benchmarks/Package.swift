// swift-tools-version:6.1
//
// Switchyard hot-path benchmarks (ordo-one/benchmark), a package of their own beside the engine.
//
//   cd Benchmarks && swift package --disable-sandbox benchmark                     # run and print
//   cd Benchmarks && swift package --disable-sandbox benchmark thresholds check    # fail on a regression
//   Benchmarks/run.sh                                                               # both, non-zero on failure
//
// Each benchmark runs a real stage's runner over a burst of 32 mbufs, as the engine does, and pins
// mallocs, swift_retain and swift_release calls per burst at zero (Thresholds/*.p90.json). See README.md.
import Foundation
import PackageDescription

// DPDK 22.11 from Debian, as in the root Package.swift: every Swift target that imports a module
// depending on CDPDK needs DPDK's include paths (and -march=corei7 on x86_64, for the SSE4.2 inlines).
#if arch(arm64)
let dpdkArch = "aarch64-linux-gnu"
let dpdkMarch: [String] = []
#else
let dpdkArch = "x86_64-linux-gnu"
let dpdkMarch = ["-Xcc", "-march=corei7"]
#endif
let dpdkSwiftSettings: [SwiftSetting] = [
    .unsafeFlags(["-Xcc", "-I/usr/include/dpdk", "-Xcc", "-I/usr/include/\(dpdkArch)/dpdk"] + dpdkMarch)
]

// The root package, by path. SwiftPM names a path dependency after its folder (lowercased), so the
// name is taken from where this checkout is rather than spelled as "main".
let root = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent()
let rootPackage = root.lastPathComponent.lowercased()

let package = Package(
    name: "SwitchyardBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "StageBenchmarks",
            dependencies: [
                "ARCCounter",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "SwitchyardEngine", package: rootPackage),
                .product(name: "SwitchyardClusterPlugin", package: rootPackage),
                .product(name: "SwitchyardTesting", package: rootPackage),
                .product(name: "SwitchyardStages", package: rootPackage),
            ],
            path: "StageBenchmarks",
            swiftSettings: dpdkSwiftSettings,
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        ),
        // A fixed sequence of bursts through one lcore's graph of the throughput pipeline, run under
        // callgrind by instructions.sh: instructions per packet, per stage and for the pipeline. Under
        // Tools/, not directly in Benchmarks/: the benchmark plugin runs every target whose folder's
        // parent is named "Benchmarks" as a benchmark.
        .executableTarget(
            name: "InstructionCount",
            dependencies: [
                .product(name: "SwitchyardEngine", package: rootPackage),
                .product(name: "SwitchyardClusterPlugin", package: rootPackage),
                .product(name: "SwitchyardTesting", package: rootPackage),
                .product(name: "SwitchyardStages", package: rootPackage),
            ],
            path: "Tools/InstructionCount",
            swiftSettings: dpdkSwiftSettings
        ),
        // Counts swift_retain/swift_release calls on the benchmark thread (see ARCCounter/include/ARCCounter.h
        // for why the benchmark package's own retainCount/releaseCount cannot be used here).
        .target(name: "ARCCounter", path: "ARCCounter"),
    ],
    swiftLanguageModes: [.v5]
)
