import Foundation
import SwitchyardConfig
import SwitchyardCore

/// What a plug-in parsed from its top-level sections of the configuration file.
public protocol PluginSettings: Sendable {}

/// A plug-in extends the engine with a domain of its own (the cluster is one: SwitchyardClusterPlugin),
/// so that the engine and the core know nothing of it. One small protocol, in the manner of VPP's
/// plugins and Envoy's filters: the plug-in ships its configuration, its runtime, its control-socket
/// commands and its counters together; the engine calls it at fixed points.
///
///     parse     EngineConfiguration.parse ─► parse(root) for its `sections` ─► PluginSettings
///               parameterServices(settings) ─► StageParameterContext.services (stage parsers)
///     run       EAL, ports, capture ─► init(engine:settings:qsbr:) ─► stageServices ─► LcoreGraph per lcore
///               control socket up ─► start() (may wait: the gossip sync) ─► lcores launched
///               control thread, every 10 ms ─► tick(now:) ─► capture, control socket
///               every 100 ms and before a control answer ─► refreshCounters()
///     reload    refusal(old, new) / fixedDifferences / liveChanges ─► prepareReload(new) ─► graphs
///               built with its new services ─► reloadApplied(new) (or reloadFailed())
///     stop      SIGINT/SIGTERM ─► prepareStop(lcoresFailed:) ─► seconds served on ─► lcores stop ─► stop()
///
/// Every call comes on the control thread (the engine's main lcore), never on a worker lcore.
/// Counters go into the engine's `CounterRegistry` (`engine.counters`), commands into its
/// `ControlServer` (`engine.control`): both are then read, exported and documented like the engine's own.
public protocol EnginePlugin: AnyObject {
    /// The top-level configuration keys it owns (`cluster`, `bgp`). A key no plug-in owns is
    /// rejected by name, as before.
    static var sections: [String] { get }

    /// Parses its sections of the file (those present), reporting every error into `diagnostics`
    /// with file, line and key. Called before the stages are parsed.
    static func parse(_ root: ConfigMap, into diagnostics: inout ConfigDiagnostics) -> any PluginSettings

    /// What the stages' parameter parsers may read (the cluster: its `ClusterConfiguration`).
    static func parameterServices(_ settings: any PluginSettings) -> StageServices

    /// Why a reload from `old` to `new` is refused before anything else is compared (nil: it is not),
    /// as the end of "reload refused: ...".
    static func refusal(from old: any PluginSettings, to new: any PluginSettings) -> String?

    /// One line per key of its sections that cannot change while the engine runs and differs.
    static func fixedDifferences(from old: any PluginSettings, to new: any PluginSettings) -> [String]

    /// What changes live, in words, for the reply and the log.
    static func liveChanges(from old: any PluginSettings, to new: any PluginSettings) -> [String]

    /// Its DPDK telemetry commands, registered beside the engine's when the engine first runs.
    static var telemetryCommands: [Telemetry.Command] { get }

    /// The services a graph built outside an engine needs (`LcoreGraphDriver`: no RCU, no peers).
    /// Whatever the services hold lives as long as the returned owner.
    static func standaloneServices(_ settings: any PluginSettings, name: String, socket: Int32) throws
        -> (services: StageServices, owner: AnyObject?)

    /// Builds the runtime, after the ports and the capture, before the graphs: registers its
    /// counters and control commands. `qsbr` is the engine's RCU state.
    init(engine: Engine, settings: any PluginSettings, qsbr: OpaquePointer) throws

    /// What the stages of the graphs built now read (the cluster: its `ClusterRuntime`).
    var stageServices: StageServices { get }

    /// After the graphs and the control socket, before any lcore runs (the gossip sync waits here).
    func start() throws

    /// Control-thread work, every iteration of the engine's control loop (about every 10 ms).
    func tick(now: Date)

    /// Copies values kept outside the registry into its counter blocks (every 100 ms, before a
    /// control answer, at shutdown).
    func refreshCounters()

    /// Adds its part of `ctl status`.
    func status(into answer: inout [String: Any])

    /// Appended to the periodic counters log line (`--stats`) and to the summary at exit; nil: nothing.
    func report() -> String?

    /// Before a reload is compared: the settings as the plug-in will apply them (the cluster keeps
    /// departing hosts that still own flows).
    func adjustReload(_ new: any PluginSettings) -> any PluginSettings

    /// The services the new graphs of a reload to `new` read; nothing is published yet.
    func prepareReload(_ new: any PluginSettings) throws -> StageServices

    /// The graphs of `prepareReload` failed to build: back to the running state.
    func reloadFailed()

    /// The new graphs run: what follows a reload (the cluster: gossip members follow the hosts).
    func reloadApplied(_ new: any PluginSettings)

    /// SIGINT/SIGTERM, before the lcores stop: returns how many more seconds the lcores should
    /// serve (the BGP withdrawal's drain time).
    func prepareStop(lcoresFailed: Bool) -> Double

    /// The lcores have stopped (the BGP speaker goes).
    func stop()

    /// The engine releases its RCU state next: drop everything registered with it.
    func release()
}

/// The settings of one plug-in in a parsed configuration.
public struct PluginSection: @unchecked Sendable {
    public var plugin: any EnginePlugin.Type
    public var settings: any PluginSettings

    public init(plugin: any EnginePlugin.Type, settings: any PluginSettings) {
        self.plugin = plugin
        self.settings = settings
    }
}

extension EngineConfiguration {
    /// The settings of plug-in `type`, when the configuration was parsed with it.
    public func settings<P: EnginePlugin>(of type: P.Type) -> (any PluginSettings)? {
        plugins.first { ObjectIdentifier($0.plugin) == ObjectIdentifier(type) }?.settings
    }

    /// Replaces the settings of plug-in `type` (tests and the plug-in's own reloads).
    public mutating func setSettings<P: EnginePlugin>(_ settings: any PluginSettings, of type: P.Type) {
        guard let index = plugins.firstIndex(where: { ObjectIdentifier($0.plugin) == ObjectIdentifier(type) }) else { return }
        plugins[index].settings = settings
    }
}
