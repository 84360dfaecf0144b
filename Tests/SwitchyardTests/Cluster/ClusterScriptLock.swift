import Foundation

/// The namespace cluster scripts (`Tests/Cluster/run.sh`, `egress.sh`, `join-leave.sh`,
/// `ipv6-mtu.sh`) must not run
/// at the same time: they share the machine's CPUs with BFD at 100 ms and stall bounds of seconds,
/// and each test checks that its script left no `syc*` namespace behind, which another script's
/// namespaces would contradict. swift-testing runs suites in parallel (`.serialized` orders the
/// tests of one suite only), so every test that runs one of these scripts holds this lock for the
/// whole run, its namespace snapshots included:
///
///     ClusterScriptLock.lock.lock(); defer { ClusterScriptLock.lock.unlock() }
///
/// (Other processes running the scripts are kept apart by `flock /work/notes/cluster.lock`.)
enum ClusterScriptLock {
    static let lock = NSLock()
}
