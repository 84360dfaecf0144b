import Foundation
import SwitchyardEngine
import SwitchyardPcap
import Testing

/// `ctl preview` on a running engine (`switchyard run`, its own process, on a veth in a network
/// namespace): TCP connections are opened by injected SYN/ACK bursts, the preview of a new
/// configuration is asked, the configuration is reloaded, the connections stay on their backends,
/// and once they are closed and opened again exactly the ones the preview named land elsewhere.
///
///     ns h:  c0 ──(injected frames)──► up0 ──net_af_packet──► classify ─► owner ─► sink (drop)
@Suite("preview engine", .serialized)
struct PreviewEngineTests {
    static let client: [UInt8] = [198, 18, 1, 1]
    static let flows = (0..<300).map { UInt16(20000 + $0) }

    static func configuration(socket: String, web: String) -> String {
        """
        control: { socket: \(socket) }
        eal: { hugepages: off, memory_mb: 128 }
        ports:
          - { name: uplink, device: "net_af_packet0,iface=up0,framecnt=4096", promiscuous: false }
        stages:
          - name: classify
            kind: classify
            next: { vip: owner, reply: sink, tunnel: sink, answer: sink, local: sink, other: sink }
          - name: owner
            kind: ownership-lookup
            next: { local: sink, remote: sink }
          - { name: sink, kind: drop }
        lcores:
          - { id: 1, idle: backoff, poll: [{ port: uplink, queue: 0, to: classify }] }
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
        \(web)
          connections: { capacity: 4096 }

        """
    }

    static let webBefore = """
                  - { host: 1, address: 198.18.100.10, port: 8080 }
                  - { host: 1, address: 198.18.100.11, port: 8080 }
                  - { host: 1, address: 198.18.100.12, port: 8080 }
        """
    static let webAfter = """
                  - { host: 1, address: 198.18.100.10, port: 8080 }
                  - { host: 1, address: 198.18.100.11, port: 8080, weight: 2 }
                  - { host: 2, address: 198.18.101.10, port: 8080 }
        """

    static func tcp(_ port: UInt16, _ flags: Frames.TCPFlags) -> [UInt8] {
        Frames.ipv4TCP(source: client, destination: [198, 19, 0, 1], sourcePort: port, destinationPort: 80, flags: flags)
    }

    /// Client port → backend of every entry in the engine's table.
    static func table(_ socket: String) throws -> [UInt16: String] {
        let answer = try #require(try ControlClient.request(socket: socket, command: "connections", args: ["limit": 10000])
            as? [String: Any])
        var placed: [UInt16: String] = [:]
        for row in answer["connections"] as? [[String: Any]] ?? [] {
            guard let client = row["client"] as? String, let port = client.split(separator: ":").last.flatMap({ UInt16($0) })
            else { continue }
            placed[port] = row["backend"] as? String
        }
        return placed
    }

    /// Injects `frames` in bursts of 100 and waits until the table holds `entries` connections.
    static func inject(_ frames: [[UInt8]], _ net: NetworkTopology, socket: String, until entries: Int) throws {
        for start in stride(from: 0, to: frames.count, by: 100) {
            try net.inject(Array(frames[start..<min(start + 100, frames.count)]), in: "h", interface: "c0")
        }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if try table(socket).count == entries { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        Issue.record("the table holds \(try table(socket).count) connections, not \(entries)")
    }

    @Test func thePreviewNamesTheConnectionsThatAReloadMoves() throws {
        if let reason = NetworkTopology.unavailableReason {
            print("skipped: \(reason)")
            return
        }
        let net = try NetworkTopology()
        defer { net.tearDown() }
        try net.addNamespace("h")
        _ = try net.addVethPair("up0", in: "h", "c0", in: "h")
        let workspace = try TemporaryDirectory()
        let socket = workspace.file("engine.sock")
        let config = try workspace.write("engine.yaml", Self.configuration(socket: socket, web: Self.webBefore))
        let next = try workspace.write("next.yaml", Self.configuration(socket: socket, web: Self.webAfter))
        let engine = try net.start(in: "h", [SwitchyardBinary.path, "run", "--config", config, "--duration", "40"])
        let deadline = Date().addingTimeInterval(30)
        while !ControlClient.isAnswering(socket: socket) && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        try #require(ControlClient.isAnswering(socket: socket), "no control socket: \(engine.stdoutSoFar)")

        // 300 connections, established (SYN, then ACK).
        try Self.inject(Self.flows.map { Self.tcp($0, [.syn]) }, net, socket: socket, until: 300)
        try Self.inject(Self.flows.map { Self.tcp($0, [.ack]) }, net, socket: socket, until: 300)
        let before = try Self.table(socket)

        // Strict like reload: a bad file is refused with file, line and key, and nothing is asked.
        let bad = try workspace.write("bad.yaml", Self.configuration(socket: socket, web: Self.webAfter)
            .replacingOccurrences(of: "port: 8080, weight: 2", with: "port: 8080, weight: 2, colour: blue"))
        let refused = try SwitchyardBinary.run(["ctl", "--socket", socket, "preview", bad])
        #expect(refused.status == 1 && refused.stderr.contains("bad.yaml:") && refused.stderr.contains("'colour'"), "\(refused.output)")
        let againstBad = try SwitchyardBinary.run(["validate", "--against", socket, bad])
        #expect(againstBad.status == 1 && againstBad.stdout.contains("'colour'"), "\(againstBad.output)")
        let fixed = try workspace.write("fixed.yaml", Self.configuration(socket: socket, web: Self.webAfter)
            .replacingOccurrences(of: "capacity: 4096", with: "capacity: 8192"))
        let refusedFixed = try SwitchyardBinary.run(["ctl", "--socket", socket, "preview", fixed])
        #expect(refusedFixed.status == 1 && refusedFixed.stderr.contains("cluster.connections")
                && refusedFixed.stderr.contains("a reload would be refused"), "\(refusedFixed.output)")

        // The preview: JSON from ctl, and the same from validate --against, in text.
        let json = try SwitchyardBinary.run(["ctl", "--socket", socket, "preview", next, "--json"])
        #expect(json.status == 0, "\(json.output)")
        let answer = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let web = try #require((answer["services"] as? [[String: Any]])?.first)
        let picks = try #require(web["pick_changes"] as? [String: Int])
        let held = try #require(web["held_by_entry"] as? [String: Any])
        #expect(web["connections"] as? Int == 300 && web["local"] as? Int == 300 && web["status"] as? String == "changed")
        #expect(held["backend"] as? Int == picks["backend"] && held["host"] as? Int == picks["host"])
        #expect((held["by_state"] as? [String: Int]) == ["established": picks["backend"]!])
        let text = try SwitchyardBinary.run(["validate", "--against", socket, next])
        print(text.stdout)
        #expect(text.status == 0 && text.stdout.contains("valid") && text.stdout.contains("service web")
                && text.stdout.contains("pick changes    backend \(picks["backend"]!), host \(picks["host"]!)"), "\(text.output)")
        #expect(try Self.table(socket) == before, "a preview applies nothing")

        // The reload: every connection keeps its backend (its entry holds it).
        let reload = try SwitchyardBinary.run(["ctl", "--socket", socket, "reload", next])
        #expect(reload.status == 0, "\(reload.output)")
        try Self.inject(Self.flows.map { Self.tcp($0, [.ack]) }, net, socket: socket, until: 300)
        #expect(try Self.table(socket) == before)
        // After it, a preview of the running file moves nothing.
        let same = try #require(try ControlClient.request(socket: socket, command: "preview") as? [String: Any])
        let sameWeb = try #require((same["services"] as? [[String: Any]])?.first)
        #expect((sameWeb["pick_changes"] as? [String: Int]) == ["backend": 0, "host": 0])
        #expect((sameWeb["held_by_entry"] as? [String: Any])?["backend"] as? Int == picks["backend"])

        // Closed and opened again, the new table decides: exactly the predicted ones move.
        try Self.inject(Self.flows.map { Self.tcp($0, [.rst]) }, net, socket: socket, until: 0)
        let stayedHere = 300 - picks["host"]!
        try Self.inject(Self.flows.map { Self.tcp($0, [.syn]) }, net, socket: socket, until: stayedHere)
        let after = try Self.table(socket)
        let moved = Self.flows.filter { before[$0] != after[$0] }
        #expect(moved.count == picks["backend"], "preview: \(picks["backend"]!) change backend; after the reload \(moved.count) did")
        #expect(Self.flows.filter { after[$0] == nil }.count == picks["host"], "the flows now on host 2 have no entry here")
        #expect(picks["host"]! > 0 && picks["backend"]! > picks["host"]!)

        // SIGINT: a graceful stop, every mbuf back.
        let pids = try net.run(in: nil, ["ip", "netns", "pids", net.namespaceName("h")]).stdout
            .split(separator: "\n").compactMap { Int32($0) }
        for pid in pids { kill(pid, SIGINT) }
        let result = engine.wait(timeout: 20)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("reloaded:"), "\(result.stderr)")
    }
}
