import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting

/// The cluster every packet target runs in: the golden capture's (Tests/Golden/host1/config.yaml),
/// so the golden frames of the seed corpus reach every path, with smaller tables.
///
///     host 1 198.18.0.11 (this host)   host 2 198.18.0.12 (peer, 02:00:00:00:02:02)
///     web  198.19.0.1  tcp 80   → 198.18.100.10:8080 (host 1)
///     game 198.19.0.1  udp 7000 → 198.18.100.11:7700 (host 1)
///     api  198.19.0.2  tcp 443  → 198.18.101.10:8443 (host 2)
///     web6 fd00:19::1  tcp 80   → [fd00:100::10]:8080 (host 1)
public enum FuzzCluster {
    public static func yaml(tunnel: String = "{ kind: vxlan, port: 4789, vni: 7 }", extra: String = "") -> String {
        """
        host: 1
        hosts:
          - { id: 1, address: 198.18.0.11 }
          - { id: 2, address: 198.18.0.12, mac: "02:00:00:00:02:02" }
        tunnel: \(tunnel)
        lookup_table_size: 251
        connections: { capacity: 1024 }
        services:
          - { name: web, vip: 198.19.0.1, protocol: tcp, port: 80, backends: [{ host: 1, address: 198.18.100.10, port: 8080 }] }
          - { name: game, vip: 198.19.0.1, protocol: udp, port: 7000, backends: [{ host: 1, address: 198.18.100.11, port: 7700 }] }
          - { name: api, vip: 198.19.0.2, protocol: tcp, port: 443, backends: [{ host: 2, address: 198.18.101.10, port: 8443 }] }
          - { name: web6, vip: "fd00:19::1", protocol: tcp, port: 80, backends: [{ host: 1, address: "fd00:100::10", port: 8080 }] }
        \(extra)
        """
    }

    /// A fresh runtime (its own DPDK names) for `yaml`.
    public static func runtime(_ yaml: String = FuzzCluster.yaml()) -> ClusterRuntime {
        TestEAL.start()
        do {
            let settings = try ClusterConfiguration.parse(sectionBody: yaml, file: "<fuzz cluster>")
            return try ClusterRuntime(configuration: settings, name: "syfuzz\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        } catch {
            fatalError("cannot build the fuzz cluster: \(error)")
        }
    }

    public static let uplinkMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x01]
    public static let backendsMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x02]
    public static let routerMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01]

    static func tuple(_ m: [UInt8]) -> (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) { (m[0], m[1], m[2], m[3], m[4], m[5]) }

    /// Port 0 faces the uplink, port 1 the backends.
    public static let ports = [
        PortDescription(name: "uplink", portID: 0, mac: tuple(uplinkMAC), socketID: 0),
        PortDescription(name: "backends", portID: 1, mac: tuple(backendsMAC), socketID: 0),
    ]

    public static func ip(_ text: String) -> [UInt8] { IPAddress(text)!.bytes }
}

/// A fuzz input: one selector byte (which instance, which layout) and the frame.
///
///     [ selector | frame bytes ... ]      selector bit 0: 1 = tight layout, 0 = roomy
public struct FuzzInput {
    public let selector: UInt8
    public let frame: UnsafeRawBufferPointer

    public init?(_ data: UnsafePointer<UInt8>, _ size: Int) {
        guard size >= 1 else { return nil }
        selector = data[0]
        frame = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    }

    public var layout: Layout { selector & 1 == 1 ? .tight : .roomy }
}

/// What a target emitted, for the tshark check of the seed corpus (run.sh --check-corpus).
///
/// With SWITCHYARD_FUZZ_OUTPUT=DIR, every packet a stage passed on is kept beside its input, and at
/// exit DIR/<target>-in.pcap and DIR/<target>-out.pcap hold the pairs (frame n of one is frame n of
/// the other), and DIR/<target>-built.pcap the packets built from scratch (ARP and ND requests and
/// answers, echo replies), which must be well formed whatever their input was.
public enum FuzzOutput {
    nonisolated(unsafe) static var directory: String? = ProcessInfo.processInfo.environment["SWITCHYARD_FUZZ_OUTPUT"]
    nonisolated(unsafe) static var target = "fuzz"
    nonisolated(unsafe) static var inputs: [[UInt8]] = []
    nonisolated(unsafe) static var outputs: [[UInt8]] = []
    nonisolated(unsafe) static var built: [[UInt8]] = []

    public static var enabled: Bool { directory != nil }

    /// Records a packet derived from `input` (translated, decapsulated, forwarded, passed on).
    public static func derived(input: UnsafeRawBufferPointer, output: [UInt8]) {
        guard enabled, !input.isEmpty, !output.isEmpty else { return }
        inputs.append(Array(input))
        outputs.append(output)
    }

    /// Records a packet the stage built from scratch.
    public static func built(_ output: [UInt8]) {
        guard enabled, !output.isEmpty else { return }
        built.append(output)
    }

    static func write() {
        guard let directory else { return }
        do {
            try Pcap.write(inputs, to: "\(directory)/\(target)-in.pcap")
            try Pcap.write(outputs, to: "\(directory)/\(target)-out.pcap")
            try Pcap.write(built, to: "\(directory)/\(target)-built.pcap")
        } catch {
            FileHandle.standardError.write("cannot write \(directory): \(error)\n".data(using: .utf8)!)
        }
    }
}

/// What every target does in LLVMFuzzerInitialize.
///
/// With SWITCHYARD_FUZZ_WRITE_SEEDS=DIR it writes its seed corpus there (seed-000, seed-001, ...)
/// and exits (run.sh --make-corpus); SWITCHYARD_GOLDEN_DIR names Tests/Golden/host1 for the
/// targets that split its captures into seeds.
public enum FuzzMain {
    public static func initialize(target: String, seeds: () -> [[UInt8]]) {
        FuzzOutput.target = target
        if FuzzOutput.enabled { atexit { FuzzOutput.write() } }
        guard let directory = ProcessInfo.processInfo.environment["SWITCHYARD_FUZZ_WRITE_SEEDS"] else { return }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for (index, seed) in seeds().enumerated() {
                let name = String(format: "%@/seed-%03d", directory, index)
                try Data(seed).write(to: URL(fileURLWithPath: name))
            }
        } catch {
            fatalError("cannot write seeds to \(directory): \(error)")
        }
        exit(0)
    }

    /// The frames of a golden capture (Tests/Golden/host1/NAME), empty when SWITCHYARD_GOLDEN_DIR is unset.
    public static func golden(_ name: String) -> [[UInt8]] {
        guard let directory = ProcessInfo.processInfo.environment["SWITCHYARD_GOLDEN_DIR"] else { return [] }
        return (try? Pcap.read("\(directory)/\(name)")) ?? []
    }

    /// Every seed twice: once per layout (selector bit 0), with `selector` in the other bits.
    public static func bothLayouts(_ frames: [[UInt8]], selector: UInt8) -> [[UInt8]] {
        frames.flatMap { [[selector & ~1] + $0, [selector | 1] + $0] }
    }
}
