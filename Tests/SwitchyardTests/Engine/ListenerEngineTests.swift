import Foundation
import SwitchyardEngine
import SwitchyardPcap
import Testing

/// Listener registration on a running engine (`switchyard run` on virtual devices): host 1 of a
/// two-host cluster receives, forever, packets of 512 established connections (ACKs, no SYN) that
/// host 2 owns (the file's only backend of `web` is on host 2; host 1 has no entry for them). While
/// they flow, `ctl listen` registers a backend on host 1, so the new table gives about half of
/// those flows to host 1; then `ctl unlisten` withdraws it. A packet of these connections that
/// reached a backend of host 1 would be misrouted: there must be none. Daisy chaining hands them
/// on to host 2, the previous table's choice.
@Suite("listener registration in a running engine", .serialized)
struct ListenerEngineTests {
    static func configuration(capture: String, socket: String) -> String {
        """
        name: listen-test
        control: { socket: \(socket) }
        eal: { hugepages: off, memory_mb: 256 }
        ports:
          - name: uplink
            device: net_pcap0,rx_pcap=\(capture),infinite_rx=1
            tx_queues: 0
          - name: backends
            device: net_null0
            rx_queues: 0
          - name: sink
            device: net_null1
            rx_queues: 0
        stages:
          - name: classify
            kind: classify
            next: { vip: owner, reply: drop, tunnel: drop, answer: drop, local: drop, other: drop }
          - name: owner
            kind: ownership-lookup
            next: { local: translate-in, remote: encap }
          - name: translate-in
            kind: tuple-translate
            next: { out: port:backends }
          - name: encap
            kind: encapsulate
            next: { out: port:sink, too-big: drop }
        lcores:
          - id: 1
            cpu: 1
            idle: busy
            poll:
              - { port: uplink, queue: 0, to: classify }
        cluster:
          host: 1
          hosts:
            - { id: 1, address: 198.18.0.11 }
            - { id: 2, address: 198.18.0.12 }
          services:
            - name: web
              vip: 198.19.0.1
              port: 80
              backends: [{ host: 2, address: 198.18.101.10, port: 8080 }]
          connections: { capacity: 16384 }

        """
    }

    static func stageCounter(_ socket: String, _ scope: String, _ name: String) throws -> UInt64 {
        let stats = try #require(try ControlClient.request(socket: socket, command: "stats") as? [String: Any])
        let blocks = stats["blocks"] as? [[String: Any]] ?? []
        return blocks.filter { $0["scope"] as? String == scope }
            .reduce(0) { $0 + ((($1["counters"] as? [String: Any])?[name] as? NSNumber)?.uint64Value ?? 0) }
    }

    @Test func registeringAndWithdrawingABackendUnderTrafficMisroutesNoPacket() throws {
        let workspace = try TemporaryDirectory()
        let capture = workspace.file("established.pcap")
        let frames = (0..<512).map { n in
            Frames.ipv4TCP(source: [198, 18, 1, UInt8(1 + n % 200)], destination: [198, 19, 0, 1],
                           sourcePort: UInt16(30000 + n), destinationPort: 80, flags: [.ack, .psh], payload: [1, 2, 3])
        }
        try Pcap.write(frames, to: capture)
        let socket = workspace.file("ctl.sock")
        let config = try workspace.write("host1.yaml", Self.configuration(capture: capture, socket: socket))
        let engine = try BackgroundEngine(["run", "--config", config, "--duration", "6",
                                           "--stats-json", workspace.file("counters.json")], in: workspace)
        try engine.waitForSocket(socket)
        Thread.sleep(forTimeInterval: 0.5)

        // Register: the answer names the generation (host 1's set, version 1).
        let listen = try SwitchyardBinary.run(["ctl", "--socket", socket, "listen", "web", "198.18.100.20:8080", "--weight", "2"])
        #expect(listen.status == 0 && listen.stdout.contains("listening: web 198.18.100.20:8080 weight 2, generation 1:1"),
                "\(listen.output)")
        // A bypass tuple that is already a backend is refused, naming it.
        let taken = try SwitchyardBinary.run(["ctl", "--socket", socket, "listen", "web", "198.18.101.10:8080"])
        #expect(taken.status == 1 && taken.stderr.contains("already a backend of 'web' (host 2, config)"), "\(taken.output)")
        Thread.sleep(forTimeInterval: 1)
        let backends = try #require(try ControlClient.request(socket: socket, command: "backends") as? [String: Any])
        let rows = backends["backends"] as? [[String: Any]] ?? []
        #expect(rows.count == 2)
        let listened = try #require(rows.first { $0["origin"] as? String == "listen" })
        #expect(listened["backend"] as? String == "198.18.100.20:8080" && listened["weight"] as? Int == 2
                && listened["state"] as? String == "active" && listened["generation"] as? Int == 1
                && listened["source"] as? String == "ctl" && listened["host"] as? Int == 1, "\(listened)")
        #expect(rows.first { $0["origin"] as? String == "config" }?["state"] as? String == "active")
        let table = try SwitchyardBinary.run(["ctl", "--socket", socket, "backends"])
        #expect(table.status == 0 && table.stdout.contains("198.18.100.20:8080") && table.stdout.contains("generation 1:1"),
                "\(table.output)")
        let chained = try Self.stageCounter(socket, "stage owner", "daisy-chained")
        #expect(chained > 0, "the flows the new table gives host 1 are handed on to host 2")

        // Withdraw: weight 0 at once, removed once no connection uses it (there is none).
        let unlisten = try SwitchyardBinary.run(["ctl", "--socket", socket, "unlisten", "web", "198.18.100.20:8080"])
        #expect(unlisten.status == 0 && unlisten.stdout.contains("withdrawn: web 198.18.100.20:8080"), "\(unlisten.output)")
        let again = try SwitchyardBinary.run(["ctl", "--socket", socket, "unlisten", "web", "198.18.100.20:8080"])
        #expect(again.status == 1 && again.stderr.contains("is not a listener of 'web' on this host"), "\(again.output)")
        Thread.sleep(forTimeInterval: 2)
        let after = try #require(try ControlClient.request(socket: socket, command: "backends") as? [String: Any])
        #expect((after["backends"] as? [[String: Any]])?.count == 1, "\(after)")
        #expect(after["generation"] as? String == "1:3", "listen, unlisten, purge: three versions")

        let result = try engine.wait(timeout: 30)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stderr.contains("listeners: tables republished, generation 1:1"), "\(result.stderr)")
        let final = try CounterSnapshot(path: workspace.file("counters.json"))
        let received = final.total("stage owner", "in")
        #expect(received > 100_000)
        #expect(final.total("stage translate-in", "in") == 0, "misrouted packets: reached a backend of host 1")
        #expect(final.total("stage owner", "miss-adopted") == 0)
        #expect(final.total("stage owner", "daisy-chained") > 0)
        #expect(final.total("stage encap", "handed-on") == final.total("stage owner", "daisy-chained"))
        #expect(final.total("stage encap", "encapsulated") == received)
        if let error = final.conservationError() { Issue.record("counters do not add up: \(error)") }
        #expect(CounterSnapshot.allMbufsReturned(result.stdout))
        print("listen/unlisten under traffic: \(received) packets, \(final.total("stage owner", "daisy-chained")) handed on, 0 misrouted")
    }
}
