import ArgumentParser
import Foundation
import SwitchyardConfig
import SwitchyardCore
import SwitchyardClusterPlugin
import SwitchyardEngine
import SwitchyardMetrics
import SwitchyardPcap
import SwitchyardStages

@main
struct Switchyard: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "A kernel-bypass packet engine on DPDK: one IP image for a cluster of hosts.",
        subcommands: [Run.self, Ctl.self, Validate.self, Stages.self, Example.self, Generate.self],
        defaultSubcommand: Run.self)
}

func log(_ line: String) {
    FileHandle.standardError.write(Data("switchyard: \(line)\n".utf8))
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the engine (without --config: two hosts of one cluster on virtual devices for 5 s, then a summary).")

    @Option(help: "The stage configuration file (YAML).")
    var config: String?

    @Option(help: "Stop after this many seconds (default: until SIGINT/SIGTERM; without --config 5, and 0 means until SIGINT/SIGTERM; 3 for --example mac-swap).")
    var duration: Double?

    @Option(help: "Print the counter table every this many seconds.")
    var statsInterval: Double?

    @Option(help: "Also write the final counters as JSON to this file.")
    var statsJson: String?

    @Option(help: "Hot reload: after --reload-after seconds, swap every lcore's stage graph for this configuration's (same ports, rings and lcores), without stopping the lcores.")
    var reloadConfig: String?

    @Option(help: "Serve the control socket (`switchyard ctl`) at this path instead of the configuration's (default /run/switchyard/NAME.sock).")
    var controlSocket: String?

    @Option(help: "Seconds before --reload-config is applied.")
    var reloadAfter: Double = 1

    @Option(help: "Also report the rate after this many seconds of warmup (steady state), with cycles per packet.")
    var warmup: Double?

    @Option(help: "Serve Prometheus metrics at http://ADDR:PORT/metrics (IPv6: [ADDR]:PORT); overrides `metrics.listen` of the file.")
    var metricsListen: String?

    @Argument(parsing: .postTerminator, help: "EAL arguments after `--`, appended last (they override the file).")
    var ealArguments: [String] = []

    @Option(help: "Without --config: the embedded example to run, single-ip-image (the default: two hosts of one cluster) or mac-swap.")
    var example: ExampleName?

    @Flag(help: "Shut down gracefully when the parent process exits (the two-host example starts its hosts with it).")
    var exitWithParent = false

    func validate() throws {
        if config != nil && example != nil { throw ValidationError("give either --config or --example, not both") }
        if config == nil && example != .macSwap {
            let options = [("--stats-interval", statsInterval != nil), ("--stats-json", statsJson != nil),
                           ("--reload-config", reloadConfig != nil), ("--control-socket", controlSocket != nil),
                           ("--warmup", warmup != nil), ("--exit-with-parent", exitWithParent),
                           ("--metrics-listen", metricsListen != nil)]
            if let (name, _) = options.first(where: \.1) {
                throw ValidationError("\(name) needs --config (the two-host example prints its own summary)")
            }
        }
        if let duration, duration < 0 { throw ValidationError("--duration must not be negative") }
    }

    func run() throws {
        if config == nil && example != .macSwap {
            // The two-host example: 0 means until SIGINT/SIGTERM, as the README says.
            let seconds = duration ?? 5
            let status = try TwoHostRun(duration: seconds == 0 ? nil : seconds, ealArguments: ealArguments).run()
            if status != 0 { throw ExitCode(status) }
            return
        }
        if exitWithParent { Self.stopWithParent() }
        var path = config
        var duration = self.duration
        var exampleDirectory: String?
        defer { if let exampleDirectory { try? FileManager.default.removeItem(atPath: exampleDirectory) } }
        if path == nil {
            exampleDirectory = try TwoHostRun.makeTemporaryDirectory()
            path = try MacSwapExample.materialise(in: exampleDirectory!)
            duration = duration == 0 ? nil : duration ?? 3 // as for the two-host example: 0 runs until a signal
            log("--example mac-swap: running the mac-swap example (\(path!))")
        }
        let configuration: EngineConfiguration
        do {
            configuration = try EngineConfiguration.load(path: path!, stages: builtinStages, plugins: standardPlugins)
        } catch let errors as ConfigErrors {
            log("invalid configuration:\n\(errors.description)")
            throw ExitCode(1)
        }
        for warning in configuration.cluster?.warnings ?? [] { log(warning) }
        var reload: (after: Double, configuration: EngineConfiguration)?
        if let reloadConfig {
            do {
                reload = (reloadAfter, try EngineConfiguration.load(path: reloadConfig, stages: builtinStages, plugins: standardPlugins))
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
                                           reload: reload, warmup: warmup, controlSocket: controlSocket,
                                           loadConfiguration: { try EngineConfiguration.load(path: $0, stages: builtinStages, plugins: standardPlugins) },
                                           services: services))
        } catch {
            log("error: \(error)")
            EAL.cleanup()
            throw ExitCode(2)
        }
        print("counters after \(String(format: "%.2f", summary.seconds)) s:")
        print(engine.counters.table())
        for report in summary.reports { print(report) }
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

extension Run {
    /// Asks for a graceful shutdown when the parent process goes away (this process is re-parented).
    static func stopWithParent() {
        let parent = getppid()
        Thread.detachNewThread {
            while getppid() == parent { usleep(200_000) }
            ShutdownSignal.request()
        }
    }
}

/// The embedded examples, by name.
enum ExampleName: String, ExpressibleByArgument, CaseIterable {
    case singleIPImage = "single-ip-image"
    case macSwap = "mac-swap"
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check configuration files; exit 0 when all are valid, 1 with every error otherwise.")

    @Argument(help: "Configuration files.")
    var files: [String]

    @Option(help: "A running engine's control socket: also preview what a reload of the (one) file would move there (`ctl preview`).")
    var against: String?

    @Flag(help: "With --against: print the engine's JSON answer.")
    var json = false

    func validate() throws {
        if against != nil && files.count != 1 { throw ValidationError("--against takes exactly one file") }
    }

    func run() throws {
        var failed = false
        for file in files {
            do {
                let config = try EngineConfiguration.load(path: file, stages: builtinStages, plugins: standardPlugins)
                for warning in config.cluster?.warnings ?? [] { print(warning) }
                print("\(file): valid (\(config.ports.count) ports, \(config.stages.count) stages, \(config.lcores.count) lcores, \(config.rings.count) rings)")
            } catch let errors as ConfigErrors {
                print(errors.description)
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
        if let against { try CtlPreview.againstEngine(socket: against, file: files[0], json: json) }
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
    static let configuration = CommandConfiguration(
        abstract: "Print an embedded example configuration: single-ip-image (a host of the two-host example) or mac-swap.")

    @Argument(help: "single-ip-image (the default) or mac-swap.")
    var name: ExampleName = .singleIPImage

    @Option(help: "single-ip-image: which host's configuration, 1 or 2.")
    var host: Int = 1

    func validate() throws {
        guard SingleIPImageExample.hostIDs.contains(host) else { throw ValidationError("--host must be 1 or 2") }
    }

    func run() {
        switch name {
        case .singleIPImage:
            let example = SingleIPImageExample(directory: "", gossipPorts: [:], metricsPorts: [:], cpuCount: 2)
            print(example.configuration(host: host), terminator: "")
        case .macSwap:
            print(MacSwapExample.text(capture: "example.pcap", cpu: 1), terminator: "")
        }
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
