// swift-tools-version:6.1
//
// Switchyard hot-path benchmarks (ordo-one/benchmark), a package of their own beside the engine.
//
//   cd Benchmarks && swift package --disable-sandbox benchmark                     # run and print
//   cd Benchmarks && swift package --disable-sandbox benchmark thresholds check    # fail on a regression
//   cd Benchmarks && ./run.sh                                                       # both, non-zero on failure
//
// Each benchmark runs a real stage's runner over a burst of 32 mbufs, as the engine does, and pins
// allocations, retains and releases per burst at zero (Thresholds/*.p90.json). See README.md.
import PackageDescription

// The stage modules (MacSwapStage, CounterStage, DropStage) are not products of the root package yet.
// Until they are, `LocalStages/` holds symlinks to the very same source files in ../Stages and builds
// them here as one module, with the same flags as the root's stage targets. Once the root exports
// them (a `SwitchyardStages` library product listing the stage targets), set this to true.
let rootExportsStageModules = false

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

let stageDependencies: [Target.Dependency] = rootExportsStageModules
    ? [.product(name: "SwitchyardStages", package: "main")]
    : ["LocalStages"]

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
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "SwitchyardEngine", package: "main"),
                .product(name: "SwitchyardTesting", package: "main"),
            ] + stageDependencies,
            path: "StageBenchmarks",
            swiftSettings: dpdkSwiftSettings + (rootExportsStageModules ? [] : [.define("SWITCHYARD_LOCAL_STAGES")]),
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        ),
    ] + (rootExportsStageModules ? [] : [
        // Symlinks to ../Stages/*/*.swift: the root's stage sources, compiled as the root compiles them.
        .target(
            name: "LocalStages",
            dependencies: [.product(name: "SwitchyardEngine", package: "main")],
            path: "LocalStages",
            swiftSettings: dpdkSwiftSettings
        )
    ]),
    swiftLanguageModes: [.v5]
)
