// swift-tools-version:6.0
//
// Switchyard fuzz targets (libFuzzer), a package of their own beside the engine, so the main build
// and `swift test` never build them. Built with the fuzzer and address sanitizers by run.sh:
//
//   Tests/Fuzz/run.sh --seconds 35      # every target for 35 s (CI)
//   Tests/Fuzz/run.sh --hours 2         # the long run
//
//   fuzz input ─► mbuf (guard bytes / poisoned head and tail) ─► real stage runner ─► invariants
//
// Every target is an executable whose entry point is LLVMFuzzerTestOneInput; libFuzzer supplies
// main(). See README.md for the targets, their invariants and the corpus layout.
import Foundation
import PackageDescription

// DPDK 22.11 from Debian, as in the root Package.swift.
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

// The root package, by path (two folders up). SwiftPM names a path dependency after its folder.
let root = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().deletingLastPathComponent()
let rootPackage = root.lastPathComponent.lowercased()

/// The fuzz targets: folder under Sources/ = executable name.
let fuzzTargets = [
    "fuzz-classify-wire", "fuzz-classify-tunnel", "fuzz-decapsulate", "fuzz-icmp-errors", "fuzz-neighbors", "fuzz-gossip",
]

let package = Package(
    name: "SwitchyardFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: "../.."),
    ],
    targets: [
        .target(
            name: "FuzzSupport",
            dependencies: [
                .product(name: "SwitchyardEngine", package: rootPackage),
                .product(name: "SwitchyardClusterPlugin", package: rootPackage),
                .product(name: "SwitchyardTesting", package: rootPackage),
                .product(name: "SwitchyardStages", package: rootPackage),
            ],
            swiftSettings: dpdkSwiftSettings),
    ] + fuzzTargets.map {
        .executableTarget(
            name: $0,
            dependencies: ["FuzzSupport",
                           .product(name: "SwitchyardEngine", package: rootPackage),
                           .product(name: "SwitchyardClusterPlugin", package: rootPackage),
                           .product(name: "SwitchyardTesting", package: rootPackage),
                           .product(name: "SwitchyardStages", package: rootPackage)],
            swiftSettings: dpdkSwiftSettings)
    },
    swiftLanguageModes: [.v5]
)
