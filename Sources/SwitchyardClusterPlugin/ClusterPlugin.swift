import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardEngine
import SwitchyardGossip

/// The plug-ins the switchyard command, the tests and the benchmarks run with: the one place that
/// lists them (`EngineConfiguration.load(path:stages:plugins:)`).
public let standardPlugins: [any EnginePlugin.Type] = [ClusterPlugin.self]

/// What the cluster plug-in parsed: the `cluster:` section (hosts, services, tunnel, gossip, ...)
/// and the `bgp:` section (the BIRD speaker announcing the VIPs; docs/bgp.md).
public struct ClusterPluginSettings: PluginSettings {
    public var cluster: ClusterConfiguration?
    public var bgp: BgpSettings?

    public init(cluster: ClusterConfiguration? = nil, bgp: BgpSettings? = nil) {
        self.cluster = cluster
        self.bgp = bgp
    }
}

extension EngineConfiguration {
    /// The `cluster:` section, when the file has one (and the configuration was parsed with the
    /// cluster plug-in).
    public var cluster: ClusterConfiguration? {
        get { (settings(of: ClusterPlugin.self) as? ClusterPluginSettings)?.cluster }
        set {
            var settings = settings(of: ClusterPlugin.self) as? ClusterPluginSettings ?? ClusterPluginSettings()
            settings.cluster = newValue
            setSettings(settings, of: ClusterPlugin.self)
        }
    }

    /// `bgp:` the BIRD speaker that announces the VIPs (docs/bgp.md).
    public var bgp: BgpSettings? {
        get { (settings(of: ClusterPlugin.self) as? ClusterPluginSettings)?.bgp }
        set {
            var settings = settings(of: ClusterPlugin.self) as? ClusterPluginSettings ?? ClusterPluginSettings()
            settings.bgp = newValue
            setSettings(settings, of: ClusterPlugin.self)
        }
    }
}

/// The single-IP-image cluster as an engine plug-in (docs/plugins.md): the connection table and
/// the service directory the stages read, gossip with the other hosts, listener registration,
/// health checks, hosts joining and leaving, reload previews and the BGP speaker.
///
///     engine                         ClusterPlugin                          stages
///     ──────                         ─────────────                          ──────
///     parse `cluster:`, `bgp:` ────► ClusterPluginSettings ──services──────► ClusterConfiguration (parsers)
///     init (before the graphs) ────► ClusterRuntime, GossipNode, listeners ─► ClusterRuntime (StageContext)
///     start (before the lcores) ───► gossip sync, first listeners, BIRD
///     tick (control thread) ───────► connection events ─► gossip ─► listeners, health ─► membership ─► BGP
///     reload ──────────────────────► new ClusterRuntime(reloading:) ─► graphs ─► gossip members follow
///     control socket ──────────────► connections, preview, listen, unlisten, backends, bgp, drain, undrain
public final class ClusterPlugin: EnginePlugin {
    public static let sections = ["cluster", "bgp"]

    unowned let engine: Engine
    /// The cluster's shared state, when the configuration has a `cluster:` section.
    public internal(set) var cluster: ClusterRuntime?
    /// Connection-ownership gossip with the other hosts, when `cluster.gossip` is configured.
    public internal(set) var gossip: GossipNode?
    /// Listener registration: the book of every host's listeners (ClusterPlugin+Listeners).
    let listenerState = ListenerState()
    /// The BGP speaker (`bgp:`), `ctl drain` in force, and the withdrawal before a stop (ClusterPlugin+Bgp).
    var bgp: BgpSpeaker?
    var drained = false
    var stopping = false
    var lastMembershipCheck = Date.distantPast
    private var clusterCounters: CounterBlock?
    private var gossipCounters: GossipCounterExport?
    /// The running runtime while a reload builds its graphs (restored if they fail).
    private var previousCluster: ClusterRuntime?

    // What the moved engine code reads, under the names it had there.
    var configuration: EngineConfiguration { engine.configuration }
    var control: ControlServer { engine.control }
    var counters: CounterRegistry { engine.counters }
    func log(_ line: String) { engine.log(line) }

    // MARK: Configuration

    public static func parse(_ root: ConfigMap, into diagnostics: inout ConfigDiagnostics) -> any PluginSettings {
        let cluster = diagnostics.attempt { try root.optional("cluster").map(ClusterConfiguration.parse) } ?? nil
        let bgp = diagnostics.attempt {
            try root.optional("bgp").map { try BgpSettings.parse($0, cluster: cluster, hasClusterSection: root.has("cluster")) }
        } ?? nil
        return ClusterPluginSettings(cluster: cluster, bgp: bgp)
    }

    public static func parameterServices(_ settings: any PluginSettings) -> StageServices {
        var services = StageServices()
        services[ClusterConfiguration.self] = (settings as? ClusterPluginSettings)?.cluster
        return services
    }

    public static func standaloneServices(_ settings: any PluginSettings, name: String, socket: Int32) throws
        -> (services: StageServices, owner: AnyObject?)
    {
        guard let configuration = (settings as? ClusterPluginSettings)?.cluster else { return (StageServices(), nil) }
        let runtime = try ClusterRuntime(configuration: configuration, name: name, socket: socket, qsbr: nil)
        var services = StageServices()
        services[ClusterRuntime.self] = runtime
        return (services, runtime)
    }

    // MARK: Running

    public init(engine: Engine, settings: any PluginSettings, qsbr: OpaquePointer) throws {
        self.engine = engine
        registerClusterCommands()
        guard let settings = (settings as? ClusterPluginSettings)?.cluster else { return }
        cluster = try ClusterRuntime(configuration: settings, name: "sy\(getpid())",
                                     socket: engine.controlSocketID, qsbr: qsbr)
        clusterCounters = counters.makeBlock(scope: "cluster", kind: "cluster", lcore: 0, counters: ClusterCounters.cluster)
        if let gossipSettings = settings.gossip {
            do {
                gossip = try GossipNode(cluster: cluster!, settings: gossipSettings, qsbr: qsbr)
            } catch {
                throw EngineError.setup("gossip: \(error)")
            }
        }
        setUpListeners()
        registerListenerCommands()
    }

    public var stageServices: StageServices { Self.services(cluster) }

    /// What the stages of a graph read when `runtime` is the cluster.
    static func services(_ runtime: ClusterRuntime?) -> StageServices {
        var services = StageServices()
        services[ClusterRuntime.self] = runtime
        return services
    }

    public func start() throws {
        if let gossip {
            gossipCounters = GossipCounterExport(registry: counters, gossip: gossip)
            gossipCounters?.refresh()
        }
        synchroniseGossip()
        tickListeners() // the peers' listeners that came with the sync, before any lcore runs
        try startBgp()
    }

    public func tick(now: Date) {
        tickCluster()
        if !stopping { tickMembership(now: now) }
        tickBgp(now: now)
    }

    public func refreshCounters() { gossipCounters?.refresh() }

    public func report() -> String? { gossip.map { "gossip:\n" + $0.counters().table() } }

    public func stop() { bgp?.stop() }

    public func release() {
        gossipCounters = nil // holds the node
        gossip = nil // unregisters from the RCU state, so before it is freed
        cluster = nil
        previousCluster = nil
    }

    /// A host that starts takes the ownership state of its peers before its lcores claim any flow
    /// (docs/gossip.md, "Joining"): gossip is polled until it says so, or until a signal, with a
    /// progress line every second. It waits as long as every live peer's sync makes progress; a
    /// peer whose sync stalls for 10 × peer_timeout_ms is given up on (`sync-gave-up`), and the
    /// lcores then start with a partial table while that sync continues (the last line says so).
    private func synchroniseGossip() {
        guard let gossip else { return }
        let start = Date()
        var nextProgress = start.addingTimeInterval(1)
        while !gossip.isSynchronised && !ShutdownSignal.requested {
            gossip.poll(events: [])
            usleep(2000)
            if Date() >= nextProgress {
                nextProgress = nextProgress.addingTimeInterval(1)
                let peers = gossip.counters().peers
                log(String(format: "gossip: synchronising for %.0f s: %llu of %llu records received, %d of %d peer(s) done",
                           Date().timeIntervalSince(start), peers.reduce(UInt64(0)) { $0 + $1.syncReceived },
                           peers.reduce(UInt64(0)) { $0 + $1.syncExpected }, peers.filter(\.syncDone).count, peers.count))
            }
        }
        let peers = gossip.counters().peers
        let gaveUp = peers.filter(\.syncGaveUp)
        log(String(format: "gossip: synchronised in %.0f ms with %d of %d peer(s) answering, %llu records: ",
                   Date().timeIntervalSince(start) * 1000, peers.filter(\.synchronised).count, peers.count,
                   peers.reduce(UInt64(0)) { $0 + $1.syncReceived })
            + (gaveUp.isEmpty
                ? "complete"
                : "partial table: gave up on host(s) \(gaveUp.map { String($0.hostID) }.joined(separator: ", ")) "
                    + "(no sync progress for 10 × peer_timeout_ms); their sync continues in the background"))
    }

    /// Control-thread work for the cluster: connection events and idle-connection expiry.
    func tickCluster() {
        guard let cluster, let block = clusterCounters else { return }
        let tick = cluster.tick()
        gossip?.poll(events: tick.events)
        tickListeners()
        block.add(0, UInt64(tick.opened))
        block.add(1, UInt64(tick.closed))
        block.add(2, UInt64(tick.expired))
        block.set(3, UInt64(cluster.connections.count))
        block.set(4, cluster.connections.eventsRefused)
        block.set(5, cluster.connections.insertsRefused)
        block.set(6, UInt64(cluster.connections.positions))
        block.set(7, cluster.connections.embryonic)
    }

    public func status(into answer: inout [String: Any]) {
        if let gossip {
            let snapshot = gossip.counters()
            answer["gossip"] = [
                "host": snapshot.hostID, "synchronised": snapshot.synchronised, "owned_flows": snapshot.ownedFlows,
                "remote_flows": snapshot.remoteFlows,
                "peers": snapshot.peers.map { peer -> [String: Any] in
                    ["host": peer.hostID, "endpoint": peer.endpoint, "state": peer.alive ? "up" : "down",
                     "synchronised": peer.synchronised, "silence_ms": peer.silenceMs ?? -1, "flows": peer.flows]
                },
            ] as [String: Any]
        }
        if let cluster {
            answer["cluster"] = ["host": cluster.configuration.localHostID,
                                 "services": cluster.configuration.services.map(\.name),
                                 "connections": cluster.connections.count, "departing": cluster.configuration.departingHosts,
                                 "capacity": cluster.connections.positions]
        }
    }

    // MARK: Reload

    public func adjustReload(_ new: any PluginSettings) -> any PluginSettings {
        guard var settings = new as? ClusterPluginSettings, let cluster = settings.cluster else { return new }
        settings.cluster = keepingDepartingHosts(cluster)
        return settings
    }

    public func prepareReload(_ new: any PluginSettings) throws -> StageServices {
        previousCluster = cluster
        if let current = cluster, let settings = (new as? ClusterPluginSettings)?.cluster {
            listenerState.book?.replaceOwn(from: .file, with: settings.listen.compactMap { $0.listener(services: settings.services) })
            cluster = ClusterRuntime(reloading: current, configuration: settings, listeners: listenerState.book)
        }
        return stageServices
    }

    public func reloadFailed() {
        cluster = previousCluster
        previousCluster = nil
    }

    public func reloadApplied(_ new: any PluginSettings) {
        previousCluster = nil
        cluster?.directory.forgetPreviousOfPrevious()
        if let book = listenerState.book {
            listenerState.published = book.changes
            gossip?.announceListenersSoon()
        }
        if let settings = (new as? ClusterPluginSettings)?.cluster { applyMembership(settings) }
    }
}

extension Engine {
    /// The cluster plug-in, when the engine runs with it.
    public var clusterPlugin: ClusterPlugin? { self.plugin(ClusterPlugin.self) }
}
