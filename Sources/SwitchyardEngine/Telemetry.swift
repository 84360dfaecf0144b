import CDPDK
import Foundation

/// Switchyard's DPDK telemetry commands, answered beside DPDK's own (`/ethdev/stats,0`, ...):
///
///     dpdk-telemetry.py -f <file prefix> ──► /var/run/dpdk/<file prefix>/dpdk_telemetry.v2
///         ──► DPDK's telemetry thread (a control thread, never an lcore)
///         ──► callback (C) ──► Telemetry.source: the engine's CounterRegistry ──► rte_tel_data (JSON)
///
///     /switchyard/stages[,STAGE]   per stage instance: kind, then per lcore `in`, the dispositions and
///                                  the stage's own counters (drop reasons first among them)
///     (plug-ins)                   `EnginePlugin.telemetryCommands` (the cluster: /switchyard/connections,
///                                  /switchyard/gossip; SwitchyardClusterPlugin/ClusterPlugin+Telemetry.swift)
///
/// DPDK keeps registered commands for the life of the process (there is no unregister), so the
/// callbacks read a registry that `register` sets and `unregister` clears: after the engine stops
/// they answer `{"running": 0}`. Reading counters is lock-free; `allBlocks` takes a short lock.
///
/// DPDK allows only letters, digits, `_` and `/` in dict keys (at most 127 bytes) and 256 entries per
/// dict: other characters become `_` (`tx-full` is `tx_full`), entries past 256 are left out, and one
/// answer holds at most 16 KB of JSON (ask for one stage with `/switchyard/stages,NAME` if the
/// whole list is too long).
public enum Telemetry {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var source: CounterRegistry?
    nonisolated(unsafe) private static var registered = false

    /// A telemetry command: its name, help (`/help,/switchyard/stages`) and callback, which answers
    /// with `Telemetry.answer(data) { dict, blocks in ... }`.
    public struct Command {
        public var name: String
        public var help: String
        public var callback: telemetry_cb

        public init(name: String, help: String, callback: telemetry_cb) {
            self.name = name
            self.help = help
            self.callback = callback
        }
    }

    /// The engine's own commands.
    static let commands: [Command] = [
        Command(name: "/switchyard/stages",
                help: "Switchyard stage counters per stage instance and lcore: in, dispositions, own counters. Parameters: a stage name (optional)",
                callback: { _, params, data in Telemetry.answer(data) { stages($0, $1, only: params.map { String(cString: $0) }) } }),
    ]

    /// Makes the commands (the engine's and its plug-ins') answer from `engine.counters`,
    /// registering them with DPDK on first use, and logs where the telemetry socket is. After `rte_eal_init`.
    public static func register(engine: Engine, log: (String) -> Void) {
        let first = lock.withLock {
            source = engine.counters
            defer { registered = true }
            return !registered
        }
        if first {
            for command in commands + engine.plugins.flatMap({ type(of: $0).telemetryCommands }) {
                // Copies that live as long as the process: DPDK keeps the command for its lifetime.
                let rc = rte_telemetry_register_cmd(strdup(command.name), command.callback, strdup(command.help))
                if rc != 0 { log("telemetry: cannot register \(command.name): \(String(cString: sy_strerror(-rc)))") }
            }
        }
        let directory = String(cString: rte_eal_get_runtime_dir())
        let socket = directory + "/dpdk_telemetry.v2"
        if FileManager.default.fileExists(atPath: socket) {
            log("telemetry: \(socket) (dpdk-telemetry.py -f \((directory as NSString).lastPathComponent))")
        } else {
            log("telemetry: no socket at \(socket) (--no-telemetry given, or the socket could not be made)")
        }
    }

    /// The commands answer `{"running": 0}` from now on.
    public static func unregister() {
        lock.withLock { source = nil }
    }

    // MARK: - Answers

    /// Starts `data` as a dict and fills it from the registry, or says the engine is not running.
    /// DPDK runs one telemetry thread per client connection, so answers may run concurrently.
    public static func answer(_ data: OpaquePointer?, _ fill: (Dict, [CounterBlock]) -> Void) -> Int32 {
        guard let data else { return -EINVAL }
        let registry = lock.withLock { source }
        let dict = Dict(start: data)
        guard let registry else {
            dict.add("running", UInt64(0))
            return 0
        }
        fill(dict, registry.allBlocks)
        return 0
    }

    static func stages(_ dict: Dict, _ current: [CounterBlock], only: String?) {
        let blocks = current.filter { $0.family == "stage" }
        var names: [String] = []
        for block in blocks {
            let name = String(block.scope.dropFirst("stage ".count))
            if !names.contains(name) && (only == nil || only == "" || only == name) { names.append(name) }
        }
        for name in names {
            let stage = Dict()
            let members = blocks.filter { $0.scope == "stage " + name }.sorted { $0.lcore < $1.lcore }
            stage.add("kind", members.first?.kind ?? "")
            for block in members {
                let lcore = Dict()
                // `in`, the dispositions, then the stage's own counters, drop reasons first.
                let own = block.counters.indices.dropFirst(block.alwaysShown)
                let order = Array(block.counters.indices.prefix(block.alwaysShown))
                    + own.filter { block.counters[$0].severity == .drop }
                    + own.filter { block.counters[$0].severity != .drop }
                let values = block.valuesLastToFirst()
                for index in order { lcore.add(block.counters[index].name, values[index]) }
                stage.add("lcore_\(block.lcore)", lcore)
            }
            dict.add(name, stage)
        }
    }

    // MARK: - rte_tel_data

    /// A telemetry dict: the answer itself, or a container inside it.
    public struct Dict {
        let data: OpaquePointer
        private let owned: Bool

        /// The answer's own data, started as a dict.
        init(start data: OpaquePointer) {
            self.data = data
            owned = false
            rte_tel_data_start_dict(data)
        }

        /// A container, freed by DPDK with the answer once added (freed here if it cannot be).
        public init() {
            data = rte_tel_data_alloc()
            owned = true
            rte_tel_data_start_dict(data)
        }

        public func add(_ name: String, _ value: UInt64) { _ = rte_tel_data_add_dict_u64(data, Telemetry.key(name), value) }
        public func add(_ name: String, _ value: String) {
            _ = rte_tel_data_add_dict_string(data, Telemetry.key(name), String(value.prefix(Int(RTE_TEL_MAX_STRING_LEN) / 2)))
        }
        public func add(_ name: String, _ child: Dict) {
            if rte_tel_data_add_dict_container(data, Telemetry.key(name), child.data, 0) != 0 {
                rte_tel_data_free(child.data)
            }
        }
    }

    /// A dict key DPDK accepts: letters, digits, `_` and `/`, at most 127 bytes.
    static func key(_ name: String) -> String {
        let allowed = name.unicodeScalars.prefix(Int(RTE_TEL_MAX_STRING_LEN) - 1).map { scalar -> Character in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || scalar == "_" || scalar == "/")
                ? Character(scalar) : "_"
        }
        return String(allowed)
    }
}
