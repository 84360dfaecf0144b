import Testing

/// Every test that runs a script of Tests/Cluster (run.sh, egress.sh, join-leave.sh, ipv6-mtu.sh) is nested
/// in this suite, so they run one after another: each builds a router, four hosts with busy lcores
/// and their servers, and two of them at once on a 2-CPU machine would starve BFD (100 ms x 3) and
/// the clients; each also checks that it left no `syc*` namespace behind, which only holds when no
/// other cluster is being built at the same time.
@Suite("namespace clusters, one at a time", .serialized)
enum NamespaceClusters {}
