import CDPDK

/// Everything of the cluster that lives while the engine runs, shared by the stages of every lcore
/// and by the control thread:
///
///     ClusterRuntime
///       ├─ directory    services, backends, Maglev tables, addresses   (rebuilt on reload)
///       ├─ connections  the connection table and its events ring        (kept across reloads)
///       └─ neighbors    next-hop MACs                                    (kept across reloads)
///
/// The engine builds one per process (tests build their own); the control thread calls `tick`.
public final class ClusterRuntime: @unchecked Sendable {
    /// The effective configuration: the file's, with every registered listener added to its
    /// service's backends (`ClusterConfiguration.adding(listeners:)`).
    public let configuration: ClusterConfiguration
    /// The configuration as the file gives it (what a reload compares and replaces).
    public let fileConfiguration: ClusterConfiguration
    /// Per service, per backend of `configuration`: where the backend came from.
    public let origins: [[ClusterConfiguration.BackendOrigin]]
    /// Listeners left out of the directory, and why (`ctl backends` shows them).
    public let skippedListeners: [ClusterConfiguration.SkippedListener]
    public let directory: ServiceDirectory
    public let connections: ConnectionTable
    public let neighbors: NeighborTable
    /// Every directory of this engine, the newest current (shared by the runtimes of reloads):
    /// what gossip compares its flows with (`replicate: exceptions`).
    public let tables: TableGenerations
    private var expiryCursor = 0

    /// `qsbr`: the data-plane lcores' RCU state, or nil in single-threaded tests.
    public init(configuration: ClusterConfiguration, name: String, socket: Int32, qsbr: OpaquePointer?) throws {
        self.configuration = configuration
        fileConfiguration = configuration
        origins = configuration.services.map { $0.backends.map { _ in .config } }
        skippedListeners = []
        directory = ServiceDirectory(configuration)
        connections = try ConnectionTable(name: name, settings: configuration.connections, socket: socket, qsbr: qsbr,
                                          egressSeed: configuration.gossip.map {
                                              ConnectionTable.egressSeed(gossipKey: $0.key, host: configuration.localHostID)
                                          })
        neighbors = NeighborTable()
        tables = TableGenerations(directory)
    }

    /// A runtime for a new configuration (hot reload) or a new set of listeners (`listeners`) that
    /// keeps the connections and neighbours. The new directory keeps the previous one as its
    /// previous generation (daisy chaining) when the services and the table size are the same.
    public init(reloading previous: ClusterRuntime, configuration: ClusterConfiguration, listeners: ListenerBook? = nil) {
        let effective = configuration.adding(listeners: listeners)
        self.configuration = effective.configuration
        fileConfiguration = configuration
        origins = effective.origins
        skippedListeners = effective.skipped
        directory = ServiceDirectory(effective.configuration, previous: previous.directory)
        connections = previous.connections
        neighbors = previous.neighbors
        tables = previous.tables
        tables.publish(directory)
    }

    /// What one control-thread tick did.
    public struct Tick {
        public var opened = 0
        public var closed = 0
        public var expired = 0
        public var events: [sy_flow_event] = []
    }

    /// Control-thread work: take the lcores' events (until the ring is empty, or `maxEvents`,
    /// which bounds one tick's work; the rest waits in the ring for the next tick), expire a
    /// slice of idle connections. A full scan of the table takes `positions / budget` ticks; by
    /// default one scan per 100 ticks (about a second at the engine's 10 ms tick), so timeouts
    /// are honoured within a second.
    public func tick(now: UInt64 = sy_rdtsc(), budget: Int? = nil, maxEvents: Int = ClusterRuntime.maxEventsPerTick) -> Tick {
        let budget = budget ?? max(1024, connections.positions / 100)
        var tick = Tick()
        _ = sy_thread_ensure_lcore() // deletes go through rte_hash's per-lcore caches
        (expiryCursor, tick.expired) = connections.expire(from: expiryCursor, budget: budget, now: now)
        while tick.events.count < maxEvents {
            let events = connections.takeEvents(max: min(4096, maxEvents - tick.events.count))
            if events.isEmpty { break }
            for event in events {
                if event.kind == UInt8(SY_FLOW_OPENED) { tick.opened += 1 } else { tick.closed += 1 }
            }
            tick.events += events
        }
        return tick
    }

    /// Events one tick takes at most: half the ring, so a tick that stops here leaves the
    /// lcores room for the next 10 ms.
    public static let maxEventsPerTick = ConnectionTable.eventsRingSize / 2
}
