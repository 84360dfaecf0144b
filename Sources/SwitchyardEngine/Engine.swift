import CDPDK
import SwitchyardCluster
import SwitchyardGossip
import Foundation
import SwitchyardCore

/// The engine: sets up DPDK from a configuration, runs one graph per worker lcore, and shuts
/// down without losing track of a packet.
///
///     main lcore (control thread)                 worker lcores
///     ───────────────────────────                 ─────────────
///     EAL init, mempools, ports, rings
///     build one LcoreGraph per lcore  ──launch──► poll loop: rx/rings ─► stages ─► tx/rings/drop
///     stats every interval, signals                  (quiescent state after every iteration)
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
    /// NIC and gossip counters the control thread copies into `counters`.
    var controlCounters: ControlCounters?
    var lastCounterRefresh = Date.distantPast
    var rates = RateWindow()
    var startedAt = Date()
    var memoryNote = ""
    var configurationLoader: ((String) throws -> EngineConfiguration)?
    private let phase = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    private var qsbr: OpaquePointer?
    /// The cluster's shared state, when the configuration has a `cluster:` section.
    public private(set) var cluster: ClusterRuntime?
    /// Connection-ownership gossip with the other hosts, when `cluster.gossip` is configured.
    public private(set) var gossip: GossipNode?
    /// Packet capture at any edge (`switchyard ctl capture`, CaptureService.swift).
    public private(set) var capture: CaptureService?
    let log: (String) -> Void
    /// The BGP speaker (`bgp:`), `ctl drain` in force, and the withdrawal before a stop (Engine+Bgp).
    var bgp: BgpSpeaker?
    var drained = false
    var stopping = false
    var lastMembershipCheck = Date.distantPast

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
        gossip = nil // unregisters from the RCU state, so before it is freed
        cluster = nil
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
        /// The gossip counters and peers at the end (a table), when gossip ran.
        public var gossip: String?
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
            bgp?.stop()
            control.close()
            controlCounters = nil
            releaseRuntimes()
            resources.close()
        }
        configurationLoader = options.loadConfiguration
        ReloadSignal.install()
        try resources.setUp(configuration, log: log)
        try buildRuntimes()
        controlCounters = ControlCounters(registry: counters, ports: resources.portDescriptions, gossip: gossip)
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
        synchroniseGossip()
        try startBgp()

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
            tickCluster()
            tickMembership(now: now)
            tickBgp(now: now)
            capture?.tick()
            serveControl(now: now)
            if let due = nextStats, now >= due, let interval = options.statsInterval {
                log("counters after \(String(format: "%.1f", now.timeIntervalSince(start))) s:\n\(counters.table())"
                    + (gossip.map { "\ngossip:\n" + $0.counters().table() } ?? ""))
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
        withdrawBeforeStop(lcoresFailed: failedLcore != nil)
        control.close()
        stopLcores()
        bgp?.stop()

        let flushed = resources.flushRings()
        if flushed > 0 {
            counters.makeBlock(scope: "engine", kind: "engine", lcore: 0, counters: EngineCounters.engine)
                .add(0, UInt64(flushed))
        }
        let gossipTable = gossip?.counters().table()
        let capturePool = capture?.shutdown() // before the pools are checked: its copies are all back
        controlCounters?.refresh() // the NICs' final counters, before the ports close
        controlCounters = nil
        releaseRuntimes()
        resources.close()
        let pools = resources.mempoolState() + (capturePool.map { [$0] } ?? [])
        let leaked = pools.reduce(0) { $0 + $1.size - $1.available }
        return Summary(seconds: seconds, leakedMbufs: leaked, mempools: pools, flushedAtShutdown: flushed,
                       failedLcore: failedLcore, steadyRate: steadyRate, tscHz: sy_tsc_hz(),
                       gossip: gossipTable)
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
        if let settings = configuration.cluster {
            cluster = try ClusterRuntime(configuration: settings, name: "sy\(getpid())",
                                         socket: resources.socket(ofLcore: configuration.lcores.first?.id ?? 0),
                                         qsbr: qsbr)
            clusterCounters = counters.makeBlock(scope: "cluster", kind: "cluster", lcore: 0,
                                                 counters: EngineCounters.cluster)
            if let gossipSettings = settings.gossip {
                do {
                    gossip = try GossipNode(cluster: cluster!, settings: gossipSettings, qsbr: qsbr)
                } catch {
                    throw EngineError.setup("gossip: \(error)")
                }
            }
        }
        for lcore in configuration.lcores {
            let graph = try LcoreGraph(configuration: configuration, lcore: lcore, resources: resources,
                                       cluster: cluster, counters: counters, capture: capture!.hookup(lcore: lcore.id))
            let block = counters.makeBlock(scope: "lcore \(lcore.id)", kind: "lcore", lcore: lcore.id,
                                           counters: EngineCounters.lcore, labels: [("cpu", String(lcore.cpu))])
            runtimes.append(LcoreRuntime(id: lcore.id, idle: lcore.idle, graph: graph, phase: phase, qsbr: qsbr,
                                         counters: block))
        }
    }

    private var clusterCounters: CounterBlock?

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
        block.add(0, UInt64(tick.opened))
        block.add(1, UInt64(tick.closed))
        block.add(2, UInt64(tick.expired))
        block.set(3, UInt64(cluster.connections.count))
        block.set(4, cluster.connections.eventsRefused)
        block.set(5, cluster.connections.insertsRefused)
        block.set(6, UInt64(cluster.connections.positions))
        block.set(7, cluster.connections.embryonic)
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

    /// Swaps every lcore's graph for one built from `new` and the cluster's services for `new`'s,
    /// without stopping the lcores. Refused as a whole (throwing `ControlError`, nothing changed)
    /// when `new` changes something fixed at start (`fixedDifferences`); on a failure while the
    /// graphs are built, the running graphs stay. Returns what changed, in words.
    @discardableResult
    func applyReload(_ new: EngineConfiguration) throws -> [String] {
        var new = new
        if let settings = new.cluster { new.cluster = keepingDepartingHosts(settings) }
        let running = Set(runtimes.map(\.id)), wanted = Set(new.lcores.map(\.id))
        guard running == wanted else {
            throw ControlError("reload refused: the new configuration has lcores \(wanted.sorted()), the engine runs \(running.sorted())")
        }
        guard (new.cluster == nil) == (cluster == nil) else {
            throw ControlError("reload refused: a `cluster:` section can be changed by a reload, but not added or removed")
        }
        let fixed = configuration.fixedDifferences(to: new)
        guard fixed.isEmpty else {
            throw ControlError("reload refused, nothing changed:\n" + fixed.map { "  " + $0 }.joined(separator: "\n"))
        }
        let changes = configuration.liveChanges(to: new)
        let previousCluster = cluster
        if let current = cluster, let settings = new.cluster {
            cluster = ClusterRuntime(reloading: current, configuration: settings)
        }
        // Every graph is built before any is published: a failure leaves every lcore as it was.
        var built: [(LcoreRuntime, LcoreGraph)] = []
        do {
            for settings in new.lcores {
                let runtime = runtimes.first { $0.id == settings.id }!
                built.append((runtime, try LcoreGraph(configuration: new, lcore: settings, resources: resources,
                                                       cluster: cluster, counters: counters,
                                                       capture: capture?.hookup(lcore: settings.id) ?? .disabled)))
            }
        } catch {
            cluster = previousCluster
            throw ControlError("reload failed, keeping the running graphs: \(error)")
        }
        for (runtime, graph) in built { runtime.replaceGraph(with: graph) }
        if let settings = new.cluster { applyMembership(settings) }
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
                                   cluster: cluster, counters: counters, capture: capture?.hookup(lcore: lcore) ?? .disabled)
        runtime.replaceGraph(with: graph)
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
