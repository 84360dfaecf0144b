import Foundation
import Testing

/// A real engine with a `bgp:` section and a real BIRD 2 router in network namespaces: the VIP's
/// route appears on the router when the engine runs, leaves on `ctl drain`, comes back on
/// `ctl undrain`, and leaves at SIGTERM before the engine exits (docs/bgp.md).
///
///     ns r (BIRD: AS 65000, kernel, merge paths)         ns h (switchyard run, its BIRD: AS 65001)
///       g0  198.18.2.1/24 ◄──── BGP + BFD ────► gs0 198.18.2.11/24
///       u0  198.18.0.1/24 ◄──── uplink (DPDK) ──► up0  (next hop 198.18.0.11)
@Suite("bgp engine", .serialized)
struct BgpEngineTests {
    static let bird = "/usr/sbin/bird"

    static var skipReason: String? {
        if let reason = NetworkTopology.unavailableReason { return reason }
        if !FileManager.default.isExecutableFile(atPath: bird) { return "BIRD 2 is not installed (Debian: bird2)" }
        return nil
    }

    /// The hosts in the router's route to the VIP ("198.18.0.11"), or "" when there is none.
    static func route(_ net: NetworkTopology) -> String {
        let text = (try? net.run(in: "r", ["ip", "route", "show", "198.19.0.1"]).stdout) ?? ""
        return text.contains("198.18.0.11") ? "198.18.0.11" : ""
    }

    /// Polls the route until it is `expected`; returns the seconds it took, or nil after `timeout`.
    static func await(_ net: NetworkTopology, _ expected: String, timeout: Double) -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            if route(net) == expected { return Date().timeIntervalSince(start) }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return nil
    }

    static func ctl(_ socket: String, _ command: String) throws -> ExternalCommand.Result {
        try ExternalCommand.run([SwitchyardBinary.path, "ctl", "--socket", socket, command])
    }

    @Test func theRouteFollowsStartDrainUndrainAndStop() throws {
        if let reason = Self.skipReason {
            print("skipped: \(reason)")
            return
        }
        let net = try NetworkTopology()
        defer { net.tearDown() }
        let directory = try TemporaryDirectory()
        try net.addNamespace("r")
        try net.addNamespace("h")
        _ = try net.addVethPair("g0", in: "r", "gs0", in: "h")
        _ = try net.addVethPair("u0", in: "r", "up0", in: "h")
        try net.addAddress("198.18.2.1/24", to: "g0", in: "r")
        try net.addAddress("198.18.0.1/24", to: "u0", in: "r")
        try net.addAddress("198.18.2.11/24", to: "gs0", in: "h")

        let routerConf = directory.file("router.conf")
        try """
            router id 198.18.2.1;
            protocol device { scan time 10; }
            protocol kernel { ipv4 { import none; export all; }; merge paths on limit 16; }
            protocol bfd { interface "*" { interval 100 ms; multiplier 3; }; }
            protocol bgp h1 {
                local 198.18.2.1 as 65000; neighbor 198.18.2.11 as 65001;
                hold time 3; keepalive time 1; connect delay time 1; connect retry time 2; error wait time 1, 10;
                bfd on;
                ipv4 { import all; export none; };
            }

            """.write(toFile: routerConf, atomically: true, encoding: .utf8)
        _ = try net.start(in: "r", [Self.bird, "-f", "-c", routerConf, "-s", directory.file("router.ctl")])

        let config = directory.file("h1.yaml")
        try """
            eal: { hugepages: off, memory_mb: 128 }
            ports:
              - { name: uplink, device: "net_af_packet0,iface=up0", promiscuous: false }
            stages:
              - { name: sink, kind: drop }
            lcores:
              - { id: 1, idle: backoff, poll: [{ port: uplink, queue: 0, to: sink }] }
            cluster:
              host: 1
              hosts:
                - { id: 1, address: 198.18.0.11 }
                - { id: 2, address: 198.18.0.12 }
              services:
                - name: web
                  vip: 198.19.0.1
                  port: 80
                  backends:
                    - { host: 1, address: 198.18.101.10, port: 8080 }
                    - { host: 2, address: 198.18.102.10, port: 8080 }
              connections: { capacity: 4096 }
            bgp:
              local_as: 65001
              router_id: 198.18.2.11
              peers: [{ address: 198.18.2.1, as: 65000 }]
              hold_time: 3
              bfd: { interval_ms: 100, multiplier: 3 }
              drain_seconds: 1
              run_dir: \(directory.file("bird"))

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = directory.file("h1.sock")
        let engine = try net.start(in: "h", [SwitchyardBinary.path, "run", "--config", config, "--control-socket", socket])

        let joined = Self.await(net, "198.18.0.11", timeout: 15)
        try #require(joined != nil, "the VIP never reached the router: \(engine.stdoutSoFar)")
        // The sessions table is read in the background (every 5 s, and soon after a request).
        _ = try Self.ctl(socket, "bgp")
        Thread.sleep(forTimeInterval: 0.8)
        let status = try Self.ctl(socket, "bgp")
        print(status.stdout)
        #expect(status.stdout.contains("session     peer1: up Established"), "\(status.stdout)")
        #expect(status.stdout.contains("announced") && status.stdout.contains("healthy local backend web"), "\(status.stdout)")

        // The speaker fails: BIRD killed. The router drops the route with the session; the engine
        // logs and counts the exit and starts BIRD again after 1 s, which announces at once.
        let json = try ExternalCommand.run([SwitchyardBinary.path, "ctl", "--socket", socket, "bgp", "--json"]).stdout
        let answer = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let birdPID = try #require(answer["pid"] as? Int)
        kill(pid_t(birdPID), SIGKILL)
        #expect(Self.await(net, "", timeout: 2) != nil, "the route stayed after BIRD was killed")
        #expect(Self.await(net, "198.18.0.11", timeout: 10) != nil, "the engine did not bring BIRD back")
        let stats = try ExternalCommand.run([SwitchyardBinary.path, "ctl", "--socket", socket, "stats", "--json"]).stdout
        #expect(stats.contains("\"speaker-exits\" : 1") && stats.contains("\"speaker-starts\" : 2"), "\(stats)")
        #expect(stats.contains("\"configure-failures\" : 0"), "\(stats)")

        #expect(try Self.ctl(socket, "drain").status == 0)
        let left = Self.await(net, "", timeout: 2)
        #expect(left != nil, "the route stayed after ctl drain")
        #expect(try Self.ctl(socket, "bgp").stdout.contains("drained (ctl drain)"))

        #expect(try Self.ctl(socket, "undrain").status == 0)
        #expect(Self.await(net, "198.18.0.11", timeout: 10) != nil, "the route did not come back after ctl undrain")

        // SIGTERM: withdrawn first, then drain_seconds of service, then exit 0.
        let pids = try net.run(in: nil, ["ip", "netns", "pids", net.namespaceName("h")]).stdout
            .split(separator: "\n").compactMap { Int32($0) }
            .filter { (try? String(contentsOfFile: "/proc/\($0)/comm", encoding: .utf8))?.hasPrefix("switchyard") == true }
        let pid = try #require(pids.first)
        let stopAsked = Date()
        kill(pid, SIGTERM)
        let withdrawn = Self.await(net, "", timeout: 2)
        #expect(withdrawn != nil, "the route stayed after SIGTERM")
        let result = engine.wait(timeout: 20)
        try? FileManager.default.removeItem(atPath: "/var/run/dpdk/switchyard-\(pid)")
        let stopped = Date().timeIntervalSince(stopAsked)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(stopped >= 1, "the engine stopped \(stopped) s after SIGTERM, before drain_seconds (1 s)")
        #expect(result.stderr.contains("bgp: withdrawn"))
        #expect(result.stderr.contains("bgp: BIRD stopped"))
        #expect(result.stderr.contains("bgp: BIRD (pid \(birdPID)) was killed by signal 9; restarting in 1 s"))
        print(String(format: "bgp engine: joined %.2f s after start, left %.3f s after drain, %.3f s after SIGTERM",
                     joined ?? -1, left ?? -1, withdrawn ?? -1))
    }
}
