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
    public let configuration: ClusterConfiguration
    public let directory: ServiceDirectory
    public let connections: ConnectionTable
    public let neighbors: NeighborTable
    private var expiryCursor = 0

    /// `qsbr`: the data-plane lcores' RCU state, or nil in single-threaded tests.
    public init(configuration: ClusterConfiguration, name: String, socket: Int32, qsbr: OpaquePointer?) throws {
        self.configuration = configuration
        directory = ServiceDirectory(configuration)
        connections = try ConnectionTable(name: name, settings: configuration.connections, socket: socket, qsbr: qsbr,
                                          egressSeed: configuration.gossip.map {
                                              ConnectionTable.egressSeed(gossipKey: $0.key, host: configuration.localHostID)
                                          })
        neighbors = NeighborTable()
    }

    /// A runtime for a new configuration (hot reload) that keeps the connections and neighbours.
    public init(reloading previous: ClusterRuntime, configuration: ClusterConfiguration) {
        self.configuration = configuration
        directory = ServiceDirectory(configuration)
        connections = previous.connections
        neighbors = previous.neighbors
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
