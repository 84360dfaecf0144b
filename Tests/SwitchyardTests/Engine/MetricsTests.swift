import Foundation
import SwitchyardCore
import SwitchyardEngine
import SwitchyardMetrics
import SwitchyardPcap
import Testing

/// The Prometheus endpoint: the text it renders, the HTTP server, and a real Prometheus server
/// scraping a running engine on virtual devices (Debian's `prometheus` package).
@Suite("Prometheus endpoint", .serialized)
struct MetricsTests {
    static let promtool = "/usr/bin/promtool"
    static let prometheus = "/usr/bin/prometheus"

    /// A registry with a counter block, a gauge and a histogram, as the engine makes them.
    static func registry() -> (CounterRegistry, CounterBlock, CounterBlock) {
        let registry = CounterRegistry()
        let stage = registry.makeBlock(
            scope: "stage count", kind: "counter", lcore: 1,
            counters: [CounterDescription(name: "in", help: "packets given to the stage", severity: .info,
                                          metric: .init(name: "received_packets", help: "packets given to the stage")),
                       CounterDescription(name: "drop", help: "drop", severity: .info,
                                          metric: .init(name: "packets", help: "packets leaving the stage, by disposition",
                                                        label: ("disposition", "drop"))),
                       CounterDescription(name: "out", help: "out", severity: .info,
                                          metric: .init(name: "packets", help: "packets leaving the stage, by disposition",
                                                        label: ("disposition", "out"))),
                       CounterDescription(name: "connections", help: "entries now", severity: .info, kind: .gauge)],
            labels: [("stage", "count"), ("stage_kind", "counter")])
        let histogram = registry.makeHistogram(scope: "gossip propagation", name: "switchyard_gossip_propagation_seconds",
                                               help: "delay", bounds: [0.001, 0.01], scale: 1e6)
        return (registry, stage, histogram)
    }

    @Test("counters mirror absolute values by deltas, gauges are set, the histogram is cumulative; promtool accepts it")
    func exporterText() throws {
        let (registry, stage, histogram) = Self.registry()
        let exporter = PrometheusExporter(registry: registry)
        stage.set(0, 10)
        stage.set(2, 10)
        stage.set(3, 7)
        histogram.set(0, 2) // <= 1 ms
        histogram.set(1, 3) // <= 10 ms
        histogram.set(2, 1) // above
        histogram.set(3, 25_000) // sum: 25 ms in microseconds
        histogram.set(4, 6)
        _ = exporter.render()
        stage.set(0, 15)
        stage.set(2, 14)
        stage.set(3, 4)
        let text = String(decoding: exporter.render(), as: UTF8.self)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains(#"switchyard_stage_received_packets_total{lcore="1",stage="count",stage_kind="counter"} 15"#))
        #expect(lines.contains(#"switchyard_stage_packets_total{lcore="1",stage="count",stage_kind="counter",disposition="out"} 14"#))
        #expect(lines.contains(#"switchyard_stage_packets_total{lcore="1",stage="count",stage_kind="counter",disposition="drop"} 0"#))
        #expect(lines.contains(#"switchyard_stage_connections{lcore="1",stage="count",stage_kind="counter"} 4.0"#))
        #expect(lines.contains(#"switchyard_gossip_propagation_seconds_bucket{lcore="0",le="0.001"} 2"#))
        #expect(lines.contains(#"switchyard_gossip_propagation_seconds_bucket{lcore="0",le="0.01"} 5"#))
        #expect(lines.contains(#"switchyard_gossip_propagation_seconds_bucket{lcore="0",le="+Inf"} 6"#))
        #expect(lines.contains(#"switchyard_gossip_propagation_seconds_sum{lcore="0"} 0.025"#))
        #expect(lines.contains(#"switchyard_gossip_propagation_seconds_count{lcore="0"} 6"#))
        // One HELP and one TYPE line per family.
        for family in ["switchyard_stage_packets_total", "switchyard_stage_received_packets_total",
                       "switchyard_stage_connections", "switchyard_gossip_propagation_seconds"]
        {
            #expect(lines.filter { $0.hasPrefix("# TYPE \(family) ") }.count == 1, "\(family)")
            #expect(lines.filter { $0.hasPrefix("# HELP \(family) ") }.count == 1, "\(family)")
        }
        #expect(lines.contains("# TYPE switchyard_gossip_propagation_seconds histogram"))
        #expect(lines.contains("# TYPE switchyard_stage_connections gauge"))
        // A value that went down (a NIC reset its counters) is a counter reset, as Prometheus knows it.
        stage.set(0, 3)
        let after = String(decoding: exporter.render(), as: UTF8.self)
        #expect(after.contains(#"switchyard_stage_received_packets_total{lcore="1",stage="count",stage_kind="counter"} 3"#))
        let check = try Command.run(Self.promtool, ["check", "metrics"], stdin: after)
        #expect(check.status == 0, "promtool: \(check.output)\n\(after)")
    }

    @Test("GET /metrics answers 200, other paths 404, other methods 405; a port in use is an error naming it")
    func httpServer() throws {
        let (registry, stage, _) = Self.registry()
        stage.set(0, 42)
        let port = try Loopback.freeTCPPort()
        let server = MetricsServer(listen: MetricsSettings.parse(listen: "127.0.0.1:\(port)")!, log: { _ in })
        try server.start(exporter: PrometheusExporter(registry: registry))
        defer { server.stop() }
        let metrics = try Loopback.http("http://127.0.0.1:\(port)/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.body.contains(#"switchyard_stage_received_packets_total{lcore="1",stage="count",stage_kind="counter"} 42"#))
        #expect(try Loopback.http("http://127.0.0.1:\(port)/metrics?x=1").status == 200)
        #expect(try Loopback.http("http://127.0.0.1:\(port)/").status == 404)
        #expect(try Loopback.http("http://127.0.0.1:\(port)/metricsx").status == 404)
        #expect(try Loopback.http("http://127.0.0.1:\(port)/metrics", method: "POST").status == 405)

        let second = MetricsServer(listen: MetricsSettings.parse(listen: "127.0.0.1:\(port)")!, log: { _ in })
        let error = #expect(throws: (any Error).self) {
            try second.start(exporter: PrometheusExporter(registry: registry))
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains("metrics: cannot listen on 127.0.0.1:\(port): Address already in use"),
                "\(String(describing: error))")
    }

    @Test("switchyard run --metrics-listen on a port in use stops at startup with exit 2, naming the address")
    func runStopsWhenThePortIsInUse() throws {
        let directory = try TemporaryDirectory()
        let listener = try Loopback.listener()
        defer { close(listener.fd) }
        let config = try Self.writeEngineConfiguration(in: directory, metricsPort: nil)
        let run = try SwitchyardBinary.run(["run", "--config", config, "--duration", "5",
                                            "--metrics-listen", "127.0.0.1:\(listener.port)"])
        #expect(run.status == 2, "\(run.output)")
        #expect(run.stderr.contains("error: metrics: cannot listen on 127.0.0.1:\(listener.port): Address already in use"),
                "\(run.stderr)")
        #expect(!run.stderr.contains("running:"), "no lcore may start: \(run.stderr)")
        let bad = try SwitchyardBinary.run(["run", "--config", config, "--metrics-listen", "localhost"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("invalid --metrics-listen 'localhost'"), "\(bad.stderr)")
    }

    /// net_pcap rx of a generated capture, forever, into counter ─► mac-swap ─► net_null.
    static func writeEngineConfiguration(in directory: TemporaryDirectory, metricsPort: Int?,
                                         hugepages: String = "off") throws -> String
    {
        try Pcap.write(EngineRunTests.traffic(), to: directory.file("in.pcap"))
        return try directory.write("switchyard.yaml", (metricsPort.map { "metrics: { listen: 127.0.0.1:\($0) }\n" } ?? "") + """
            eal: { hugepages: \(hugepages) }
            control: { socket: none }      # tests run side by side: no socket that `ctl` could pick up
            ports:
              - name: wire
                device: net_pcap0,rx_pcap=\(directory.file("in.pcap")),infinite_rx=1
                tx_queues: 0
              - name: sink
                device: net_null0
                rx_queues: 0
            stages:
              - name: count
                kind: counter
                next: { out: swap }
              - name: swap
                kind: mac-swap
                next: { out: port:sink }
            lcores:
              - id: 1
                cpu: 1
                poll:
                  - { port: wire, queue: 0, to: count }

            """)
    }

    /// The value of an instant vector with one series, from Prometheus's /api/v1/query answer.
    static func queryValues(_ body: String) -> [(labels: [String: String], value: Double)] {
        guard let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
              json["status"] as? String == "success",
              let data = json["data"] as? [String: Any], let result = data["result"] as? [[String: Any]]
        else { return [] }
        return result.compactMap { series in
            guard let metric = series["metric"] as? [String: String], let value = series["value"] as? [Any],
                  value.count == 2, let text = value[1] as? String, let number = Double(text)
            else { return nil }
            return (metric, number)
        }
    }

    @Test("a real Prometheus server scrapes a running engine; stage counters read back through its query API; promtool passes",
          .enabled(if: FileManager.default.isExecutableFile(atPath: prometheus), "needs Debian's prometheus package"))
    func realPrometheusScrapesTheEngine() throws {
        let directory = try TemporaryDirectory()
        let enginePort = try Loopback.freeTCPPort()
        var prometheusPort = try Loopback.freeTCPPort()
        while prometheusPort == enginePort { prometheusPort = try Loopback.freeTCPPort() }
        let config = try Self.writeEngineConfiguration(in: directory, metricsPort: enginePort)
        let scrapeConfig = try directory.write("prometheus.yml", """
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
            scrape_configs:
              - job_name: switchyard
                static_configs:
                  - targets: ['127.0.0.1:\(enginePort)']

            """)
        try FileManager.default.createDirectory(atPath: directory.file("tsdb"), withIntermediateDirectories: true)
        // Prometheus first (it takes a few seconds to be ready), so the engine's busy lcore runs briefly.
        let server = try BackgroundProcess(Self.prometheus, [
            "--config.file=\(scrapeConfig)", "--storage.tsdb.path=\(directory.file("tsdb"))",
            "--web.listen-address=127.0.0.1:\(prometheusPort)", "--log.level=warn",
        ])
        defer { server.stop() }
        let base = "http://127.0.0.1:\(prometheusPort)"
        let ready = server.wait(for: 30) { ((try? Loopback.http(base + "/-/ready").status) ?? 0) == 200 }
        try #require(ready, "Prometheus not ready: \(server.stderr)")

        let engine = try BackgroundProcess(SwitchyardBinary.path, [
            "run", "--config", config, "--duration", "8", "--stats-json", directory.file("stats.json"),
        ])
        defer { engine.stop() }
        let serving = engine.wait(for: 15) { engine.stderr.contains("metrics: Prometheus endpoint at http://127.0.0.1:\(enginePort)/metrics") }
        try #require(serving, "engine: \(engine.stderr)")

        // Prometheus scrapes every second: wait for samples of both stages with packets in them.
        let query = base + "/api/v1/query?query=switchyard_stage_packets_total"
        var read: [(labels: [String: String], value: Double)] = []
        engine.wait(for: 6) {
            read = Self.queryValues((try? Loopback.http(query).body) ?? "")
            return read.filter { $0.labels["disposition"] == "out" && $0.value > 0 }.count == 2
        }
        let out = Dictionary(read.filter { $0.labels["disposition"] == "out" }.map { ($0.labels["stage"] ?? "", $0.value) },
                             uniquingKeysWith: +)
        #expect((out["count"] ?? 0) > 0, "Prometheus read: \(read)")
        #expect((out["swap"] ?? 0) > 0, "Prometheus read: \(read)")
        #expect(read.allSatisfy { $0.labels["job"] == "switchyard" && $0.labels["lcore"] == "1" }, "\(read)")
        let drops = read.filter { $0.labels["disposition"] == "drop" }
        #expect(drops.count == 2 && drops.allSatisfy { $0.value == 0 }, "\(read)")

        // Our own scrape of the endpoint passes promtool's checks.
        let scrape = try Loopback.http("http://127.0.0.1:\(enginePort)/metrics")
        #expect(scrape.status == 200)
        let check = try Command.run(Self.promtool, ["check", "metrics"], stdin: scrape.body)
        #expect(check.status == 0, "promtool check metrics: \(check.output)")

        let up = Self.queryValues((try? Loopback.http(base + "/api/v1/query?query=up").body) ?? "")
        #expect(up.contains { $0.labels["job"] == "switchyard" && $0.value == 1 }, "\(up)")

        // The engine's final counters (what it printed) are at least what Prometheus saw earlier.
        #expect(engine.finish(within: 15) == 0, "engine: \(engine.stderr)")
        let final = try CounterSnapshot(path: directory.file("stats.json"))
        #expect(final.conservationError() == nil, "\(final.conservationError() ?? "")")
        for stage in ["count", "swap"] {
            let printed = final.total("stage \(stage)", "out")
            #expect(Double(printed) >= out[stage] ?? .infinity, "stage \(stage): printed \(printed), Prometheus \(out[stage] ?? -1)")
            let table = engine.stdout.split(separator: "\n").first { $0.hasPrefix("stage \(stage) ") }
            #expect(table?.split(separator: " ").last.map(String.init) == String(final.total("stage \(stage)", "in")),
                    "the printed table: \(engine.stdout)")
        }
    }
}
