import Foundation
import SwitchyardPcap
import Testing

/// The real engine, as its own process, on DPDK virtual devices with --no-huge:
/// captures in, captures out, exact packets and bytes, counters that add up, no mbuf leaked.
@Suite("engine runs on virtual devices", .serialized)
struct EngineRunTests {
    /// Input traffic: 200 packets of mixed sizes and flows, IPv4 and IPv6.
    static func traffic(seed: Int = 0) -> [[UInt8]] {
        let builder = PacketBuilder()
        var frames = builder.flowMix(count: 150, flows: 40)
        for index in 0..<50 {
            frames.insert(builder.ipv6(source: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, UInt8(index)],
                                       destination: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff],
                                       transport: index % 2 == 0 ? .udp : .tcp, sourcePort: UInt16(2000 + index + seed),
                                       destinationPort: 443, frameLength: 78 + index * 20), at: index * 3)
        }
        return frames
    }

    static func macSwapped(_ frame: [UInt8]) -> [UInt8] {
        Array(frame[6..<12]) + Array(frame[0..<6]) + Array(frame[12...])
    }

    static let runToCompletion = """
        ports:
          - name: wire
            device: net_pcap0,rx_pcap=IN,tx_pcap=OUT
        stages:
          - name: count
            kind: counter
            next: { out: swap }
          - name: swap
            kind: mac-swap
            next: { out: port:wire }
        lcores:
          - id: 1
            cpu: 1
            idle: backoff
            poll:
              - { port: wire, queue: 0, to: count }

        """

    static let pipelined = """
        ports:
          - name: wire
            device: net_pcap0,rx_pcap=IN,tx_pcap=OUT
        rings:
          - name: handoff
            size: 1024
        stages:
          - name: count
            kind: counter
            next: { out: ring:handoff }
          - name: swap
            kind: mac-swap
            next: { out: port:wire }
        lcores:
          - id: 1
            cpu: 1
            idle: backoff
            poll:
              - { port: wire, queue: 0, to: count }
          - id: 2
            cpu: 1
            idle: backoff
            poll:
              - { ring: handoff, to: swap }

        """

    /// Writes the input capture and the config (IN/OUT replaced), runs, returns the output capture.
    func runCapture(_ template: String, input: [[UInt8]], in directory: TemporaryDirectory,
                    duration: Double = 1.5) throws -> (output: [[UInt8]], counters: CounterSnapshot, run: SwitchyardBinary.Result)
    {
        try Pcap.write(input, to: directory.file("in.pcap"))
        let config = try directory.write("switchyard.yaml", template
            .replacingOccurrences(of: "IN", with: directory.file("in.pcap"))
            .replacingOccurrences(of: "OUT", with: directory.file("out.pcap")))
        let run = try SwitchyardBinary.run(["run", "--config", config, "--duration", String(duration),
                                            "--stats-json", directory.file("stats.json")])
        try #require(run.status == 0, "switchyard failed: \(run.output)")
        return (try Pcap.read(directory.file("out.pcap")), try CounterSnapshot(path: directory.file("stats.json")), run)
    }

    @Test("run to completion: capture in, capture out, byte for byte, counters add up")
    func runToCompletion() throws {
        let directory = try TemporaryDirectory()
        let input = Self.traffic()
        let (output, counters, run) = try runCapture(Self.runToCompletion, input: input, in: directory)
        #expect(output.count == input.count)
        #expect(output == input.map(Self.macSwapped))
        #expect(counters.total("rx wire/0", "packets") == 200)
        #expect(counters.total("stage count", "in") == 200)
        #expect(counters.total("stage count", "bytes") == UInt64(input.reduce(0) { $0 + $1.count }))
        #expect(counters.total("stage swap", "out") == 200)
        #expect(counters.total("tx wire", "sent") == 200)
        #expect(counters.conservationError() == nil, "\(counters.conservationError() ?? "")")
        #expect(CounterSnapshot.allMbufsReturned(run.stdout), "\(run.stdout)")
    }

    @Test("pipelined over a ring forwards exactly what run-to-completion forwards")
    func pipelinedMatchesRunToCompletion() throws {
        let input = Self.traffic(seed: 7)
        let rtc = try runCapture(Self.runToCompletion, input: input, in: try TemporaryDirectory())
        let piped = try runCapture(Self.pipelined, input: input, in: try TemporaryDirectory())
        #expect(piped.output == rtc.output)
        #expect(piped.output.count == 200)
        #expect(piped.counters.total("tx ring:handoff", "enqueued") == 200)
        #expect(piped.counters.total("rx ring:handoff", "packets") == 200)
        #expect(piped.counters.lcores(of: "stage count") == [1])
        #expect(piped.counters.lcores(of: "stage swap") == [2])
        #expect(piped.counters.conservationError() == nil, "\(piped.counters.conservationError() ?? "")")
        #expect(CounterSnapshot.allMbufsReturned(piped.run.stdout), "\(piped.run.stdout)")
    }

    @Test("run to completion on two lcores, one rx and one tx queue each")
    func twoLcoresTwoQueues() throws {
        let directory = try TemporaryDirectory()
        let first = Self.traffic(seed: 1), second = Self.traffic(seed: 2).reversed().map { $0 }
        try Pcap.write(first, to: directory.file("in0.pcap"))
        try Pcap.write(second, to: directory.file("in1.pcap"))
        let config = try directory.write("switchyard.yaml", """
            ports:
              - name: wire
                device: net_pcap0,rx_pcap=\(directory.file("in0.pcap")),rx_pcap=\(directory.file("in1.pcap")),tx_pcap=\(directory.file("out0.pcap")),tx_pcap=\(directory.file("out1.pcap"))
                rx_queues: 2
                tx_queues: 2
            stages:
              - name: swap
                kind: mac-swap
                next: { out: port:wire }
            lcores:
              - id: 1
                cpu: 1
                idle: backoff
                poll: [ { port: wire, queue: 0, to: swap } ]
              - id: 2
                cpu: 0
                idle: backoff
                poll: [ { port: wire, queue: 1, to: swap } ]

            """)
        let run = try SwitchyardBinary.run(["run", "--config", config, "--duration", "1.5",
                                            "--stats-json", directory.file("stats.json")])
        try #require(run.status == 0, "switchyard failed: \(run.output)")
        #expect(try Pcap.read(directory.file("out0.pcap")) == first.map(Self.macSwapped))
        #expect(try Pcap.read(directory.file("out1.pcap")) == second.map(Self.macSwapped))
        let counters = try CounterSnapshot(path: directory.file("stats.json"))
        #expect(counters.lcores(of: "stage swap") == [1, 2])
        #expect(counters.conservationError() == nil, "\(counters.conservationError() ?? "")")
    }

    @Test("SIGINT under load: rx stops, rings drain, every mbuf returns to its pool")
    func gracefulShutdownUnderLoad() throws {
        let directory = try TemporaryDirectory()
        try Pcap.write(Self.traffic(), to: directory.file("in.pcap"))
        let config = try directory.write("switchyard.yaml", Self.pipelined
            .replacingOccurrences(of: "rx_pcap=IN,tx_pcap=OUT", with: "rx_pcap=\(directory.file("in.pcap")),infinite_rx=1\n    tx_queues: 0\n  - name: sink\n    device: net_null0\n    rx_queues: 0")
            .replacingOccurrences(of: "port:wire", with: "port:sink")
            .replacingOccurrences(of: "rx_queues: 0\n", with: "rx_queues: 0\n"))
        let run = try SwitchyardBinary.run(["run", "--config", config, "--stats-json", directory.file("stats.json")],
                                           interruptAfter: 2.5)
        #expect(run.status == 0, "\(run.output)")
        #expect(run.stderr.contains("signal received: shutting down"))
        #expect(CounterSnapshot.allMbufsReturned(run.stdout), "\(run.output)")
        let counters = try CounterSnapshot(path: directory.file("stats.json"))
        #expect(counters.total("rx wire/0", "packets") > 10_000)
        #expect(counters.conservationError() == nil, "\(counters.conservationError() ?? "")")
    }

    @Test("hot reload swaps the stage graph under load without stopping the lcore or losing a packet")
    func hotReloadUnderLoad() throws {
        let directory = try TemporaryDirectory()
        try Pcap.write(Self.traffic(), to: directory.file("in.pcap"))
        let ports = """
            ports:
              - name: wire
                device: net_pcap0,rx_pcap=\(directory.file("in.pcap")),infinite_rx=1
                tx_queues: 0
              - name: sink
                device: net_null0
                rx_queues: 0

            """
        let lcore = """
            lcores:
              - id: 1
                cpu: 1
                poll: [ { port: wire, queue: 0, to: count } ]

            """
        let before = try directory.write("before.yaml", ports + """
            stages:
              - name: count
                kind: counter
                next: { out: port:sink }

            """ + lcore)
        // After the reload, packets go through mac-swap and a drop stage as well.
        let after = try directory.write("after.yaml", ports + """
            stages:
              - name: count
                kind: counter
                next: { out: swap }
              - name: swap
                kind: mac-swap
                next: { out: discard }
              - name: discard
                kind: drop

            """ + lcore)
        let run = try SwitchyardBinary.run(["run", "--config", before, "--duration", "2.5", "--reload-config", after,
                                            "--reload-after", "1", "--stats-json", directory.file("stats.json")])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.stderr.contains("reloaded: 1 [count swap discard]"), "\(run.stderr)")
        let counters = try CounterSnapshot(path: directory.file("stats.json"))
        #expect(counters.total("tx sink", "sent") > 1000, "the first graph ran")
        #expect(counters.total("stage discard", "dropped") > 1000, "the second graph ran")
        #expect(counters.conservationError() == nil, "\(counters.conservationError() ?? "")")
        #expect(CounterSnapshot.allMbufsReturned(run.stdout), "\(run.stdout)")
    }

    @Test("a reload that would move a ring's producer or consumer to another lcore is refused; traffic goes on")
    func reloadKeepsRingOwners() throws {
        let directory = try TemporaryDirectory()
        try Pcap.write(Self.traffic(), to: directory.file("in.pcap"))
        func config(countOn countLcore: Int) -> String {
            let swapLcore = 3 - countLcore
            return """
                ports:
                  - name: wire
                    device: net_pcap0,rx_pcap=\(directory.file("in.pcap")),infinite_rx=1
                    tx_queues: 0
                rings:
                  - name: handoff
                stages:
                  - name: count
                    kind: counter
                    next: { out: ring:handoff }
                  - name: swap
                    kind: mac-swap
                    next: { out: discard }
                  - name: discard
                    kind: drop
                lcores:
                  - id: \(countLcore)
                    cpu: 1
                    idle: backoff
                    poll: [ { port: wire, queue: 0, to: count } ]
                  - id: \(swapLcore)
                    cpu: 1
                    idle: backoff
                    poll: [ { ring: handoff, to: swap } ]

                """
        }
        // The reload swaps the lcores' roles: lcore 1 would take over the ring while lcore 2 still polls it.
        let before = try directory.write("before.yaml", config(countOn: 1))
        let after = try directory.write("after.yaml", config(countOn: 2))
        let run = try SwitchyardBinary.run(["run", "--config", before, "--duration", "2", "--reload-config", after,
                                            "--reload-after", "0.5", "--stats-json", directory.file("stats.json")])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.stderr.contains("reload failed, keeping the running graphs: ring 'handoff' was created single-producer for lcore 1; lcore 2 cannot feed it without a restart"),
                "\(run.stderr)")
        let counters = try CounterSnapshot(path: directory.file("stats.json"))
        #expect(counters.lcores(of: "stage count") == [1])
        #expect(counters.lcores(of: "stage swap") == [2])
        #expect(counters.total("stage discard", "dropped") > 1000)
        #expect(counters.conservationError() == nil, "\(counters.conservationError() ?? "")")
        #expect(CounterSnapshot.allMbufsReturned(run.stdout), "\(run.stdout)")
    }

    @Test("the embedded mac-swap example runs by name and prints non-zero stage counters")
    func embeddedExample() throws {
        let run = try SwitchyardBinary.run(["run", "--example", "mac-swap", "--duration", "1"])
        #expect(run.status == 0, "\(run.output)")
        let reflected = run.stdout.split(separator: "\n").first { $0.hasPrefix("stage reflect (mac-swap)") }
        let count = reflected.flatMap { UInt64($0.split(separator: " ").last ?? "") } ?? 0
        #expect(count > 1000, "\(run.stdout)")
        #expect(run.stdout.contains("mbufs back in the pool"))
    }

    @Test("switchyard validate: exit 0 when valid; a misspelled key fails naming the key and its line")
    func validateCommand() throws {
        let directory = try TemporaryDirectory()
        let good = try directory.write("good.yaml", Self.runToCompletion)
        let ok = try SwitchyardBinary.run(["validate", good])
        #expect(ok.status == 0, "\(ok.output)")
        #expect(ok.stdout.contains("valid"))
        let bad = try directory.write("bad.yaml", Self.runToCompletion.replacingOccurrences(of: "    next: { out: swap }", with: "    nxet: { out: swap }"))
        let failed = try SwitchyardBinary.run(["validate", bad])
        #expect(failed.status == 1)
        #expect(failed.stdout.contains("bad.yaml:7:5: stage 'count': key 'nxet': unknown key"), "\(failed.output)")
    }

    @Test("a configuration error stops `run` before DPDK starts, with exit status 1")
    func runRejectsBadConfiguration() throws {
        let directory = try TemporaryDirectory()
        let bad = try directory.write("bad.yaml", Self.runToCompletion.replacingOccurrences(of: "kind: mac-swap", with: "kind: mac-swop"))
        let run = try SwitchyardBinary.run(["run", "--config", bad, "--duration", "1"])
        #expect(run.status == 1)
        #expect(run.stderr.contains("unknown stage kind 'mac-swop'"))
        #expect(!run.output.contains("EAL:"))
    }
}
