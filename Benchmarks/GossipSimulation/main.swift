// gossip-simulation: many real gossip nodes (SwitchyardGossip's GossipNode, each with its own
// connection table) in one process on 127.0.0.1, with loss, delay and a flood injected.
// Benchmarks/GossipSimulation/README.md says what it measures, what it extrapolates, and how.
//
//     gossip-simulation [--hosts 8,16,32,64] [--connections 200] [--lifetime 300] [--seconds 5]
//                       [--loss 0.01] [--delay-ms 1] [--jitter-ms 1] [--flood 10000] [--threads 2]
//                       [--gossip 'key: value']… [--multicast] [--replicate all|exceptions]
//                       [--target-hosts 64] [--target-connections 10000000] [--target-lifetime 300]
//
//     parent ──(one child process per size: --child --hosts H)──► EAL, H nodes, fill, measure, sync
//            ◄── "result k=v …" ─────────────────────────────────┘
//            ──► one line per size (measured), one line for the target (extrapolated)
import CDPDK
import Foundation
import Glibc
import SwitchyardEngine
import SwitchyardGossip

struct Arguments {
    var sizes = [8, 16, 32, 64]
    var options = Simulation.Options()
    var child = false
    var targetHosts = 64
    var targetConnections = 10_000_000
    var targetLifetime = 300.0
    var passThrough: [String] = []

    static let usage = """
        usage: gossip-simulation [--hosts 8,16,32,64] [--connections 200] [--lifetime 300] [--seconds 5]
                                 [--loss 0.01] [--delay-ms 1] [--jitter-ms 1] [--flood 10000] [--threads 2]
                                 [--gossip 'key: value']… [--multicast] [--replicate all|exceptions]
                                 [--target-hosts 64] [--target-connections 10000000]
                                 [--target-lifetime 300]
        """

    init(_ argv: [String]) throws {
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < argv.count else { throw SimError("\(argv[i - 1]) needs a value\n\(Self.usage)") }
            return argv[i]
        }
        func number(_ text: String) throws -> Double {
            guard let v = Double(text), v >= 0 else { throw SimError("not a number ≥ 0: \(text)\n\(Self.usage)") }
            return v
        }
        while i < argv.count {
            let flag = argv[i]
            switch flag {
            case "--child": child = true
            case "--hosts":
                sizes = try value().split(separator: ",").map {
                    guard let h = Int($0), (2...255).contains(h) else { throw SimError("--hosts takes sizes 2…255, comma-separated") }
                    return h
                }
            case "--connections": options.connections = Int(try number(try value()))
            case "--lifetime": options.lifetime = try number(try value())
            case "--seconds": options.seconds = try number(try value())
            case "--loss": options.loss = min(0.9, try number(try value()))
            case "--delay-ms": options.delayMs = try number(try value())
            case "--jitter-ms": options.jitterMs = try number(try value())
            case "--flood": options.flood = Int(try number(try value()))
            case "--threads": options.threads = max(1, Int(try number(try value())))
            case "--gossip": options.gossipExtra.append(try value())
            case "--multicast": options.multicast = true
            case "--replicate":
                options.replicate = try value()
                guard ["all", "exceptions"].contains(options.replicate) else { throw SimError("--replicate takes all or exceptions") }
            case "--target-hosts": targetHosts = Int(try number(try value()))
            case "--target-connections": targetConnections = Int(try number(try value()))
            case "--target-lifetime": targetLifetime = try number(try value())
            case "-h", "--help":
                print(Self.usage)
                exit(0)
            default: throw SimError("unknown option \(flag)\n\(Self.usage)")
            }
            if flag == "--multicast" {
                passThrough.append(flag)
            } else if !["--child", "--hosts"].contains(flag) {
                passThrough += [flag, argv[i]]
            }
            i += 1
        }
        guard options.connections >= 1, options.lifetime > 0, options.seconds > 0 else {
            throw SimError("--connections, --lifetime and --seconds must be positive")
        }
    }
}

/// The child: one size in this process.
func runChild(_ arguments: Arguments) throws {
    var options = arguments.options
    options.hosts = arguments.sizes[0]
    if options.multicast {
        // This child runs in a network namespace of its own (`unshare --net`, see runSize): its
        // loopback needs to be up and to carry multicast.
        // system(3), not Foundation's Process: Process needs a loopback socket, and lo is down here.
        let command = "ip link set lo up && ip link set lo multicast on"
        guard system(command) == 0 else { throw SimError("`\(command)` failed") }
    }
    // EAL memory: every table (rte_hash rounds its slots up to a power of two) and some room.
    let capacity = max(1024, options.hosts * options.connections * 5 / 4)
    var slots = 1
    while slots < capacity { slots <<= 1 }
    let megabytes = 256 + options.hosts * (4 + slots * 160 / 1_000_000) // about 2 MB of fixed cost per rte_hash
    try EAL.initialize(["gossip-simulation", "--no-huge", "-m", "\(megabytes)", "--no-shconf",
                        "--file-prefix=sygossipsim-\(getpid())", "--no-pci", "--lcores=0@0", "--log-level=error",
                        "--no-telemetry"])
    defer { EAL.cleanup() }
    let fields = try Simulation(options).run()
    print("result " + fields.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
    fflush(stdout)
}

/// Runs one size as a child process; its lines are passed through, its result line returned.
func runSize(_ hosts: Int, _ arguments: Arguments) -> [String: Double]? {
    let process = Process()
    let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
    let childArguments = ["--child", "--hosts", "\(hosts)"] + arguments.passThrough
    if arguments.options.multicast {
        // Multicast on loopback: in a network namespace of the child's own (root), so this
        // machine's `lo` is left as it is.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["--net", "--", executable] + childArguments
    } else {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = childArguments
    }
    let pipe = Pipe()
    process.standardOutput = pipe
    do { try process.run() } catch {
        print("  [\(hosts) hosts] cannot start: \(error)")
        return nil
    }
    var result: [String: Double]?
    var buffer = Data()
    let handle = pipe.fileHandleForReading
    while true {
        let chunk = handle.availableData
        if chunk.isEmpty { break }
        buffer += chunk
        while let newline = buffer.firstIndex(of: 10) {
            let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
            buffer = Data(buffer[(newline + 1)...])
            if line.hasPrefix("result ") {
                var fields: [String: Double] = [:]
                for pair in line.dropFirst(7).split(separator: " ") {
                    let kv = pair.split(separator: "=")
                    if kv.count == 2, let v = Double(kv[1]) { fields[String(kv[0])] = v }
                }
                result = fields
            } else {
                print(line)
                fflush(stdout)
            }
        }
    }
    process.waitUntilExit()
    if process.terminationStatus != 0 { print("  [\(hosts) hosts] the child exited with status \(process.terminationStatus)") }
    return result
}

func line(hosts: Int, connections: Int, mbps: Double, p99: Double, sync: Double, memoryMB: Double) -> String {
    String(format: "hosts=%d connections_per_host=%d gossip_mbps_per_host=%.3f link_share_10g=%.4f%% propagation_p99_ms=%.1f sync_s=%.2f memory_mb_per_host=%.1f",
           hosts, connections, mbps, mbps / 10_000 * 100, p99, sync, memoryMB)
}

do {
    let arguments = try Arguments(Array(CommandLine.arguments.dropFirst()))
    if arguments.child {
        try runChild(arguments)
        exit(0)
    }
    let o = arguments.options
    print("gossip simulation: sizes \(arguments.sizes.map(String.init).joined(separator: ", ")) hosts, \(o.connections) connections per host, "
        + "\(o.lifetime) s lifetime, \(o.seconds) s measured; loss \(o.loss), delay \(o.delayMs) ms + jitter \(o.jitterMs) ms, flood \(o.flood)/s, \(o.threads) polling thread(s)")
    var results: [(Int, [String: Double])] = []
    for hosts in arguments.sizes {
        if let r = runSize(hosts, arguments) { results.append((hosts, r)) }
    }
    guard let largest = results.last else {
        print("no size completed")
        exit(1)
    }

    // Extrapolation to the target from the largest size measured here: the wire model (checked
    // against every measurement above) at the engine's 100 polls/s, the sync rate and the
    // memory per table slot and per entry measured here. Unicast (the default) and the design
    // where every host holds every host's flows (what the code does today).
    let t = largest.1
    let events = 2 * Double(arguments.targetConnections) / arguments.targetLifetime
    let heartbeat = 200, digest = 1000
    let unicast = GossipModel(hosts: arguments.targetHosts, eventsPerSecond: events, pollsPerSecond: 100,
                              heartbeatMs: heartbeat, digestMs: digest, multicast: false)
    let multicast = GossipModel(hosts: arguments.targetHosts, eventsPerSecond: events, pollsPerSecond: 100,
                                heartbeatMs: heartbeat, digestMs: digest, multicast: true)
    let entries = Double(arguments.targetHosts) * Double(arguments.targetConnections)
    // Sync: a (re)starting host gets every peer's whole table, so H - 1 copies of H x C records,
    // at the rate measured in the largest run.
    let syncRate = (t["sync_s"] ?? -1) > 0 ? (t["sync_records"] ?? 0) / t["sync_s"]! : 0
    let syncRecords = Double(arguments.targetHosts - 1) * entries
    let targetSync = syncRate > 0 ? syncRecords / syncRate : -1
    // Memory: per host = its table, a straight line in the capacity fitted over the sizes run
    // (a fixed part, mostly rte_hash's per-lcore caches, plus bytes per slot; the tables are
    // sized for 1.25 × H × C), plus the owned set: 24 B per own flow (Set<UInt64>).
    let points = results.map { (x: $0.1["capacity"] ?? 0, y: $0.1["table_bytes"] ?? 0) }
    let mx = points.reduce(0) { $0 + $1.x } / Double(points.count), my = points.reduce(0) { $0 + $1.y } / Double(points.count)
    let sxx = points.reduce(0) { $0 + ($1.x - mx) * ($1.x - mx) }
    var slotBytes = sxx > 0 ? points.reduce(0) { $0 + ($1.x - mx) * ($1.y - my) } / sxx : my / max(mx, 1)
    var fixedBytes = sxx > 0 ? my - slotBytes * mx : 0
    if slotBytes <= 0 || fixedBytes < 0 { slotBytes = my / max(mx, 1); fixedBytes = 0 }
    let targetMemory = (fixedBytes + entries * 1.25 * slotBytes + 24 * Double(arguments.targetConnections) + Double(ReceiveBatchSize.bytes)) / 1e6
    print("")
    print("model check (bytes/s per host of heartbeats, digests and flow batches: counted / wire model at the measured rates; all gossip sent):")
    for (hosts, r) in results {
        print(String(format: "  %3d hosts: %.0f / %.0f (%.0f%%), %.1f events/s per host, %.0f polls/s; all sent %.0f", hosts, r["explained_bps"] ?? 0,
                     r["model_sent_bps"] ?? 0, 100 * (r["explained_bps"] ?? 0) / max(r["model_sent_bps"] ?? 1, 1), r["events_per_s"] ?? 0,
                     r["polls_per_s"] ?? 0, r["sent_bps"] ?? 0))
    }
    print(String(format: "extrapolated to %d hosts × %d connections, %.0f s lifetime (%.0f events/s per host, 100 polls/s)%@:",
                 arguments.targetHosts, arguments.targetConnections, arguments.targetLifetime, events,
                 o.exceptions ? ", for comparison with replicate: all" : ""))
    print(String(format: "  unicast (default): sent %.1f Mbit/s, received %.1f Mbit/s per host; multicast: sent %.1f, received %.1f Mbit/s",
                 unicast.sentBytesPerSecond * 8 / 1e6, unicast.receivedBytesPerSecond * 8 / 1e6,
                 multicast.sentBytesPerSecond * 8 / 1e6, multicast.receivedBytesPerSecond * 8 / 1e6))
    print(String(format: "  every host holds every host's flows: %.0f entries (connections.capacity allows %d)", entries, 1 << 28))
    print(String(format: "  memory per host: its table, %.0f B fixed + %.1f B per slot (fitted over the sizes above; capacity 1.25 × entries), + 24 B per own flow",
                 fixedBytes, slotBytes))
    print(String(format: "  sync: %.3g records (%d peers × their whole tables) at %.0f records/s (measured at %d hosts)",
                 syncRecords, arguments.targetHosts - 1, syncRate, largest.0))
    print("  propagation p99 is the one measured at \(largest.0) hosts (not extrapolated: a lower bound)")
    var last = line(hosts: arguments.targetHosts, connections: arguments.targetConnections,
                    mbps: o.multicast ? multicast.mbps : unicast.mbps, p99: t["p99_ms"] ?? 0,
                    sync: targetSync, memoryMB: targetMemory)
    var design = "every host holds every host's flows"
    if o.exceptions {
        let x = Exceptions(arguments: arguments, results: results, fixedBytes: sxx > 0 ? fixedBytes : nil,
                           slotBytes: sxx > 0 ? slotBytes : nil)
        x.report()
        last = line(hosts: arguments.targetHosts, connections: arguments.targetConnections, mbps: x.mbps, p99: x.p99Ms,
                    sync: x.syncSeconds, memoryMB: x.memoryBytes / 1e6)
        design = "replicate: exceptions, one table change per connection lifetime"
    }
    print("")
    print("lines 1-\(results.count): measured here (connections_per_host as simulated); last line: extrapolated (\(o.multicast ? "multicast" : "unicast"), \(design))")
    for (hosts, r) in results {
        let mbps = max(r["sent_bps"] ?? 0, r["received_bps"] ?? 0) * 8 / 1e6
        print(line(hosts: hosts, connections: Int(r["connections"] ?? 0), mbps: mbps, p99: r["p99_ms"] ?? 0,
                   sync: r["sync_s"] ?? -1, memoryMB: (r["memory_bytes"] ?? 0) / 1e6))
    }
    print(last)
} catch {
    FileHandle.standardError.write("gossip-simulation: \(error)\n".data(using: .utf8)!)
    exit(2)
}
