import CDPDK
import Crypto
import Foundation
import SwitchyardConfig
import SwitchyardCore

/// The control socket's commands (`switchyard ctl`), answered on the control thread.
///
///     status        uptime, configuration (file, SHA-256), lcores, ports with link, gossip peers
///     stats         every counter block with its rate over the last second; per-lcore busy share
///                   and cycles per packet
///     ports         each NIC's basic stats and xstats (imissed, rx_nombuf, oerrors, per queue)
///     reload        re-read the configuration (or another file) and apply what can change live
///     (plug-ins)    their own commands (the cluster: connections, preview, listen, bgp, ...;
///                   SwitchyardClusterPlugin/ClusterPlugin+Control.swift)
///
/// Rates come from `RateWindow`: once a second the control thread snapshots every block and keeps
/// the difference to the previous snapshot.
extension Engine {
    /// Registers the commands and opens the socket. A socket that cannot be opened is logged and
    /// the engine runs without one (`ctl` then says no engine answers there).
    func startControl(socketOverride: String?) {
        registerControlCommands()
        guard configuration.control.enabled || socketOverride != nil else {
            log("control socket: off (control.socket: none)")
            return
        }
        let path = socketOverride ?? configuration.control.socket ?? ControlSettings.defaultSocket(name: configuration.name)
        do {
            try control.open(path: path)
            log("control socket: \(path) (switchyard ctl --socket \(path) status)")
        } catch {
            log("control socket: not served: \(error)")
        }
    }

    /// One tick of control-side work: NIC and plug-in counters (every 100 ms), rates (every second),
    /// then the control socket.
    func serveControl(now: Date) {
        // NIC and plug-in values are fresh when the rates are taken.
        if now.timeIntervalSince(lastCounterRefresh) >= 0.1 || rates.isDue(now) {
            refreshCounters()
            lastCounterRefresh = now
        }
        rates.advance(registry: counters, now: now)
        control.poll(now: now)
    }

    private func registerControlCommands() {
        control.register("status", summary: "uptime, configuration, lcores, ports and link, gossip peers") { [unowned self] _ in
            statusAnswer()
        }
        control.register("stats", summary: "every counter with its rate over the last second; lcore busy share") { [unowned self] _ in
            refreshCounters()
            return statsAnswer()
        }
        control.register("ports", summary: "NIC statistics and xstats per port") { [unowned self] _ in
            refreshCounters()
            return portsAnswer()
        }
        control.register("reload", summary: "re-read the configuration (args: file) and apply what can change live") {
            [unowned self] args in
            let file = try fileArgument(args)
            return ["applied": true, "file": file, "changes": try reload(file: file)]
        }
    }

    /// Loads `file`, validates it strictly and applies it (SIGHUP and `ctl reload`). Throws a
    /// `ControlError` with every configuration error, or with what a reload may not change.
    func reload(file: String) throws -> [String] {
        guard let load = configurationLoader else { throw ControlError("this engine was started without a configuration loader") }
        let new: EngineConfiguration
        do {
            new = try load(file)
        } catch let errors as ConfigErrors {
            throw ControlError("invalid configuration, nothing changed:\n\(errors.description)")
        } catch {
            throw ControlError("cannot load \(file): \(error)")
        }
        return try applyReload(new)
    }

    private func statusAnswer() -> [String: Any] {
        var answer: [String: Any] = [
            "name": configuration.name, "pid": Int(getpid()), "uptime_s": Date().timeIntervalSince(startedAt),
            "dpdk": String(cString: sy_version()).replacingOccurrences(of: "DPDK ", with: ""), "memory": memoryNote, "tsc_hz": sy_tsc_hz(),
        ]
        let text = (try? Data(contentsOf: URL(fileURLWithPath: configuration.file))) ?? Data()
        answer["config"] = ["file": configuration.file,
                            "sha256": SHA256.hash(data: text).map { String(format: "%02x", $0) }.joined()]
        answer["lcores"] = runtimes.map { runtime -> [String: Any] in
            let settings = configuration.lcores.first { $0.id == runtime.id }
            return ["id": runtime.id, "cpu": settings?.cpu ?? -1, "stages": runtime.graph.stageNames,
                    "polls": settings?.poll.map { "\($0.source) -> \($0.to)" } ?? [],
                    "running": !runtime.status.exited] as [String: Any]
        }
        answer["ports"] = resources.portDescriptions.map { port -> [String: Any] in
            let settings = configuration.port(named: port.name)
            var entry: [String: Any] = [
                "name": port.name, "port_id": Int(port.portID), "device": settings?.device ?? "",
                "mac": withUnsafeBytes(of: port.mac) { $0.map { String(format: "%02x", $0) }.joined(separator: ":") },
                "rx_queues": settings?.rxQueues ?? 0, "tx_queues": settings?.txQueues ?? 0,
            ]
            if let link = ControlCounters.link(port: port.portID) {
                entry["link"] = ["up": link.up, "speed_mbps": Int(link.speedMbps), "full_duplex": link.fullDuplex]
            }
            return entry
        }
        for plugin in plugins { plugin.status(into: &answer) }
        if let path = control.path { answer["control_socket"] = path }
        return answer
    }

    private func statsAnswer() -> [String: Any] {
        let hz = Double(sy_tsc_hz())
        var blocks = counters.jsonObjects()
        let all = counters.allBlocks
        for index in blocks.indices where index < all.count {
            guard let perSecond = rates.rates[ObjectIdentifier(all[index])] else { continue }
            var named: [String: Double] = [:]
            for (counter, rate) in zip(all[index].counters, perSecond) where counter.kind == .counter {
                named[counter.name] = rate
            }
            blocks[index]["rates"] = named
        }
        let lcores = all.filter { $0.kind == "lcore" }.map { block -> [String: Any] in
            let r = rates.rates[ObjectIdentifier(block)] ?? [0, 0, 0, 0]
            let busyShare = r[0] > 0 ? r[1] / r[0] : 0
            let cyclesPerPacket = r[2] > 0 ? r[3] / r[2] : 0
            return ["lcore": block.lcore, "busy_share": busyShare, "packets_per_second": r[2],
                    "cycles_per_packet": cyclesPerPacket, "busy_cycles_share": hz > 0 ? r[3] / hz : 0]
        }
        return ["uptime_s": Date().timeIntervalSince(startedAt), "rate_interval_s": rates.interval,
                "blocks": blocks, "lcores": lcores]
    }

    private func portsAnswer() -> [[String: Any]] {
        let blocks = counters.allBlocks.filter { $0.kind == "port" }
        return resources.portDescriptions.map { port -> [String: Any] in
            var entry: [String: Any] = ["name": port.name, "port_id": Int(port.portID)]
            if let block = blocks.first(where: { $0.scope == "port \(port.name)" }) {
                var basic: [String: UInt64] = [:], xstats: [String: UInt64] = [:]
                let rate = rates.rates[ObjectIdentifier(block)]
                var perSecond: [String: Double] = [:]
                for (index, counter) in block.counters.enumerated() {
                    if counter.name.hasPrefix("xstat ") {
                        xstats[String(counter.name.dropFirst("xstat ".count))] = block.value(index)
                    } else {
                        basic[counter.name] = block.value(index)
                        if let rate, index < rate.count { perSecond[counter.name] = rate[index] }
                    }
                }
                entry["stats"] = basic
                entry["rates"] = perSecond
                entry["xstats"] = xstats
            }
            if let link = ControlCounters.link(port: port.portID) {
                entry["link"] = ["up": link.up, "speed_mbps": Int(link.speedMbps), "full_duplex": link.fullDuplex]
            }
            return entry
        }
    }

    /// An integer argument in range, or a `ControlError` naming it.
    public static func intArgument(_ args: [String: Any], _ name: String, default fallback: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let value = args[name] else { return fallback }
        let number: Int?
        switch value {
        case let n as Int: number = n
        case let s as String: number = Int(s)
        case let d as Double where d == d.rounded(): number = Int(d)
        default: number = nil
        }
        guard let number, range.contains(number) else {
            throw ControlError("\(name) must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }
}

/// Per-second rates of every counter block: the difference between the last two snapshots,
/// taken at least a second apart by the control thread.
struct RateWindow {
    private var previous: (time: Date, values: [ObjectIdentifier: [UInt64]])?
    private(set) var rates: [ObjectIdentifier: [Double]] = [:]
    private(set) var interval: Double = 0

    func isDue(_ now: Date) -> Bool { previous.map { now.timeIntervalSince($0.time) >= 1 } ?? true }

    mutating func advance(registry: CounterRegistry, now: Date) {
        guard isDue(now) else { return }
        var values: [ObjectIdentifier: [UInt64]] = [:]
        for block in registry.allBlocks {
            values[ObjectIdentifier(block)] = (0..<block.counters.count).map(block.value)
        }
        if let previous {
            let span = now.timeIntervalSince(previous.time)
            var rates: [ObjectIdentifier: [Double]] = [:]
            for (id, current) in values {
                guard let before = previous.values[id], before.count == current.count else { continue }
                rates[id] = zip(current, before).map { $0 >= $1 ? Double($0 - $1) / span : 0 }
            }
            self.rates = rates
            interval = span
        }
        previous = (now, values)
    }
}

extension Engine {
    /// The `file` argument of a control command (`reload`, a plug-in's `preview`): an absolute
    /// path, or the running configuration's file when it is absent.
    public func fileArgument(_ args: [String: Any]) throws -> String {
        switch args["file"] {
        case nil, is NSNull: return configuration.file
        case let given as String where given.hasPrefix("/"): return given
        default: throw ControlError("file must be an absolute path")
        }
    }
}
