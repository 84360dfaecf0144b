import ArgumentParser
import Foundation
import SwitchyardConfig
import SwitchyardCore
import SwitchyardEngine
import SwitchyardMetrics
import SwitchyardPcap
import SwitchyardStages

@main
struct Switchyard: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "A kernel-bypass packet engine on DPDK: one IP image for a cluster of hosts.",
        subcommands: [Run.self, Validate.self, Stages.self, Example.self, Generate.self],
        defaultSubcommand: Run.self)
}

func log(_ line: String) {
    FileHandle.standardError.write(Data("switchyard: \(line)\n".utf8))
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the engine (without --config: the embedded example on virtual devices for 3 s).")

    @Option(help: "The stage configuration file (YAML).")
    var config: String?

    @Option(help: "Stop after this many seconds (default: until SIGINT/SIGTERM; 3 for the example).")
    var duration: Double?

    @Option(help: "Print the counter table every this many seconds.")
    var statsInterval: Double?

    @Option(help: "Also write the final counters as JSON to this file.")
    var statsJson: String?

    @Option(help: "Hot reload: after --reload-after seconds, swap every lcore's stage graph for this configuration's (same ports, rings and lcores), without stopping the lcores.")
    var reloadConfig: String?

    @Option(help: "Seconds before --reload-config is applied.")
    var reloadAfter: Double = 1

    @Option(help: "Also report the rate after this many seconds of warmup (steady state), with cycles per packet.")
    var warmup: Double?

    @Option(help: "Serve Prometheus metrics at http://ADDR:PORT/metrics (IPv6: [ADDR]:PORT); overrides `metrics.listen` of the file.")
    var metricsListen: String?

    @Argument(parsing: .postTerminator, help: "EAL arguments after `--`, appended last (they override the file).")
    var ealArguments: [String] = []

    func run() throws {
        var path = config
        var duration = self.duration
        if path == nil {
            path = try ExampleConfiguration.materialise()
            duration = duration ?? 3
            log("no --config: running the embedded example (\(path!))")
        }
        let exampleDirectory = config == nil ? (path! as NSString).deletingLastPathComponent : nil
        defer { if let exampleDirectory { try? FileManager.default.removeItem(atPath: exampleDirectory) } }
        let configuration: EngineConfiguration
        do {
            configuration = try EngineConfiguration.load(path: path!, stages: builtinStages)
        } catch let errors as ConfigErrors {
            log("invalid configuration:\n\(errors.description)")
            throw ExitCode(1)
        }
        var reload: (after: Double, configuration: EngineConfiguration)?
        if let reloadConfig {
            do {
                reload = (reloadAfter, try EngineConfiguration.load(path: reloadConfig, stages: builtinStages))
            } catch let errors as ConfigErrors {
                log("invalid reload configuration:\n\(errors.description)")
                throw ExitCode(1)
            }
        }
        var services: [any EngineService] = []
        if let metricsListen {
            guard let listen = MetricsSettings.parse(listen: metricsListen) else {
                log("invalid --metrics-listen '\(metricsListen)': must be ADDRESS:PORT (IPv6: [ADDRESS]:PORT), port 1-65535")
                throw ExitCode(1)
            }
            services.append(MetricsServer(listen: listen, log: log))
        } else if let listen = configuration.metrics {
            services.append(MetricsServer(listen: listen, log: log))
        }
        let engine = Engine(configuration: configuration, log: log)
        let summary: Engine.Summary
        do {
            summary = try engine.run(.init(duration: duration, statsInterval: statsInterval, ealOverrides: ealArguments,
                                           reload: reload, warmup: warmup, services: services))
        } catch {
            log("error: \(error)")
            EAL.cleanup()
            throw ExitCode(2)
        }
        print("counters after \(String(format: "%.2f", summary.seconds)) s:")
        print(engine.counters.table())
        if let gossip = summary.gossip { print("gossip:\n" + gossip) }
        let received = engine.counters.allBlocks.filter { $0.kind == "rx" }.reduce(0) { $0 + $1.value(0) }
        print(String(format: "received %llu packets from ports in %.2f s: %.2f Mpps", received, summary.seconds,
                     Double(received) / max(summary.seconds, 1e-9) / 1e6))
        if let steady = summary.steadyRate {
            let lcores = max(configuration.lcores.count, 1)
            print(String(format: "steady state after %.1f s warmup: %.2f Mpps over %.2f s, %.1f cycles/packet per lcore (%d lcore(s), TSC %.2f GHz)",
                         warmup ?? 0, steady.packetsPerSecond / 1e6, steady.seconds,
                         Double(summary.tscHz) * Double(lcores) / max(steady.packetsPerSecond, 1), lcores,
                         Double(summary.tscHz) / 1e9))
        }
        for pool in summary.mempools {
            print("mempool \(pool.name): \(pool.available) of \(pool.size) mbufs back in the pool")
        }
        var status: Int32 = 0
        if let statsJson {
            do {
                try engine.counters.json().write(toFile: statsJson, atomically: false, encoding: .utf8)
            } catch {
                log("error: cannot write \(statsJson): \(error.localizedDescription)")
                status = 2
            }
        }
        EAL.cleanup()
        if let lcore = summary.failedLcore {
            log("error: lcore \(lcore) stopped unexpectedly")
            status = 2
        }
        if summary.leakedMbufs > 0 {
            log("error: \(summary.leakedMbufs) mbufs were not returned to their pool")
            status = 3
        }
        if status != 0 { throw ExitCode(status) }
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check configuration files; exit 0 when all are valid, 1 with every error otherwise.")

    @Argument(help: "Configuration files.")
    var files: [String]

    func run() throws {
        var failed = false
        for file in files {
            do {
                let config = try EngineConfiguration.load(path: file, stages: builtinStages)
                print("\(file): valid (\(config.ports.count) ports, \(config.stages.count) stages, \(config.lcores.count) lcores, \(config.rings.count) rings)")
            } catch let errors as ConfigErrors {
                print(errors.description)
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
    }
}

struct Stages: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the stage kinds, their dispositions and counters.")

    func run() {
        for stage in builtinStages {
            print("\(stage.kind): \(stage.summary)")
            print("  dispositions: \(stage.dispositions.joined(separator: ", "))")
            if !stage.counters.isEmpty {
                print("  counters: \(stage.counters.map { "\($0.name) (\($0.severity.rawValue))" }.joined(separator: ", "))")
            }
        }
    }
}

struct Example: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the embedded example configuration.")

    func run() {
        print(ExampleConfiguration.text(capture: "example.pcap", cpu: 1), terminator: "")
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a capture of UDP/TCP packets from 198.18.0.0/16 clients to a VIP.")

    @Option(help: "Output pcap file.")
    var output: String

    @Option(help: "Number of packets.")
    var count: Int = 1024

    @Option(help: "Number of distinct flows.")
    var flows: Int = 256

    @Option(help: "Frame length in bytes (without FCS), at least 60.")
    var frameLength: Int = 60

    @Option(help: "The VIP (IPv4) the packets go to: UDP to port 53, TCP to port 80.")
    var vip: String = "198.19.0.1"

    @Option(help: "TCP flags of the TCP packets: syn or ack (packets of established connections).")
    var tcpFlags: String = "syn"

    @Option(help: "Number of the first flow (flows of two captures are disjoint when their ranges are).")
    var firstFlow: Int = 0

    func run() throws {
        guard count > 0, flows > 0, (60...9000).contains(frameLength) else {
            throw ValidationError("count and flows must be positive, frame-length 60...9000")
        }
        let parts = vip.split(separator: ".").compactMap { UInt8($0) }
        guard parts.count == 4 else { throw ValidationError("--vip must be an IPv4 address") }
        guard let flags: UInt8 = ["syn": 0x02, "ack": 0x10][tcpFlags] else {
            throw ValidationError("--tcp-flags must be syn or ack")
        }
        try Pcap.write(PacketBuilder().flowMix(count: count, flows: flows, vip: parts, frameLength: frameLength,
                                               tcpFlags: flags, firstFlow: firstFlow), to: output)
        print("\(output): \(count) packets, \(flows) flows, \(frameLength) bytes")
    }
}
