import CDPDK
import SwitchyardCore

/// One lcore's graph, built from a configuration as the engine builds it, run on bursts the caller
/// hands in, on the calling thread: for benchmarks (Benchmarks/instructions.sh, the graph-walk
/// ARC check) and tests. No lcore is launched and no source is polled.
///
///     caller: mbufs (from `mempool`) ──► run(packets, count) ──► the source's first node ─► ... ─► tx / drop
///
/// The caller starts the EAL first (`EAL.plan(for:)`, `EAL.initialize`). The packets are the
/// graph's from then on: transmitted (a `net_null` port frees them) or dropped and freed.
public final class LcoreGraphDriver {
    private let resources = EngineResources()
    /// What the plug-ins' stage services hold (the cluster's runtime), released by `close`.
    private var owners: [AnyObject] = []
    private var graph: LcoreGraph?
    /// The graph as `run` reads it: no retain or release per burst (the engine holds graphs so too).
    private var unmanagedGraph: Unmanaged<LcoreGraph>?
    public let counters = CounterRegistry()
    /// The pool packets for `run` should come from (the engine's pool on the lcore's socket).
    public let mempool: OpaquePointer
    private let firstNode: Int

    /// Sets up the ports, the pool and the plug-ins' services (`EnginePlugin.standaloneServices`)
    /// of `configuration` and builds the graph of its
    /// lcore `lcore` (default: the first lcore in the file). Bursts enter at that lcore's first
    /// `poll:` entry's stage.
    public init(configuration: EngineConfiguration, lcore id: Int? = nil, log: (String) -> Void = { _ in }) throws {
        guard let lcore = configuration.lcores.first(where: { $0.id == id ?? $0.id }), let first = lcore.poll.first else {
            throw EngineError.setup("LcoreGraphDriver: no lcore \(id.map(String.init) ?? "") with a poll entry")
        }
        do {
            try resources.setUp(configuration, log: log)
            var services = StageServices()
            for section in configuration.plugins {
                let standalone = try section.plugin.standaloneServices(section.settings, name: "sydrv\(lcore.id)",
                                                                       socket: resources.socket(ofLcore: lcore.id))
                services = services.merging(standalone.services)
                if let owner = standalone.owner { owners.append(owner) }
            }
            let built = try LcoreGraph(configuration: configuration, lcore: lcore, resources: resources,
                                       services: services, counters: counters)
            graph = built
            unmanagedGraph = Unmanaged.passUnretained(built)
            firstNode = built.stageNames.firstIndex(of: first.to)!
        } catch {
            resources.close()
            throw error
        }
        mempool = resources.mempool(socket: resources.socket(ofLcore: lcore.id))
    }

    /// Runs `count` packets through the graph, exactly as the lcore runs a received burst
    /// (`LcoreGraph.run(node:packets:count:)`). `packets` needs room for `maximumBurstSize`.
    @inline(never)
    public func run(_ packets: MbufVector, count: Int) {
        unmanagedGraph.unsafelyUnwrapped._withUnsafeGuaranteedRef {
            $0.run(node: firstNode, packets: packets, count: count)
        }
    }

    /// The stage instances of the graph, in the order the engine numbers them.
    public var stageNames: [String] { graph?.stageNames ?? [] }

    /// Releases the graph, the plug-ins' services and the ports. Returns the mbufs not back in the pool.
    public func close() -> Int {
        unmanagedGraph = nil
        graph = nil
        owners = []
        resources.close()
        return resources.mempoolState().reduce(0) { $0 + $1.size - $1.available }
    }

    deinit {
        if graph != nil { _ = close() }
    }
}
