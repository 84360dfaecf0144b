/// When this host announces a VIP over BGP: one rule, per VIP, in one place (docs/bgp.md, "The rule").
///
///     announce(VIP) = host.running          the engine runs and is not stopping
///                   ∧ ¬host.drained         no `switchyard ctl drain` in force
///                   ∧ host.synchronised     gossip synchronised, or no gossip configured
///                   ∧ ∃ service s with s.vip = VIP,
///                       ∃ backend b of s: counted(b) ∧ healthy(b)
///
///     counted(b) = b.host = this host   (backends: local, the default)
///                  true                 (backends: cluster)
///     healthy(b) = b.weight > 0         (the effective backends: a withdrawn listener, or a backend
///                                        whose health checks fail, has weight 0 there)
///
/// The first condition that fails is the reason a VIP is withdrawn, in the order above.
public enum AnnouncementPolicy {
    /// What the engine knows of itself when it decides.
    public struct HostState: Equatable, Sendable {
        public var running: Bool
        public var drained: Bool
        public var synchronised: Bool

        public init(running: Bool, drained: Bool, synchronised: Bool) {
            self.running = running
            self.drained = drained
            self.synchronised = synchronised
        }
    }

    public struct Decision: Equatable, Sendable {
        public var announce: Bool
        /// Why, in words `ctl bgp` prints: "healthy local backend web 198.18.101.10:8080", "drained", ...
        public var reason: String

        public init(announce: Bool, reason: String) {
            self.announce = announce
            self.reason = reason
        }
    }

    /// The one place that says whether a backend can take new connections: weight > 0 in the
    /// effective configuration (`ClusterRuntime.configuration`), where health checks and
    /// listener withdrawal set it to 0.
    public static func isHealthy(_ backend: BackendSettings) -> Bool {
        backend.weight > 0
    }

    public static func decide(vip: IPAddress, cluster: ClusterConfiguration, scope: AnnouncementScope,
                              host: HostState) -> Decision
    {
        if !host.running { return Decision(announce: false, reason: "stopping") }
        if host.drained { return Decision(announce: false, reason: "drained (ctl drain)") }
        if !host.synchronised { return Decision(announce: false, reason: "not synchronised (gossip)") }
        let services = cluster.services.filter { $0.vip == vip }
        if services.isEmpty { return Decision(announce: false, reason: "no service has this VIP") }
        for service in services {
            for backend in service.backends where isHealthy(backend) {
                if scope == .local && backend.hostID != cluster.localHostID { continue }
                let place = scope == .local ? "local backend" : "backend (host \(backend.hostID))"
                return Decision(announce: true, reason: "healthy \(place) \(service.name) \(backend.address):\(backend.port)")
            }
        }
        return Decision(announce: false, reason: scope == .local
            ? "no healthy local backend (every backend of this host has weight 0)"
            : "no healthy backend (every backend has weight 0)")
    }
}
