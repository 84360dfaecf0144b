import CDPDK
import Foundation
import SwitchyardEngine

/// `switchyard run` without `--config`: the single-IP-image example, two hosts of one cluster on
/// this machine, then a summary per host.
///
///     switchyard run                      (this process: no DPDK, it only supervises)
///       │ writes into a fresh temporary directory: host1.yaml host2.yaml, captures, gossip.key
///       ├─► switchyard run --config host1.yaml --stats-json host1-stats.json --exit-with-parent
///       ├─► switchyard run --config host2.yaml …              (each its own process group)
///       │     SIGINT/SIGTERM here ─► one SIGTERM to each host (a second one: they exit at once)
///       ├─ waits for both, removes a runtime directory a host could not remove, reads their counters
///       └─ prints the summary, removes the temporary directory; exit status: the worst host's
///
/// A host that stops with an error stops the other one too. If this process is killed with
/// SIGKILL, the hosts notice (`--exit-with-parent`) and stop; only the directory stays behind.
struct TwoHostRun {
    /// Seconds the hosts run; nil until SIGINT/SIGTERM.
    var duration: Double?
    var ealArguments: [String]

    func run() throws -> Int32 {
        let directory = try Self.makeTemporaryDirectory()
        var children: [Int: ChildProcess] = [:]
        defer {
            for child in children.values where child.isRunning {
                child.send(SIGTERM)
                child.wait(timeout: 15)
            }
            for child in children.values { Self.removeRuntimeDirectory(of: child.pid) }
            try? FileManager.default.removeItem(atPath: directory)
        }
        let signals = SupervisorSignals()
        var example = SingleIPImageExample(directory: directory, gossipPorts: try Self.freePorts(SOCK_DGRAM),
                                           metricsPorts: try Self.freePorts(SOCK_STREAM),
                                           cpuCount: ProcessInfo.processInfo.activeProcessorCount)
        for host in SingleIPImageExample.hostIDs { example.names[host] = Self.unusedName(host: host) }
        try Self.writeKey(to: example.path(SingleIPImageExample.keyFileName))
        let traffic = try SingleIPImageTraffic(example: example)
        try traffic.write()
        func file(_ host: Int, _ suffix: String) -> String { example.path("host\(host)\(suffix)") }
        for host in SingleIPImageExample.hostIDs {
            try example.configuration(host: host)
                .write(toFile: example.path(SingleIPImageExample.fileName(host: host)), atomically: false, encoding: .utf8)
        }

        print("""
            Two hosts of one cluster, each a switchyard process running the single-IP-image pipeline, \
            \(duration.map { "for \(Self.format($0)) s" } ?? "until Ctrl-C"):
              clients send \(SingleIPImageTraffic.flowCount) flows to the VIP 198.19.0.1 (web tcp/80, dns udp/53); \
            the router sends half of them to each host.
              A flow belongs to the host of the backend Maglev picks for it (host 1: \(traffic.owned(by: 1).count) flows, \
            host 2: \(traffic.owned(by: 2).count)):
              the owner translates it to that backend, the other host encapsulates it to the owner (VXLAN).
              The hosts gossip over 127.0.0.1; `switchyard example single-ip-image` prints host 1's configuration.
            """)
        for host in SingleIPImageExample.hostIDs {
            let (control, worker) = SingleIPImageExample.placement(host: host, cpus: example.cpuCount)
            var arguments = [Self.executable, "run", "--config", example.path(SingleIPImageExample.fileName(host: host)),
                             "--stats-json", file(host, "-stats.json"), "--exit-with-parent"]
            if let duration { arguments += ["--duration", String(duration)] }
            if !ealArguments.isEmpty { arguments += ["--"] + ealArguments }
            children[host] = try ChildProcess(arguments: arguments, stdout: file(host, ".out"), stderr: file(host, ".err"))
            print("  host \(host): pid \(children[host]!.pid), worker lcore on CPU \(worker), control thread on CPU \(control)")
        }
        fflush(stdout)

        var announced = false
        var interrupted = 0
        let started = Date()
        while children.values.contains(where: \.isRunning) {
            if let duration, Date().timeIntervalSince(started) > duration + 60 {
                log("the hosts did not stop \(Self.format(duration)) s after they started: killing them")
                for child in children.values { child.send(SIGKILL) }
            }
            let received = signals.count
            if received > interrupted {
                interrupted = received
                log(received == 1 ? "signal received: stopping both hosts" : "second signal: the hosts exit at once")
                for child in children.values { child.send(SIGTERM) }
            }
            // A host that failed takes the other one down (it would wait for a peer that is gone).
            if children.values.contains(where: { ($0.status ?? 0) != 0 }) {
                for child in children.values where child.signalsSent == 0 { child.send(SIGTERM) }
            }
            if !announced, SingleIPImageExample.hostIDs.allSatisfy({ Self.contains(file($0, ".err"), "switchyard: running:") }) {
                announced = true
                print(duration == nil ? Self.watchHint(example) : "Both hosts are running.")
                fflush(stdout)
            }
            usleep(50_000)
            children.values.forEach { $0.poll() }
        }

        let reports = SingleIPImageExample.hostIDs.map { host in
            HostReport(host: host, status: children[host]!.status ?? -1,
                       configuration: example.path(SingleIPImageExample.fileName(host: host)),
                       statsJSON: file(host, "-stats.json"), stdout: file(host, ".out"))
        }
        print("")
        print(HostReport.table(reports))
        for report in reports where report.status != 0 {
            let log = (try? String(contentsOfFile: file(report.host, ".err"), encoding: .utf8)) ?? ""
            print("\nhost \(report.host) exited with status \(report.status); the end of its log:")
            print(log.split(separator: "\n").suffix(15).map { "  " + $0 }.joined(separator: "\n"))
        }
        if reports.allSatisfy({ $0.status == 0 }) {
            print("\nBoth hosts stopped cleanly (exit status 0).")
        }
        return reports.map(\.status).max() ?? 0
    }

    /// Printed once both hosts run, when they run until Ctrl-C.
    static func watchHint(_ example: SingleIPImageExample) -> String {
        var lines = ["Both hosts are running until Ctrl-C. Watch them live from another terminal:"]
        for host in SingleIPImageExample.hostIDs {
            lines.append("  switchyard ctl --socket \(ControlSettings.defaultSocket(name: example.name(ofHost: host))) stats --watch 1")
        }
        for host in SingleIPImageExample.hostIDs {
            lines.append("  metrics of host \(host): http://127.0.0.1:\(example.metricsPorts[host]!)/metrics")
        }
        return lines.joined(separator: "\n")
    }

    /// `example-hostN`, or `example-hostN-PID` when an engine already answers on that name's socket
    /// (another two-host example runs), so the second one does not fail on its control socket.
    static func unusedName(host: Int) -> String {
        let name = SingleIPImageExample.defaultName(host: host)
        let path = ControlSettings.defaultSocket(name: name)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8.prefix(raw.count - 1))
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return name }
        defer { close(fd) }
        let inUse = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
        return inUse ? "\(name)-\(getpid())" : name
    }

    static func contains(_ path: String, _ text: String) -> Bool {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").contains(text)
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }

    /// This binary, to start the hosts with.
    static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    static func makeTemporaryDirectory() throws -> String {
        var template = Array((NSTemporaryDirectory() + "switchyard-example-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw ValidationErrorMessage("cannot create a temporary directory: \(String(cString: strerror(errno)))")
        }
        return String(cString: made)
    }

    /// A fresh random gossip key (32 bytes, hex), readable by the owner only.
    static func writeKey(to path: String) throws {
        var generator = SystemRandomNumberGenerator() // getrandom(2)
        let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        guard FileManager.default.createFile(atPath: path, contents: Data((key + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600])
        else { throw ValidationErrorMessage("cannot write \(path)") }
    }

    /// One port per host on 127.0.0.1, distinct, free now (the kernel picks them), UDP or TCP.
    static func freePorts(_ type: __socket_type) throws -> [Int: Int] {
        var sockets: [Int32] = []
        defer { sockets.forEach { close($0) } }
        var ports: [Int: Int] = [:]
        for host in SingleIPImageExample.hostIDs {
            let fd = socket(AF_INET, Int32(type.rawValue), 0)
            guard fd >= 0 else { throw ValidationErrorMessage("cannot open a UDP socket: \(String(cString: strerror(errno)))") }
            sockets.append(fd)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
                }
            }
            guard bound else { throw ValidationErrorMessage("cannot bind a UDP socket on 127.0.0.1") }
            ports[host] = Int(UInt16(bigEndian: address.sin_port))
        }
        return ports
    }

    /// EAL's runtime directory of a host started with `--no-huge` (`--file-prefix=switchyard-PID`),
    /// when the host could not remove it itself (it was killed).
    static func removeRuntimeDirectory(of pid: pid_t) {
        let path = "/var/run/dpdk/switchyard-\(pid)"
        if FileManager.default.fileExists(atPath: path) { try? FileManager.default.removeItem(atPath: path) }
    }
}

/// SIGINT and SIGTERM, counted, for the supervising process (which has no EAL to shut down).
final class SupervisorSignals {
    nonisolated(unsafe) private static let received: UnsafeMutablePointer<UInt32> = {
        let flag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        flag.initialize(to: 0)
        return flag
    }()

    init() {
        _ = Self.received
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in
            sy_atomic_store_u32(SupervisorSignals.received, sy_atomic_load_u32(SupervisorSignals.received) + 1)
        }
        sigemptyset(&action.sa_mask)
        sigaddset(&action.sa_mask, SIGINT)
        sigaddset(&action.sa_mask, SIGTERM)
        sigaction(SIGINT, &action, nil)
        sigaction(SIGTERM, &action, nil)
        // A parent may have started us with these signals blocked (Foundation's Process does).
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGINT)
        sigaddset(&unblock, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    var count: Int { Int(sy_atomic_load_u32(Self.received)) }
}
