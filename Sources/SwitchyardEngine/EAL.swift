import CDPDK
import Foundation

/// The EAL command line Switchyard derives from a configuration, and EAL start-up.
///
///     switchyard --lcores=0@<control_cpu>,<id>@<cpu>,...  --main-lcore=0
///                <memory: hugepages, or --no-huge -m N>    <devices: --vdev / -a, or --no-pci>
///                <eal.args from the file>                  <arguments after `--` on the command line>
///
/// Later arguments win, so the command line overrides the file.
public struct EALPlan: Sendable {
    public var arguments: [String]
    public var usesHugepages: Bool
    /// One line saying how memory is set up (printed at start).
    public var memoryNote: String
}

public enum EAL {
    /// Free 2 MB (or other size) hugepages and whether hugetlbfs is mounted.
    public static func hugepageState() -> (free: Int, mounted: Bool) {
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let free = meminfo.split(separator: "\n").first { $0.hasPrefix("HugePages_Free:") }
            .flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        return (free, mounts.contains(" hugetlbfs "))
    }

    public static func plan(for config: EngineConfiguration, overrides: [String] = []) throws -> EALPlan {
        var args = ["switchyard"]
        let lcores = ["0@\(config.eal.controlCPU)"] + config.lcores.map { "\($0.id)@\($0.cpu)" }
        args += ["--lcores=\(lcores.joined(separator: ","))", "--main-lcore=0"]

        let state = hugepageState()
        let useHuge: Bool
        switch config.eal.hugepages {
        case .off: useHuge = false
        case .required:
            guard state.free > 0 && state.mounted else {
                throw EngineError.setup("eal.hugepages is 'required' but \(state.free) hugepages are free"
                    + (state.mounted ? "" : " and hugetlbfs is not mounted") + " (see Hugepages/README.md)")
            }
            useHuge = true
        case .auto: useHuge = state.free > 0 && state.mounted
        }
        let note: String
        // Every process has its own runtime directory, /var/run/dpdk/switchyard-<pid>, which holds
        // nothing but the DPDK telemetry socket (`dpdk-telemetry.py -f switchyard-<pid>`): with DPDK's
        // default prefix ("rte") every engine would share one directory and the second would answer
        // on `dpdk_telemetry.v2:1`, which nothing tells the operator. --in-memory and --no-shconf
        // keep no other runtime files, so several engines run side by side (docs/operations.md).
        let prefix = "--file-prefix=switchyard-\(getpid())"
        if useHuge {
            // --in-memory: hugepages without files in hugetlbfs and no shared configuration.
            args += ["--in-memory", prefix]
            note = "memory: hugepages (\(state.free) free)"
        } else {
            args += ["--no-huge", "-m", String(config.eal.memoryMB), "--no-shconf", prefix]
            note = config.eal.hugepages == .off
                ? "memory: --no-huge -m \(config.eal.memoryMB) (eal.hugepages: off)"
                : "memory: no hugepages reserved, falling back to --no-huge -m \(config.eal.memoryMB) (slower: TLB misses; see Hugepages/README.md)"
        }

        let pci = config.ports.filter { !$0.isVirtual }
        if pci.isEmpty { args.append("--no-pci") }
        for port in config.ports {
            args.append(port.isVirtual ? "--vdev=\(port.device)" : "--allow=\(port.device)")
        }
        args += config.eal.args
        args += overrides
        return EALPlan(arguments: args, usesHugepages: useHuge, memoryNote: note)
    }

    nonisolated(unsafe) private static var initialized = false
    /// The runtime directory (/var/run/dpdk/<prefix>) to remove at exit.
    nonisolated(unsafe) private static var runtimeDirectory: UnsafeMutablePointer<CChar>?

    /// rte_eal_init: once per process (DPDK cannot start its EAL twice).
    public static func initialize(_ arguments: [String]) throws {
        guard !initialized else { throw EngineError.setup("the EAL is already initialised in this process") }
        // DPDK leaves its runtime directory behind, and its telemetry socket in it is only unlinked
        // by DPDK's own exit handler. Exit handlers run in reverse order, so registering this one
        // first makes it run last, when the directory is empty. rmdir leaves a non-empty one alone.
        atexit {
            if let directory = EAL.runtimeDirectory { rmdir(directory) }
        }
        let owned = arguments.map { strdup($0) }
        defer { owned.forEach { free($0) } }
        var argv = owned // rte_eal_init permutes and overwrites argv entries: free the originals
        let rc = rte_eal_init(Int32(argv.count), &argv)
        guard rc >= 0 else {
            throw EngineError.setup("rte_eal_init failed: \(String(cString: sy_strerror(sy_errno()))) (arguments: \(arguments.dropFirst().joined(separator: " ")))")
        }
        initialized = true
        runtimeDirectory = strdup(rte_eal_get_runtime_dir())
    }

    public static var isInitialized: Bool { initialized }

    public static func cleanup() {
        guard initialized else { return }
        rte_eal_cleanup()
        initialized = false
    }
}

public enum EngineError: Error, CustomStringConvertible {
    case setup(String)
    case port(String, String)

    public var description: String {
        switch self {
        case .setup(let message): message
        case .port(let name, let message): "port '\(name)': \(message)"
        }
    }
}
