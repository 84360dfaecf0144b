/// Something that runs beside the engine on threads of its own, never on an lcore: the Prometheus
/// endpoint (SwitchyardMetrics' `MetricsServer`) is one.
///
///     Engine.run: EAL, ports, graphs ──► service.start(engine:) ──► lcores launch ... shutdown ──► service.stop()
///
/// A service reads the engine's counters (`engine.counters`) and must never block the control
/// thread or an lcore: counter values are atomics, only `CounterRegistry.allBlocks` takes a short lock.
public protocol EngineService: AnyObject {
    /// Called once the ports are up and the graphs built, before the lcores start forwarding.
    /// A thrown error stops the engine before it forwards a packet (a port already in use, say).
    func start(engine: Engine) throws
    /// Called once when `run` returns, whatever the reason.
    func stop()
}
