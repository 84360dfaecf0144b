// swift-tools-version:6.0
//
// Switchyard: a kernel-bypass packet engine in Swift on DPDK.
//
//   CDPDK, SwitchyardConfig ─► SwitchyardCore ─┬─► SwitchyardEngine (EnginePlugin) ──────────────┐
//                                              │                                                ▼
//   SwitchyardHeaders ─────────────────────────┴─► SwitchyardCluster ─► SwitchyardGossip ─► SwitchyardClusterPlugin ─► switchyard (CLI)
//                                                        │                                                            ▲
//                                                        └─► Stages/<Name> (one target each) ─► SwitchyardStages ────┘
//                                                            (the catalog)
//
// The engine and the core know nothing of the cluster: the cluster is a plug-in of the engine
// (docs/plugins.md), and its stage services extend Core's stage contexts from SwitchyardCluster.
//
// SwitchyardHeaders (no dependencies) is the one header layer: views of Ethernet ... VXLAN/GUE,
// bounds checked once, and the named protocol numbers; the stages, the cluster's rewrites and the
// test frame builder (SwitchyardPcap) use it.
//
// A new stage is one folder under Stages/ (one target, listed in `stageTargets` below)
// plus one line in Sources/SwitchyardStages/StageCatalog.swift.
import PackageDescription

/// Stage targets: folder name under Stages/ = target name.
let stageTargets = [
    "DropStage", "MacSwapStage", "CounterStage",
    "ClassifyStage",
    "OwnershipLookupStage",
    "EgressTranslateStage",
    "TupleTranslateStage",
    "EncapsulateStage",
    "DecapsulateStage",
    "ForwardStage",
    "FragmentStage",
    "MssClampStage",
]

// DPDK 22.11 from Debian (libdpdk-dev). Its pkg-config files have multi-line descriptions that
// SwiftPM cannot parse, so the include paths and flags they carry are spelled out here.
#if arch(arm64)
let dpdkArch = "aarch64-linux-gnu"
let dpdkMarch: [String] = []
#else
let dpdkArch = "x86_64-linux-gnu"
let dpdkMarch = ["-Xcc", "-march=corei7"] // as libdpdk.pc asks: static inline helpers use SSE4.2
#endif
/// Every Swift target sees DPDK's headers, because public inlinable code reaches into CDPDK.
let dpdkSwiftSettings: [SwiftSetting] = [
    .unsafeFlags(["-Xcc", "-I/usr/include/dpdk", "-Xcc", "-I/usr/include/\(dpdkArch)/dpdk"] + dpdkMarch)
]
/// Hot-path targets (the engine loop, the cluster tables, the stages). Dynamic exclusivity checks
/// are off in release builds: the hot path owns its memory through raw pointers and value-type
/// stages, and the checks (swift_beginAccess/endAccess on every class-property access) showed up
/// in profiles of the steady-state loop. Debug builds, and so the tests, keep them.
let hotPathSettings: [SwiftSetting] = dpdkSwiftSettings + [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))
]

let package = Package(
    name: "Switchyard",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "switchyard", targets: ["switchyard"]),
        .library(name: "SwitchyardEngine", targets: ["SwitchyardEngine"]),
        .library(name: "SwitchyardClusterPlugin", targets: ["SwitchyardClusterPlugin"]),
        .library(name: "SwitchyardTesting", targets: ["SwitchyardTesting"]),
        .library(name: "SwitchyardStages", targets: ["SwitchyardStages"] + stageTargets),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // The Prometheus endpoint (SwitchyardMetrics): the exposition format and a small HTTP/1 server.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // DPDK through pkg-config, with static inline accessors so Swift inlines the hot path.
        .systemLibrary(name: "CDPDK", path: "Sources/CDPDK", providers: [.apt(["libdpdk-dev", "libnuma-dev"])]),
        .target(name: "SwitchyardConfig", dependencies: ["Yams"]),
        // Header views (bounds checked once) and protocol constants: Sources/SwitchyardHeaders.
        .target(name: "SwitchyardHeaders"),
        // The single-IP-image domain: cluster configuration, translation map, connection table.
        // Its stage services (`context.requireCluster`) extend Core's stage contexts.
        .target(name: "SwitchyardCluster", dependencies: ["CDPDK", "SwitchyardConfig", "SwitchyardHeaders", "SwitchyardCore"],
                swiftSettings: hotPathSettings),
        .target(name: "SwitchyardCore", dependencies: ["CDPDK", "SwitchyardConfig"], swiftSettings: hotPathSettings),
        .target(name: "SwitchyardPcap", dependencies: ["SwitchyardHeaders"]),
        // The gossip control plane: connection ownership shared between hosts (docs/gossip.md).
        .target(name: "SwitchyardGossip",
                dependencies: ["SwitchyardCluster", "SwitchyardConfig", "CDPDK", .product(name: "Crypto", package: "swift-crypto")],
                swiftSettings: dpdkSwiftSettings),
        .target(name: "SwitchyardEngine",
                dependencies: ["CDPDK", "SwitchyardCore", "SwitchyardConfig", .product(name: "Crypto", package: "swift-crypto")],
                swiftSettings: hotPathSettings),
        // The cluster as the engine's plug-in (docs/plugins.md): `cluster:` and `bgp:`, gossip,
        // listeners, health checks, membership, previews, the BGP speaker and their ctl commands.
        .target(name: "SwitchyardClusterPlugin",
                dependencies: ["CDPDK", "SwitchyardCore", "SwitchyardConfig", "SwitchyardEngine", "SwitchyardCluster",
                               "SwitchyardGossip"],
                swiftSettings: dpdkSwiftSettings),
        // The Prometheus endpoint: an HTTP server on a thread of its own that renders the engine's
        // counter registry. A target of its own so that the engine (and what embeds it) builds
        // without SwiftNIO; the CLI hands it to the engine as an `EngineService`.
        .target(name: "SwitchyardMetrics",
                dependencies: ["SwitchyardEngine", "SwitchyardCore",
                               .product(name: "Prometheus", package: "swift-prometheus"),
                               .product(name: "NIOCore", package: "swift-nio"),
                               .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "NIOHTTP1", package: "swift-nio")],
                swiftSettings: dpdkSwiftSettings),
        .target(name: "SwitchyardStages",
                dependencies: ["SwitchyardCore", "SwitchyardConfig"] + stageTargets.map { .target(name: $0) },
                swiftSettings: dpdkSwiftSettings),
        .target(name: "SwitchyardTesting",
                dependencies: ["SwitchyardCore", "SwitchyardConfig", "SwitchyardCluster", "SwitchyardEngine", "SwitchyardPcap",
                               "CDPDK"],
                swiftSettings: dpdkSwiftSettings),
        .executableTarget(name: "switchyard",
                          dependencies: ["SwitchyardEngine", "SwitchyardClusterPlugin", "SwitchyardMetrics", "SwitchyardStages",
                                         "SwitchyardPcap", "SwitchyardConfig",
                                         "SwitchyardCore", "SwitchyardCluster", "CDPDK",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: dpdkSwiftSettings),
        // The gossip simulation (Benchmarks/GossipSimulation/README.md): many real GossipNodes in one
        // process on loopback, with loss, delay and floods; measured figures and an extrapolation.
        .executableTarget(name: "gossip-simulation",
                          dependencies: ["SwitchyardGossip", "SwitchyardCluster", "SwitchyardConfig", "SwitchyardEngine", "CDPDK"],
                          path: "Benchmarks/GossipSimulation", exclude: ["README.md"],
                          swiftSettings: dpdkSwiftSettings),
        .testTarget(name: "SwitchyardTests",
                    dependencies: ["SwitchyardTesting", "SwitchyardStages", "SwitchyardEngine", "SwitchyardClusterPlugin",
                                   "SwitchyardMetrics", "SwitchyardPcap",
                                   "SwitchyardConfig", "SwitchyardCluster", "SwitchyardGossip", "SwitchyardHeaders", "CDPDK"] + stageTargets.map { .target(name: $0) },
                    swiftSettings: dpdkSwiftSettings),
    ] + stageTargets.map {
        .target(name: $0, dependencies: ["SwitchyardCore", "SwitchyardConfig", "SwitchyardCluster", "SwitchyardHeaders", "CDPDK"],
                path: "Stages/\($0)",
                exclude: ["README.md"], swiftSettings: hotPathSettings)
    },
    swiftLanguageModes: [.v5]
)
