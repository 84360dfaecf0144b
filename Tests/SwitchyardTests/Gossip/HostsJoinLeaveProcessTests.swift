import Foundation
import SwitchyardEngine
import SwitchyardPcap
import Testing

/// Hosts join and leave a running cluster of `switchyard run` processes by `ctl reload`, no peer
/// restarting (docs/gossip.md, "Hosts join and leave"):
///
///     hosts 1, 2 run (host 1 opens 200 connections) ─► reload both: + host 3 ─► host 3 starts,
///     takes all 200 before its lcores start, opens 30 of its own ─► reload 1, 2: − host 3
///     ─► host 3 departing on 1 and 2 (its 30 stay) ─► host 3 stops ─► down, forgotten ─► removed
@Suite("hosts join and leave", .serialized)
struct HostsJoinLeaveProcessTests {
    static let key = String(repeating: "5a17", count: 16)
    static let basePort = 20000 + Int((getpid() + 7) % 20000)

    static func configuration(host: Int, members: [Int], capture: String, socket: String) -> String {
        var text = """
            control: { socket: \(socket) }
            eal: { hugepages: off, memory_mb: 256 }
            ports:
              - { name: wire, device: "net_pcap\(host),rx_pcap=\(capture)" , tx_queues: 0 }
            stages:
              - name: classify
                kind: classify
                answer: false
                next: { vip: owner, reply: drop, tunnel: drop, answer: drop, local: drop, other: drop }
              - name: owner
                kind: ownership-lookup
                next: { local: drop, remote: drop }
            lcores:
              - { id: 1, idle: backoff, poll: [ { port: wire, queue: 0, to: classify } ] }
            cluster:
              host: \(host)
              hosts:

            """
        for id in members { text += "    - { id: \(id), address: 198.18.0.1\(id) }\n" }
        text += """
              services:
                - name: web
                  vip: 198.19.0.1
                  port: 80
                  backends: [{ host: 1, address: 198.18.100.10, port: 8080 }]

            """
        if members.contains(3) {
            text += """
                    - name: three
                      vip: 198.19.0.3
                      port: 80
                      backends: [{ host: 3, address: 198.18.100.30, port: 8080 }]

                """
        }
        text += """
              connections: { capacity: 16384 }
              gossip:
                key: "\(key)"
                bind: 127.0.0.1
                heartbeat_ms: 100
                peer_timeout_ms: 600
                digest_interval_ms: 300
                down_retention_ms: 1500
                members:

            """
        for id in members { text += "      - { host: \(id), address: 127.0.0.1, port: \(basePort + id) }\n" }
        return text
    }

    /// `count` connections to `vip` (SYN, then ACK), clients from `first`.
    static func traffic(vip: UInt8, count: Int, first: Int) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        for flags: Frames.TCPFlags in [[.syn], [.ack]] {
            for flow in first..<(first + count) {
                frames.append(Frames.ipv4TCP(source: [198, 18, 1 + UInt8(flow / 250), UInt8(flow % 250)],
                                             destination: [198, 19, 0, vip], sourcePort: UInt16(10000 + flow),
                                             destinationPort: 80, flags: flags))
            }
        }
        return frames
    }

    static func status(_ socket: String) throws -> [String: Any] {
        try #require(try ControlClient.request(socket: socket, command: "status") as? [String: Any])
    }

    /// (connections, departing hosts) of the engine at `socket`.
    static func cluster(_ socket: String) throws -> (connections: Int, departing: [Int]) {
        let cluster = try #require(try status(socket)["cluster"] as? [String: Any])
        return (cluster["connections"] as? Int ?? -1, cluster["departing"] as? [Int] ?? [-1])
    }

    static func await(_ timeout: Double, _ condition: () throws -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if (try? condition()) == true { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return false
    }

    @Test func aHostJoinsAndLeavesWithoutAPeerRestarting() throws {
        let directory = try TemporaryDirectory()
        try Pcap.write(Self.traffic(vip: 1, count: 200, first: 0), to: directory.file("one.pcap"))
        try Pcap.write(Self.traffic(vip: 3, count: 30, first: 500), to: directory.file("three.pcap"))
        try Pcap.write([], to: directory.file("empty.pcap"))
        let sockets = (1...3).map { directory.file("h\($0).sock") }
        let captures = [directory.file("one.pcap"), directory.file("empty.pcap"), directory.file("three.pcap")]
        func config(_ host: Int, _ members: [Int]) throws -> String {
            try directory.write("h\(host)-\(members.map(String.init).joined()).yaml",
                                Self.configuration(host: host, members: members, capture: captures[host - 1], socket: sockets[host - 1]))
        }
        let host2 = try BackgroundEngine(["run", "--config", try config(2, [1, 2]), "--duration", "25"], in: directory)
        let host1 = try BackgroundEngine(["run", "--config", try config(1, [1, 2]), "--duration", "25"], in: directory)
        try host1.waitForSocket(sockets[0])
        try host2.waitForSocket(sockets[1])
        #expect(Self.await(10) { try Self.cluster(sockets[0]).connections == 200 && Self.cluster(sockets[1]).connections == 200 },
                "host 1's connections did not reach host 2")

        // Host 3 joins: every host's configuration lists it (on 1 and 2 by reload), then it starts.
        for host in 1...2 {
            let reload = try SwitchyardBinary.run(["ctl", "--socket", sockets[host - 1], "reload", try config(host, [1, 2, 3])])
            #expect(reload.status == 0 && reload.stdout.contains("host 3 joins"), "\(reload.output)")
        }
        let host3 = try BackgroundEngine(["run", "--config", try config(3, [1, 2, 3]), "--duration", "10"], in: directory)
        try host3.waitForSocket(sockets[2])
        #expect(Self.await(10) { try Self.cluster(sockets[2]).connections == 230 }, "host 3 did not take the state and open its own")
        #expect(Self.await(10) { try Self.cluster(sockets[0]).connections == 230 && Self.cluster(sockets[1]).connections == 230 },
                "host 3's connections did not reach 1 and 2")

        // Host 3 leaves: 1 and 2 reload without it; it owns 30 connections there, so it drains.
        for host in 1...2 {
            let reload = try SwitchyardBinary.run(["ctl", "--socket", sockets[host - 1], "reload", try config(host, [1, 2])])
            #expect(reload.status == 0 && reload.stdout.contains("host 3 leaves"), "\(reload.output)")
            let (connections, departing) = try Self.cluster(sockets[host - 1])
            #expect(connections == 230 && departing == [3], "host \(host): \(connections) connections, departing \(departing)")
        }
        // Host 3 stops (its connections are over); once its peers have forgotten its flows, it is gone.
        let three = try host3.wait(timeout: 30)
        #expect(three.status == 0, "\(three.output)")
        for host in 1...2 {
            #expect(Self.await(15) { try Self.cluster(sockets[host - 1]) == (200, []) }, "host \(host): \((try? Self.cluster(sockets[host - 1])).map { "\($0)" } ?? "?")")
        }

        // No peer restarted: each ran its whole time and stopped cleanly.
        let results = [try host1.wait(timeout: 40), try host2.wait(timeout: 40)]
        let logs = results.map(\.stderr).joined(separator: "\n====\n")
        #expect(results.map(\.status) == [0, 0], "\(logs)")
        // Host 3 took every entry of both peers (host 1's 200 from each) before its lcores started.
        let synchronised = try #require(three.stderr.range(of: "400 records: complete"), "\(three.stderr)")
        let running = try #require(three.stderr.range(of: "running: 1 lcore"), "\(three.stderr)")
        #expect(synchronised.lowerBound < running.lowerBound, "lcores started before the ownership state was in")
        for result in results {
            #expect(result.stderr.contains("gossip: host(s) 3 joined") && result.stderr.contains("host(s) 3 departing")
                    && result.stderr.contains("host(s) 3 drained: no flow left, removed"), "\(result.stderr)")
            #expect(result.stderr.components(separatedBy: "gossip: synchronised").count == 2, "one start only")
        }
    }
}
