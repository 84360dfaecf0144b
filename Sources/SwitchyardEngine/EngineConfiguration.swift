import CDPDK
import Foundation
import SwitchyardConfig
import SwitchyardCore

/// The stage configuration file, parsed and validated. See docs/configuration.md.
///
///     eal ─ mempool ─ burst_size
///     ports:  name, device, queues, descriptors, rss
///     rings:  name, size                         (lock-free hand-off between lcores)
///     stages: name, kind, <parameters>, next: { disposition: target }
///     lcores: id, cpu, idle, poll: [ {port, queue, to} | {ring, to} ]
///     <plug-in sections>                         (each parsed by the plug-in that owns it: EnginePlugin;
///                                                 the cluster plug-in owns `cluster:` and `bgp:`)
///
/// A target is a stage name, `port:NAME`, `ring:NAME` or `drop`.
public struct EngineConfiguration {
    public var file: String
    /// The engine's name (`name:`, else the file's base name without extension): names the
    /// control socket, /run/switchyard/NAME.sock.
    public var name: String
    public var control: ControlSettings
    public var metrics: MetricsSettings?
    public var eal: EALSettings
    public var mempool: MempoolSettings
    public var burstSize: Int
    public var ports: [PortSettings]
    public var rings: [RingSettings]
    public var stages: [StageInstance]
    public var lcores: [LcoreSettings]
    /// Each plug-in's settings, from the sections it owns, in the order the plug-ins were given.
    public var plugins: [PluginSection]

    public func port(named name: String) -> PortSettings? { ports.first { $0.name == name } }
    public func stage(named name: String) -> StageInstance? { stages.first { $0.name == name } }
    public func ring(named name: String) -> RingSettings? { rings.first { $0.name == name } }
}

/// `control:` the control socket `switchyard ctl` talks to.
public struct ControlSettings: Sendable {
    /// The Unix socket's path; nil: /run/switchyard/NAME.sock.
    public var socket: String?
    /// False with `socket: none`: no control socket.
    public var enabled = true

    public init(socket: String? = nil, enabled: Bool = true) {
        self.socket = socket
        self.enabled = enabled
    }

    /// Where the control socket of an engine named `name` is, when the file does not say.
    public static func defaultSocket(name: String) -> String { "/run/switchyard/\(name).sock" }
}

/// `metrics:` the Prometheus endpoint.
public struct MetricsSettings: Sendable {
    /// Address to listen on (IPv4 or IPv6 literal, or a host name).
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `ADDR:PORT` or `[V6ADDR]:PORT`; nil when malformed.
    public static func parse(listen text: String) -> MetricsSettings? {
        var host: Substring, port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            if host.contains(":") { return nil } // an IPv6 address needs brackets
        }
        guard !host.isEmpty, let number = Int(port), (1...65535).contains(number) else { return nil }
        return MetricsSettings(host: String(host), port: number)
    }
}

public enum HugepagePolicy: String, Sendable {
    /// Use hugepages when some are free, else `--no-huge` (with one log line saying so).
    case auto
    /// Fail when no hugepages are free.
    case required
    /// Always `--no-huge`.
    case off
}

public struct EALSettings: Sendable {
    public var hugepages: HugepagePolicy = .auto
    /// Memory for `--no-huge` (`-m`), in MiB.
    public var memoryMB: Int = 512
    /// The CPU of the main lcore (lcore 0), which runs the control thread.
    public var controlCPU: Int = 0
    /// Extra EAL arguments, appended after the ones Switchyard derives.
    public var args: [String] = []
}

public struct MempoolSettings: Sendable {
    /// Mbufs per NUMA socket; nil sizes the pool from the ports, rings and lcores.
    public var mbufs: Int?
    public var cache: Int = 256
    public var dataRoom: Int = 2048 + 128
}

public struct PortSettings: Sendable {
    public var name: String
    /// A PCI address (`0000:03:00.0`) or a virtual device (`net_pcap0,rx_pcap=in.pcap`).
    public var device: String
    public var rxQueues: Int = 1
    public var txQueues: Int = 1
    public var rxDescriptors: Int = 1024
    public var txDescriptors: Int = 1024
    public var rss: Bool = true
    public var promiscuous: Bool = true
    /// The port's MTU (the largest IP packet, Ethernet header not counted); nil keeps the device's
    /// default (1500 for most). Checked against the device's limits when the engine starts.
    public var mtu: Int?
    public var line: Int

    /// True for DPDK virtual devices (`net_…`), passed as `--vdev`; PCI devices go to `--allow`.
    public var isVirtual: Bool { device.hasPrefix("net_") || device.hasPrefix("eth_") }
    /// The device name DPDK registers the port under.
    public var deviceName: String { String(device.split(separator: ",", maxSplits: 1).first ?? "") }
}

public struct RingSettings: Sendable {
    public var name: String
    public var size: Int = 1024
    public var line: Int
}

/// Where a disposition leads.
public enum WiringTarget: Equatable, Sendable, CustomStringConvertible {
    case drop
    case stage(String)
    case port(String)
    case ring(String)

    public var description: String {
        switch self {
        case .drop: "drop"
        case .stage(let name): name
        case .port(let name): "port:\(name)"
        case .ring(let name): "ring:\(name)"
        }
    }
}

public struct StageInstance: @unchecked Sendable {
    public var name: String
    public var descriptor: StageDescriptor
    public var parameters: any StageParameters
    /// Targets by disposition index; index 0 is always `.drop`.
    public var next: [WiringTarget]
    public var line: Int
}

public enum IdlePolicy: Equatable, Sendable {
    /// Poll without pause: lowest latency, one core at 100 %.
    case busy
    /// After empty polls, sleep, doubling up to `maxSleepMicroseconds`; reset on the first packet.
    case backoff(maxSleepMicroseconds: Int)
}

public enum PollSource: Equatable, Sendable, CustomStringConvertible {
    case port(String, queue: Int)
    case ring(String)

    public var description: String {
        switch self {
        case .port(let name, let queue): "port \(name) rx queue \(queue)"
        case .ring(let name): "ring \(name)"
        }
    }
}

public struct LcoreSettings: Sendable {
    public var id: Int
    public var cpu: Int
    public var idle: IdlePolicy
    public var poll: [(source: PollSource, to: String)]
    public var line: Int
}

// MARK: - Parsing

extension EngineConfiguration {
    /// Reads and validates a configuration file; throws `ConfigErrors` with every problem found.
    /// `plugins` own the top-level sections beyond the engine's (`standardPlugins`: the cluster).
    public static func load(path: String, stages catalog: [StageDescriptor], plugins: [any EnginePlugin.Type]) throws
        -> EngineConfiguration
    {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigErrors([ConfigError(file: path, line: 0, column: 0, context: "", key: nil,
                                            message: "cannot read the file: \(error.localizedDescription)")])
        }
        return try parse(text, file: path, stages: catalog, plugins: plugins)
    }

    public static func parse(_ text: String, file: String, stages catalog: [StageDescriptor],
                             plugins pluginTypes: [any EnginePlugin.Type]) throws -> EngineConfiguration
    {
        var diagnostics = ConfigDiagnostics()
        guard let root = diagnostics.attempt({ try ConfigDocument.parse(text, file: file) }) else {
            try diagnostics.check()
            preconditionFailure()
        }
        let fileStem = ((file as NSString).lastPathComponent as NSString).deletingPathExtension
        let name = diagnostics.attempt { try parseName(root.optional("name"), default: fileStem) } ?? fileStem
        let control = diagnostics.attempt { try parseControl(root.optional("control")) } ?? ControlSettings()
        let metrics = diagnostics.attempt { try parseMetrics(root.optional("metrics")) } ?? nil
        let eal = diagnostics.attempt { try parseEAL(root.optional("eal")) } ?? EALSettings()
        let mempool = diagnostics.attempt { try parseMempool(root.optional("mempool")) } ?? MempoolSettings()
        let burstSize = diagnostics.attempt { try root.int("burst_size", default: defaultBurstSize, in: 1...maximumBurstSize) } ?? defaultBurstSize
        let ports = parseList(root, "ports", "port", &diagnostics, parsePort)
        let rings = parseList(root, "rings", "ring", &diagnostics, parseRing)
        let portNames = ports.map(\.name)
        // The plug-ins' sections first: the stages' parameter parsers may read them.
        let plugins = pluginTypes.map { PluginSection(plugin: $0, settings: $0.parse(root, into: &diagnostics)) }
        let sections = Set(root.keys)
        let services = plugins.reduce(StageServices()) { $0.merging($1.plugin.parameterServices($1.settings)) }
        let stages = parseList(root, "stages", "stage", &diagnostics) { value in
            try parseStage(value, catalog: catalog, portNames: portNames, sections: sections, services: services)
        }
        let lcores = parseList(root, "lcores", "lcore", &diagnostics, parseLcore)
        _ = diagnostics.attempt { try root.finish() }

        var config = EngineConfiguration(file: file, name: name, control: control, metrics: metrics, eal: eal, mempool: mempool, burstSize: burstSize, ports: ports,
                                         rings: rings, stages: stages, lcores: lcores, plugins: plugins)
        if diagnostics.errors.isEmpty {
            config.validate(into: &diagnostics)
        }
        try diagnostics.check()
        return config
    }

    /// Parses each item of a top-level list; an item that fails is reported and skipped.
    private static func parseList<T>(_ root: ConfigMap, _ key: String, _ what: String,
                                     _ diagnostics: inout ConfigDiagnostics,
                                     _ parse: (ConfigValue) throws -> T) -> [T]
    {
        guard let items = diagnostics.attempt({ try root.list(key) }) else { return [] }
        return items.enumerated().compactMap { index, item in
            diagnostics.attempt { try parse(item.within(label(item, what, index))) }
        }
    }

    /// "stage 'swap'" when the item has a name, else "stage #2".
    private static func label(_ item: ConfigValue, _ what: String, _ index: Int) -> String {
        if case .mapping(let mapping) = item.node {
            if let name = mapping["name"]?.string { return "\(what) '\(name)'" }
            if let id = mapping["id"]?.string { return "\(what) \(id)" }
        }
        return "\(what) #\(index + 1)"
    }

    /// Letters, digits, `.`, `_` and `-`, at most 64: it becomes a file name.
    private static func parseName(_ value: ConfigValue?, default stem: String) throws -> String {
        guard let value = value?.within("name") else {
            return String(stem.map { $0.isLetter || $0.isNumber || "._-".contains($0) ? $0 : "_" }.prefix(64))
        }
        let name = try value.string()
        guard !name.isEmpty, name.count <= 64, !name.hasPrefix("."),
              name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
        else {
            throw value.error("must be 1 to 64 letters, digits, '.', '_' or '-' (it names the control socket), not starting with '.'",
                              key: "name")
        }
        return name
    }

    private static func parseControl(_ value: ConfigValue?) throws -> ControlSettings {
        guard let map = try value?.within("control").map() else { return ControlSettings() }
        var settings = ControlSettings()
        if let socket = map.optional("socket") {
            let path = try socket.string()
            if path == "none" {
                settings.enabled = false
            } else {
                guard path.hasPrefix("/"), path.utf8.count < 108 else {
                    throw socket.error("must be an absolute path shorter than 108 bytes, or `none`", key: "socket")
                }
                settings.socket = path
            }
        }
        try map.finish()
        return settings
    }

    private static func parseMetrics(_ value: ConfigValue?) throws -> MetricsSettings? {
        guard let map = try value?.within("metrics").map() else { return nil }
        let listen = try map.required("listen")
        guard let settings = MetricsSettings.parse(listen: try listen.string()) else {
            throw listen.error("must be ADDRESS:PORT (IPv6: [ADDRESS]:PORT), port 1-65535", key: "listen")
        }
        try map.finish()
        return settings
    }

    private static func parseEAL(_ value: ConfigValue?) throws -> EALSettings {
        var eal = EALSettings()
        guard let map = try value?.within("eal").map() else { return eal }
        eal.hugepages = HugepagePolicy(rawValue: try map.choice("hugepages", ["auto", "required", "off"],
                                                                default: "auto"))!
        eal.memoryMB = try map.int("memory_mb", default: 512, in: 64...1_048_576)
        eal.controlCPU = try map.int("control_cpu", default: 0, in: 0...1023)
        eal.args = try map.stringList("args")
        try map.finish()
        return eal
    }

    private static func parseMempool(_ value: ConfigValue?) throws -> MempoolSettings {
        var pool = MempoolSettings()
        guard let map = try value?.within("mempool").map() else { return pool }
        pool.mbufs = try map.optional("mbufs")?.int(in: 1023...16_777_215)
        pool.cache = try map.int("cache", default: 256, in: 0...512)
        pool.dataRoom = try map.int("data_room", default: 2176, in: 256...65535)
        try map.finish()
        return pool
    }

    private static func parseName(_ map: ConfigMap) throws -> String {
        let value = try map.required("name")
        let name = try value.string()
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_."))
        guard !name.isEmpty, name.unicodeScalars.allSatisfy(allowed.contains), !name.contains(":") else {
            throw value.error("'\(name)' is not a valid name (letters, digits, '-', '_', '.')")
        }
        guard name != "drop" else { throw value.error("'drop' is reserved") }
        return name
    }

    private static func parsePort(_ value: ConfigValue) throws -> PortSettings {
        let map = try value.map()
        var port = PortSettings(name: try parseName(map), device: try map.string("device"), line: map.line)
        guard !port.deviceName.isEmpty else { throw map.error("the device is empty", key: "device") }
        port.rxQueues = try map.int("rx_queues", default: 1, in: 0...64)
        port.txQueues = try map.int("tx_queues", default: 1, in: 0...64)
        port.rxDescriptors = try map.int("rx_descriptors", default: 1024, in: 32...32768)
        port.txDescriptors = try map.int("tx_descriptors", default: 1024, in: 32...32768)
        port.rss = try map.bool("rss", default: true)
        port.promiscuous = try map.bool("promiscuous", default: true)
        port.mtu = try map.optional("mtu")?.int(in: 68...65535)
        if port.rxQueues == 0 && port.txQueues == 0 {
            throw map.error("a port needs at least one rx or tx queue", key: "rx_queues")
        }
        try map.finish()
        return port
    }

    private static func parseRing(_ value: ConfigValue) throws -> RingSettings {
        let map = try value.map()
        var ring = RingSettings(name: try parseName(map), line: map.line)
        if let size = map.optional("size") {
            ring.size = try size.int(in: 64...1_048_576)
            guard ring.size & (ring.size - 1) == 0 else { throw size.error("\(ring.size) is not a power of two") }
        }
        try map.finish()
        return ring
    }

    private static func parseStage(_ value: ConfigValue, catalog: [StageDescriptor], portNames: [String],
                                   sections: Set<String>, services: StageServices) throws
        -> StageInstance
    {
        let map = try value.map()
        let name = try parseName(map)
        let kindValue = try map.required("kind")
        let kind = try kindValue.string()
        guard let descriptor = catalog.first(where: { $0.kind == kind }) else {
            throw kindValue.error("unknown stage kind '\(kind)' (known: \(catalog.map(\.kind).sorted().joined(separator: ", ")))")
        }
        let parameters = try descriptor.parseParameters(
            map, StageParameterContext(instanceName: name, portNames: portNames, sections: sections, services: services))

        var next = [WiringTarget](repeating: .drop, count: descriptor.dispositions.count)
        var wired = Set<String>()
        if let nextValue = map.optional("next") {
            let nextMap = try nextValue.map()
            for key in nextMap.keys {
                let target = try nextMap.required(key)
                guard let index = descriptor.dispositions.firstIndex(of: key) else {
                    let wirable = descriptor.dispositions.dropFirst()
                    throw nextMap.error("'\(kind)' has no disposition '\(key)'"
                        + (wirable.isEmpty ? " (it has none to wire)" : " (it has: \(wirable.joined(separator: ", ")))"), key: key)
                }
                guard index != 0 else {
                    throw nextMap.error("disposition 0 (drop) always frees the packet and cannot be wired", key: key)
                }
                next[index] = try parseTarget(target)
                wired.insert(key)
            }
        }
        try map.finish() // first: a misspelled `next` is reported as the unknown key it is
        for disposition in descriptor.dispositions.dropFirst() where !wired.contains(disposition) {
            throw map.error("disposition '\(disposition)' is not wired: add `\(disposition): <stage | port:NAME | ring:NAME | drop>` under next",
                            key: "next")
        }
        return StageInstance(name: name, descriptor: descriptor, parameters: parameters, next: next, line: map.line)
    }

    private static func parseTarget(_ value: ConfigValue) throws -> WiringTarget {
        let text = try value.string()
        if text == "drop" { return .drop }
        if text.hasPrefix("port:") { return .port(String(text.dropFirst(5))) }
        if text.hasPrefix("ring:") { return .ring(String(text.dropFirst(5))) }
        if text.contains(":") {
            throw value.error("'\(text)' is not a target: use a stage name, port:NAME, ring:NAME or drop")
        }
        return .stage(text)
    }

    private static func parseLcore(_ value: ConfigValue) throws -> LcoreSettings {
        let map = try value.map()
        let id = try map.int("id", in: 1...(Int(sy_max_lcore()) - 1))
        let cpu = try map.int("cpu", default: id, in: 0...1023)
        let idle: IdlePolicy
        switch try map.choice("idle", ["busy", "backoff"], default: "busy") {
        case "backoff": idle = .backoff(maxSleepMicroseconds: try map.int("idle_sleep_us", default: 200, in: 1...100_000))
        default:
            if map.has("idle_sleep_us") { throw map.error("only used with idle: backoff", key: "idle_sleep_us") }
            idle = .busy
        }
        var poll: [(PollSource, String)] = []
        for item in try map.list("poll") {
            let entry = try item.map()
            let to = try entry.string("to")
            if entry.has("port") {
                if entry.has("ring") { throw entry.error("poll either a port or a ring, not both", key: "ring") }
                poll.append((.port(try entry.string("port"), queue: try entry.int("queue", default: 0, in: 0...63)), to))
            } else if entry.has("ring") {
                poll.append((.ring(try entry.string("ring")), to))
            } else {
                throw entry.error("a poll entry needs `port` (with `queue`) or `ring`")
            }
            try entry.finish()
        }
        if poll.isEmpty { throw map.error("an lcore must poll at least one port queue or ring", key: "poll") }
        try map.finish()
        return LcoreSettings(id: id, cpu: cpu, idle: idle, poll: poll, line: map.line)
    }
}
