import CDPDK
import Foundation
import SwitchyardCore

/// The engine: sets up DPDK from a configuration, runs one graph per worker lcore, and shuts
/// down without losing track of a packet.
///
///     main lcore (control thread)                 worker lcores
///     ───────────────────────────                 ─────────────
///     EAL init, mempools, ports, rings
///     plug-ins: runtimes, stage services (EnginePlugin; the cluster is one)
///     build one LcoreGraph per lcore  ──launch──► poll loop: rx/rings ─► stages ─► tx/rings/drop
///     plug-ins tick, stats every interval, signals   (quiescent state after every iteration)
///     shutdown: phase = draining      ──────────► stop rx, drain rings
///               phase = exit          ──────────► leave loop
///     flush rings, stop/close ports, check every mbuf is back in its pool
public final class Engine {
    /// The running configuration (replaced by a successful reload).
    public private(set) var configuration: EngineConfiguration
    public let counters = CounterRegistry()
    /// The control socket (`switchyard ctl`); register more commands before `run`.
    public let control = ControlServer()
    let resources = EngineResources()
    private(set) var runtimes: [LcoreRuntime] = []
    /// NIC counters the control thread copies into `counters`.
    var controlCounters: ControlCounters?
    var lastCounterRefresh = Date.distantPast
    var rates = RateWindow()
    var startedAt = Date()
    var memoryNote = ""
    /// Reads and validates a configuration file (`RunOptions.loadConfiguration`), for reloads and previews.
    public private(set) var configurationLoader: ((String) throws -> EngineConfiguration)?
    private let phase = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    private var qsbr: OpaquePointer?
    /// The plug-ins, one per `configuration.plugins` entry, built with the graphs.
    public private(set) var plugins: [any EnginePlugin] = []
    /// Packet capture at any edge (`switchyard ctl capture`, CaptureService.swift).
    public private(set) var capture: CaptureService?
    public let log: (String) -> Void

    public init(configuration: EngineConfiguration, log: @escaping (String) -> Void) {
        self.configuration = configuration
        self.log = log
        phase.initialize(to: EnginePhase.running.rawValue)
    }

    deinit {
        releaseRuntimes()
        phase.deallocate()
    }

    /// Graphs and the RCU state go before the EAL does (rte_eal_cleanup frees DPDK memory).
    private func releaseRuntimes() {
        runtimes.removeAll()
        for plugin in plugins { plugin.release() } // what they registered with the RCU state goes first
        if let qsbr { sy_qsbr_free(qsbr) }
        qsbr = nil
    }

    public struct RunOptions {
        public var duration: Double?
        public var statsInterval: Double?
        public var ealOverrides: [String] = []
        /// Replace every lcore's graph with one built from this configuration after `after` seconds,
        /// without stopping the lcores (same ports, rings and lcores; stages and wiring may differ).
        public var reload: (after: Double, configuration: EngineConfiguration)?
        /// Seconds after which the steady-state rate starts being measured (`Summary.steadyRate`).
        public var warmup: Double?
        /// The control socket's path, instead of the configuration's (`--control-socket`).
        public var controlSocket: String?
        /// Reads and validates a configuration file (SIGHUP and `ctl reload`); nil: reloads refused.
        public var loadConfiguration: ((String) throws -> EngineConfiguration)?
        /// Started once the ports are up, stopped when `run` returns (the Prometheus endpoint).
        public var services: [any EngineService]
        public init(duration: Double? = nil, statsInterval: Double? = nil, ealOverrides: [String] = [],
                    reload: (after: Double, configuration: EngineConfiguration)? = nil, warmup: Double? = nil,
                    controlSocket: String? = nil, loadConfiguration: ((String) throws -> EngineConfiguration)? = nil,
                    services: [any EngineService] = [])
        {
            self.controlSocket = controlSocket
            self.loadConfiguration = loadConfiguration
            self.services = services
            self.warmup = warmup
            self.duration = duration
            self.statsInterval = statsInterval
            self.ealOverrides = ealOverrides
            self.reload = reload
        }
    }

    public struct Summary {
        public var seconds: Double
        /// Mbufs not back in their pool after shutdown (0 unless something leaked).
        public var leakedMbufs: Int
        public var mempools: [(name: String, available: Int, size: Int)]
        public var flushedAtShutdown: Int
        /// An lcore that left its loop before shutdown was asked for (nil normally).
        public var failedLcore: Int?
        /// Packets received from ports per second after the warmup, with the time it covers.
        public var steadyRate: (packetsPerSecond: Double, seconds: Double)?
        /// The TSC frequency: cycles per second of the clock the lcores count in.
        public var tscHz: UInt64
        /// What the plug-ins report at the end (the cluster: "gossip:" and its counters and peers).
        public var reports: [String]
    }

    /// Packets received from all ports so far.
    private var receivedFromPorts: UInt64 {
        counters.allBlocks.filter { $0.kind == "rx" }.reduce(0) { $0 + $1.value(0) }
    }

    /// Runs until `duration` elapses or SIGINT/SIGTERM arrives, then shuts down gracefully.
    public func run(_ options: RunOptions) throws -> Summary {
        let plan = try EAL.plan(for: configuration, overrides: options.ealOverrides)
        log(plan.memoryNote)
        memoryNote = plan.memoryNote
        try EAL.initialize(plan.arguments)
        ShutdownSignal.install()
        // Every exit, thrown or not, releases what lives in DPDK memory while the EAL is still up:
        // the caller cleans up the EAL next (idempotent: the normal path has released them already).
        defer {
            plugins.forEach { $0.stop() }
            control.close()
            controlCounters = nil
            releaseRuntimes()
            resources.close()
        }
        configurationLoader = options.loadConfiguration
        ReloadSignal.install()
        try resources.setUp(configuration, log: log)
        try buildRuntimes()
        controlCounters = ControlCounters(registry: counters, ports: resources.portDescriptions)
        startedAt = Date()
        startControl(socketOverride: options.controlSocket)
        Telemetry.register(engine: self, log: log)
        defer { Telemetry.unregister() }
        var started: [any EngineService] = []
        defer { started.reversed().forEach { $0.stop() } }
        for service in options.services {
            try service.start(engine: self)
            started.append(service)
        }
        for plugin in plugins { try plugin.start() } // the cluster's gossip sync waits here

        for runtime in runtimes {
            let rc = sy_remote_launch(lcoreEntry, Unmanaged.passUnretained(runtime).toOpaque(), UInt32(runtime.id))
            guard rc == 0 else {
                stopLcores()
                throw EngineError.setup("cannot launch lcore \(runtime.id): \(String(cString: sy_strerror(-rc)))")
            }
        }
        log("running: \(runtimes.count) lcore(s) \(runtimes.map { "\($0.id) [\($0.graph.stageNames.joined(separator: " "))]" }.joined(separator: ", "))"
            + (options.duration.map { " for \($0) s" } ?? " until SIGINT/SIGTERM"))

        let start = Date()
        var failedLcore: Int?
        var pendingReload = options.reload
        var warmupMark: (time: Date, received: UInt64)?
        var nextStats = options.statsInterval.map { start.addingTimeInterval($0) }
        while !ShutdownSignal.requested {
            let now = Date()
            if let duration = options.duration, now.timeIntervalSince(start) >= duration { break }
            if let lost = runtimes.first(where: { $0.status.exited }) {
                log("lcore \(lost.id) stopped unexpectedly; shutting down")
                failedLcore = lost.id
                break
            }
            if let warmup = options.warmup, warmupMark == nil, now.timeIntervalSince(start) >= warmup {
                warmupMark = (now, receivedFromPorts)
            }
            if let reload = pendingReload, now.timeIntervalSince(start) >= reload.after {
                pendingReload = nil
                self.reload(to: reload.configuration)
            }
            if ReloadSignal.take() {
                do {
                    _ = try reload(file: configuration.file)
                } catch {
                    log("SIGHUP: \(error)")
                }
            }
            for plugin in plugins { plugin.tick(now: now) }
            capture?.tick()
            serveControl(now: now)
            if let due = nextStats, now >= due, let interval = options.statsInterval {
                log("counters after \(String(format: "%.1f", now.timeIntervalSince(start))) s:\n\(counters.table())"
                    + plugins.compactMap { $0.report() }.map { "\n" + $0 }.joined())
                nextStats = due.addingTimeInterval(interval)
            }
            usleep(10_000)
        }
        let end = Date()
        let seconds = end.timeIntervalSince(start)
        let steadyRate = warmupMark.map { mark -> (Double, Double) in
            let span = end.timeIntervalSince(mark.time)
            return (Double(receivedFromPorts - mark.received) / max(span, 1e-9), span)
        }
        if ShutdownSignal.requested { log("signal received: shutting down") }
        serveBeforeStop(lcoresFailed: failedLcore != nil)
        control.close()
        stopLcores()
        plugins.forEach { $0.stop() }

        let flushed = resources.flushRings()
        if flushed > 0 {
            counters.makeBlock(scope: "engine", kind: "engine", lcore: 0, counters: EngineCounters.engine)
                .add(0, UInt64(flushed))
        }
        let reports = plugins.compactMap { $0.report() }
        let capturePool = capture?.shutdown() // before the pools are checked: its copies are all back
        refreshCounters() // the NICs' final counters, before the ports close
        controlCounters = nil
        releaseRuntimes()
        resources.close()
        let pools = resources.mempoolState() + (capturePool.map { [$0] } ?? [])
        let leaked = pools.reduce(0) { $0 + $1.size - $1.available }
        return Summary(seconds: seconds, leakedMbufs: leaked, mempools: pools, flushedAtShutdown: flushed,
                       failedLcore: failedLcore, steadyRate: steadyRate, tscHz: sy_tsc_hz(),
                       reports: reports)
    }

    private func buildRuntimes() throws {
        guard let qsbr = sy_qsbr_create(sy_max_lcore()) else {
            throw EngineError.setup("cannot allocate the RCU (qsbr) state")
        }
        self.qsbr = qsbr
        capture = CaptureService(counters: counters, lcores: configuration.lcores.map(\.id),
                                 ports: resources.portDescriptions.map { ($0.name, $0.portID) }, qsbr: qsbr,
                                 socket: resources.socket(ofLcore: configuration.lcores.first?.id ?? 0), log: log)
        for command in capture!.commands { control.register(command.name, summary: command.summary, handler: command.handler) }
        for section in configuration.plugins {
            plugins.append(try section.plugin.init(engine: self, settings: section.settings, qsbr: qsbr))
        }
        let services = pluginServices()
        for lcore in configuration.lcores {
            let graph = try LcoreGraph(configuration: configuration, lcore: lcore, resources: resources,
                                       services: services, counters: counters, capture: capture!.hookup(lcore: lcore.id))
            let block = counters.makeBlock(scope: "lcore \(lcore.id)", kind: "lcore", lcore: lcore.id,
                                           counters: EngineCounters.lcore, labels: [("cpu", String(lcore.cpu))])
            runtimes.append(LcoreRuntime(id: lcore.id, idle: lcore.idle, graph: graph, phase: phase, qsbr: qsbr,
                                         counters: block))
        }
    }

    /// The NUMA socket of the control side's tables (that of the first lcore).
    public var controlSocketID: Int32 { resources.socket(ofLcore: configuration.lcores.first?.id ?? 0) }

    /// The plug-in of type `P`, when the engine runs one.
    public func plugin<P: EnginePlugin>(_ type: P.Type) -> P? {
        plugins.lazy.compactMap { $0 as? P }.first
    }

    /// What the stages of a graph built now read: every plug-in's services.
    func pluginServices() -> StageServices {
        plugins.reduce(StageServices()) { $0.merging($1.stageServices) }
    }

    /// The NICs' and the plug-ins' counters, copied into the registry. Control thread only.
    func refreshCounters() {
        controlCounters?.refresh()
        for plugin in plugins { plugin.refreshCounters() }
    }

    /// SIGINT/SIGTERM: each plug-in prepares (the cluster withdraws its VIPs from BGP) and says how
    /// long the lcores should serve on; the control thread keeps ticking meanwhile.
    private func serveBeforeStop(lcoresFailed: Bool) {
        let wait = plugins.map { $0.prepareStop(lcoresFailed: lcoresFailed) }.max() ?? 0
        guard !plugins.isEmpty else { return }
        let deadline = Date().addingTimeInterval(wait)
        while Date() < deadline {
            let now = Date()
            for plugin in plugins { plugin.tick(now: now) }
            capture?.tick()
            serveControl(now: now)
            usleep(10_000)
        }
    }

    /// Stop rx, let the rings drain, then stop the lcores and wait for them.
    private func stopLcores() {
        sy_atomic_store_u32(phase, EnginePhase.draining.rawValue)
        let deadline = Date().addingTimeInterval(5)
        // Every lcore has seen the drain phase: no more packets enter from ports.
        while Date() < deadline,
              runtimes.contains(where: { !$0.status.exited && $0.status.seenPhase != EnginePhase.draining.rawValue })
        {
            usleep(1000)
        }
        // Rings are empty and no lcore moved a packet between two looks: nothing is in flight.
        while Date() < deadline {
            let before = runtimes.map(\.status.burstEpoch)
            if quiet() {
                usleep(2000)
                if quiet() && runtimes.map(\.status.burstEpoch) == before { break }
            }
            usleep(1000)
        }
        sy_atomic_store_u32(phase, EnginePhase.exit.rawValue)
        rte_eal_mp_wait_lcore()
    }

    private func quiet() -> Bool {
        resources.ringsAreEmpty && !runtimes.contains { $0.status.inBurst }
    }

    /// A scheduled reload (`--reload-config`): applies it and logs the outcome.
    private func reload(to configuration: EngineConfiguration) {
        do {
            try applyReload(configuration)
        } catch {
            log("\(error)")
        }
    }

    /// Swaps every lcore's graph for one built from `new` and the plug-ins' services for `new`'s,
    /// without stopping the lcores. Refused as a whole (throwing `ControlError`, nothing changed)
    /// when `new` changes something fixed at start (`fixedDifferences`); on a failure while the
    /// graphs are built, the running graphs stay. Returns what changed, in words.
    @discardableResult
    public func applyReload(_ new: EngineConfiguration) throws -> [String] {
        var new = new
        let sections = zip(plugins, configuration.plugins).map { plugin, section in
            (plugin, section, new.plugins.firstIndex { ObjectIdentifier($0.plugin) == ObjectIdentifier(section.plugin) })
        }
        for (plugin, _, index) in sections {
            if let index { new.plugins[index].settings = plugin.adjustReload(new.plugins[index].settings) }
        }
        let running = Set(runtimes.map(\.id)), wanted = Set(new.lcores.map(\.id))
        guard running == wanted else {
            throw ControlError("reload refused: the new configuration has lcores \(wanted.sorted()), the engine runs \(running.sorted())")
        }
        for (_, section, index) in sections {
            if let index, let reason = section.plugin.refusal(from: section.settings, to: new.plugins[index].settings) {
                throw ControlError("reload refused: \(reason)")
            }
        }
        let fixed = configuration.fixedDifferences(to: new)
        guard fixed.isEmpty else {
            throw ControlError("reload refused, nothing changed:\n" + fixed.map { "  " + $0 }.joined(separator: "\n"))
        }
        let changes = configuration.liveChanges(to: new)
        // Every graph is built before any is published: a failure leaves every lcore as it was.
        var built: [(LcoreRuntime, LcoreGraph)] = []
        var prepared: [any EnginePlugin] = []
        do {
            var services = StageServices()
            for (plugin, section, index) in sections {
                prepared.append(plugin)
                services = services.merging(try plugin.prepareReload(index.map { new.plugins[$0].settings } ?? section.settings))
            }
            for settings in new.lcores {
                let runtime = runtimes.first { $0.id == settings.id }!
                built.append((runtime, try LcoreGraph(configuration: new, lcore: settings, resources: resources,
                                                       services: services, counters: counters,
                                                       capture: capture?.hookup(lcore: settings.id) ?? .disabled)))
            }
        } catch {
            for plugin in prepared { plugin.reloadFailed() }
            throw ControlError("reload failed, keeping the running graphs: \(error)")
        }
        for (runtime, graph) in built { runtime.replaceGraph(with: graph) }
        for (plugin, section, index) in sections {
            plugin.reloadApplied(index.map { new.plugins[$0].settings } ?? section.settings)
        }
        var kept = new
        kept.name = configuration.name
        configuration = kept
        log("reloaded: \(runtimes.map { "\($0.id) [\($0.graph.stageNames.joined(separator: " "))]" }.joined(separator: ", "))"
            + (changes.isEmpty ? "" : "; " + changes.joined(separator: "; ")))
        return changes
    }

    /// Publishes a new graph for one lcore while it runs (the mechanism hot reload uses).
    /// Returns after the old graph is freed, which happens only once the lcore cannot be using it.
    public func replaceGraph(lcore: Int, using configuration: EngineConfiguration) throws {
        guard let runtime = runtimes.first(where: { $0.id == lcore }),
              let settings = configuration.lcores.first(where: { $0.id == lcore })
        else { throw EngineError.setup("lcore \(lcore) is not running") }
        let graph = try LcoreGraph(configuration: configuration, lcore: settings, resources: resources,
                                   services: pluginServices(), counters: counters, capture: capture?.hookup(lcore: lcore) ?? .disabled)
        runtime.replaceGraph(with: graph)
    }

    /// Builds every lcore's graph from the running configuration, with the plug-ins' services and
    /// `services` over them (a plug-in's next runtime), then publishes them all (RCU). Every graph
    /// is built before any is published: on a failure nothing changes.
    public func publishGraphs(with services: StageServices) throws {
        let merged = pluginServices().merging(services)
        var built: [(LcoreRuntime, LcoreGraph)] = []
        for settings in configuration.lcores {
            guard let runtime = runtimes.first(where: { $0.id == settings.id }) else { continue }
            built.append((runtime, try LcoreGraph(configuration: configuration, lcore: settings, resources: resources,
                                                  services: merged, counters: counters,
                                                  capture: capture?.hookup(lcore: settings.id) ?? .disabled)))
        }
        for (runtime, graph) in built { runtime.replaceGraph(with: graph) }
    }
}

/// SIGHUP asks the control thread to re-read the configuration file (`Engine.reload(file:)`).
public enum ReloadSignal {
    private static let flag: UnsafeMutablePointer<UInt32> = {
        let flag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        flag.initialize(to: 0)
        return flag
    }()

    public static func install() {
        _ = flag
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in sy_atomic_store_u32(ReloadSignal.flag, 1) }
        sigemptyset(&action.sa_mask)
        sigaction(SIGHUP, &action, nil)
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGHUP)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    /// True once per SIGHUP received.
    static func take() -> Bool {
        guard sy_atomic_load_u32(flag) != 0 else { return false }
        sy_atomic_store_u32(flag, 0)
        return true
    }
}

/// SIGINT and SIGTERM ask for a graceful shutdown; a second one exits at once.
public enum ShutdownSignal {
    private static let flag: UnsafeMutablePointer<UInt32> = {
        let flag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        flag.initialize(to: 0)
        return flag
    }()

    public static func install() {
        _ = flag // initialise before any handler can run
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in
            if sy_atomic_load_u32(ShutdownSignal.flag) != 0 { _exit(130) }
            sy_atomic_store_u32(ShutdownSignal.flag, 1)
        }
        sigemptyset(&action.sa_mask)
        sigaction(SIGINT, &action, nil)
        sigaction(SIGTERM, &action, nil)
        // A parent may have started us with these signals blocked (Foundation's Process does).
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGINT)
        sigaddset(&unblock, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    public static var requested: Bool { sy_atomic_load_u32(flag) != 0 }
    public static func request() { sy_atomic_store_u32(flag, 1) }
}
