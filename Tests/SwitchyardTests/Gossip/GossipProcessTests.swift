import Foundation
import SwitchyardPcap
import Testing

/// Three `switchyard run` processes, each a host of one cluster, gossiping over loopback: the
/// connection table of every host ends up holding the flows host 1 opened, a host killed with
/// SIGKILL and started again takes them back before its lcores start, and every process stops
/// cleanly. (In-process tests in this folder cover loss, forgery and replay message by message.)
@Suite("gossip between switchyard processes", .serialized)
struct GossipProcessTests {
    static let key = String(repeating: "5a17", count: 16)
    static let basePort = 20000 + Int(getpid() % 20000)

    /// Host `host`'s configuration: traffic from `capture` (host 1 only), one service whose only
    /// backend is on host 1 (host 1 opens every flow), gossip by unicast on 127.0.0.1.
    static func configuration(host: Int, capture: String, output: String, loss: Double = 0) -> String {
        """
        eal: { hugepages: off, memory_mb: 256 }
        ports:
          - { name: wire, device: "net_pcap\(host),rx_pcap=\(capture)" , tx_queues: 0 }
          - { name: sink, device: "net_null\(host)", rx_queues: 0 }
        stages:
          - name: classify
            kind: classify
            answer: false
            next: { vip: owner, reply: drop, tunnel: drop, answer: drop, local: drop, other: drop }
          - name: owner
            kind: ownership-lookup
            next: { local: translate, remote: drop }
          - name: translate
            kind: tuple-translate
            next: { out: to-sink }
          - name: to-sink
            kind: forward
            port: sink
            neighbors: [{ address: 198.18.100.10, mac: "02:00:00:00:10:10" }]
            next: { out: port:sink, resolve: port:sink }
        lcores:
          - { id: 1, cpu: 1, idle: backoff, poll: [ { port: wire, queue: 0, to: classify } ] }
        cluster:
          host: \(host)
          hosts:
            - { id: 1, address: 198.18.0.11 }
            - { id: 2, address: 198.18.0.12 }
            - { id: 3, address: 198.18.0.13 }
          services:
            - name: web
              vip: 198.19.0.1
              port: 80
              backends: [{ host: 1, address: 198.18.100.10, port: 8080 }]
          connections: { capacity: 65536 }
          gossip:
            key: "\(key)"
            bind: 127.0.0.1
            heartbeat_ms: 100
            peer_timeout_ms: 600
            digest_interval_ms: 300
            test_receive_loss: \(loss)
            members:
              - { host: 1, address: 127.0.0.1, port: \(basePort + 1) }
              - { host: 2, address: 127.0.0.1, port: \(basePort + 2) }
              - { host: 3, address: 127.0.0.1, port: \(basePort + 3) }
        """
    }

    /// A running `switchyard run`, output in files.
    final class Host {
        let process = Process()
        let directory: TemporaryDirectory
        let name: String

        init(_ name: String, configuration: String, seconds: Double, in directory: TemporaryDirectory) throws {
            self.name = name
            self.directory = directory
            let config = try directory.write("\(name).yaml", configuration)
            process.executableURL = URL(fileURLWithPath: SwitchyardBinary.path)
            process.arguments = ["run", "--config", config, "--duration", String(seconds),
                                 "--stats-json", directory.file("\(name).json")]
            FileManager.default.createFile(atPath: directory.file("\(name).out"), contents: nil)
            FileManager.default.createFile(atPath: directory.file("\(name).err"), contents: nil)
            process.standardOutput = FileHandle(forWritingAtPath: directory.file("\(name).out"))
            process.standardError = FileHandle(forWritingAtPath: directory.file("\(name).err"))
            try process.run()
        }

        func wait(timeout: Double = 30) -> Int32 {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            return process.terminationStatus
        }

        var log: String {
            ((try? String(contentsOfFile: directory.file("\(name).err"), encoding: .utf8)) ?? "")
                + ((try? String(contentsOfFile: directory.file("\(name).out"), encoding: .utf8)) ?? "")
        }

        func counters() throws -> CounterSnapshot { try CounterSnapshot(path: directory.file("\(name).json")) }
    }

    /// Host 1's traffic: 200 connections (SYN then ACK: established), then RST for the first 50.
    static func traffic() -> [[UInt8]] {
        let client: (Int) -> [UInt8] = { [198, 18, 1 + UInt8($0 / 250), UInt8($0 % 250)] }
        var frames: [[UInt8]] = []
        for flags: Frames.TCPFlags in [[.syn], [.ack]] {
            for flow in 0..<200 {
                frames.append(Frames.ipv4TCP(source: client(flow), destination: [198, 19, 0, 1],
                                             sourcePort: UInt16(10000 + flow), destinationPort: 80, flags: flags))
            }
        }
        for flow in 0..<50 {
            frames.append(Frames.ipv4TCP(source: client(flow), destination: [198, 19, 0, 1],
                                         sourcePort: UInt16(10000 + flow), destinationPort: 80, flags: [.rst]))
        }
        return frames
    }

    /// With 30 % of every host's received gossip dropped, all three tables still hold exactly
    /// host 1's 150 connections within the 7 s the peers run after host 1's traffic.
    @Test func tablesConvergeWithThirtyPercentOfGossipLost() throws {
        let directory = try TemporaryDirectory()
        try Pcap.write(Self.traffic(), to: directory.file("traffic.pcap"))
        try Pcap.write([], to: directory.file("empty.pcap"))
        let empty = directory.file("empty.pcap")
        let host2 = try Host("host2", configuration: Self.configuration(host: 2, capture: empty, output: "", loss: 0.3),
                             seconds: 9, in: directory)
        let host3 = try Host("host3", configuration: Self.configuration(host: 3, capture: empty, output: "", loss: 0.3),
                             seconds: 9, in: directory)
        Thread.sleep(forTimeInterval: 1)
        let host1 = try Host("host1", configuration: Self.configuration(host: 1, capture: directory.file("traffic.pcap"),
                                                                         output: "", loss: 0.3),
                             seconds: 8, in: directory)
        let statuses = [host1.wait(), host2.wait(), host3.wait()]
        let logs = [host1, host2, host3].map { "== \($0.name)\n\($0.log)" }.joined(separator: "\n")
        try #require(statuses == [0, 0, 0], "exit statuses \(statuses)\n\(logs)")
        for host in [host1, host2, host3] {
            let connections = try host.counters().total("cluster", "connections")
            #expect(connections == 150, "\(host.name): \(connections) connections\n\(logs)")
            #expect(host.log.contains("dropped-injected-loss"), "\(host.name) dropped nothing: the loss was not injected")
        }
    }

    @Test func flowsOpenedOnOneHostReachEveryTableAndARestartedHostTakesThemBack() throws {
        let directory = try TemporaryDirectory()
        try Pcap.write(Self.traffic(), to: directory.file("traffic.pcap"))
        try Pcap.write([], to: directory.file("empty.pcap"))
        let empty = directory.file("empty.pcap")

        let host2 = try Host("host2", configuration: Self.configuration(host: 2, capture: empty, output: ""),
                             seconds: 9, in: directory)
        let host3 = try Host("host3", configuration: Self.configuration(host: 3, capture: empty, output: ""),
                             seconds: 30, in: directory)
        Thread.sleep(forTimeInterval: 1)
        let host1 = try Host("host1", configuration: Self.configuration(host: 1, capture: directory.file("traffic.pcap"),
                                                                         output: ""),
                             seconds: 8, in: directory)
        // Host 3 dies without a word once the flows are out, and comes back.
        Thread.sleep(forTimeInterval: 3)
        let killed = host3.process.processIdentifier
        kill(killed, SIGKILL)
        _ = host3.wait()
        // A process killed with SIGKILL cannot remove its EAL runtime directory: the test does.
        try? FileManager.default.removeItem(atPath: "/var/run/dpdk/switchyard-\(killed)")
        let again = try Host("host3-again", configuration: Self.configuration(host: 3, capture: empty, output: ""),
                             seconds: 3, in: directory)

        let statuses = [host1.wait(), host2.wait(), again.wait()]
        let logs = [host1, host2, again].map { "== \($0.name)\n\($0.log)" }.joined(separator: "\n")
        try #require(statuses == [0, 0, 0], "exit statuses \(statuses)\n\(logs)")

        // Host 1 owns 150 connections (200 opened, 50 reset); the others learned exactly those.
        #expect(try host1.counters().total("stage owner", "opened") == 200, "\(logs)")
        #expect(try host1.counters().total("stage owner", "rst") == 50)
        for host in [host1, host2, again] {
            let connections = try host.counters().total("cluster", "connections")
            #expect(connections == 150, "\(host.name): \(connections) connections\n\(logs)")
        }
        // The restarted host synchronised with its peers before its lcores started.
        #expect(again.log.contains("gossip: synchronised"), "\(again.log)")
        #expect(again.log.contains("running: 1 lcore"))
        let syncIndex = again.log.range(of: "gossip: synchronised")!.lowerBound
        let runningIndex = again.log.range(of: "running: 1 lcore")!.lowerBound
        #expect(syncIndex < runningIndex, "lcores started before the ownership state was in")
    }
}
