import CDPDK
import Crypto
import Foundation
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore

/// The control socket's commands (`switchyard ctl`), answered on the control thread.
///
///     status        uptime, configuration (file, SHA-256), lcores, ports with link, gossip peers
///     stats         every counter block with its rate over the last second; per-lcore busy share
///                   and cycles per packet
///     ports         each NIC's basic stats and xstats (imissed, rx_nombuf, oerrors, per queue)
///     connections   the connection table: client, VIP, owner, backend, state, idle
///     reload        re-read the configuration (or another file) and apply what can change live
///     preview       what a reload of a file would move (Engine+Preview.swift)
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

    /// One tick of control-side work: NIC and gossip counters (every 100 ms), rates (every second),
    /// then the control socket.
    func serveControl(now: Date) {
        // NIC and gossip values are fresh when the rates are taken.
        if now.timeIntervalSince(lastCounterRefresh) >= 0.1 || rates.isDue(now) {
            controlCounters?.refresh()
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
            controlCounters?.refresh()
            return statsAnswer()
        }
        control.register("ports", summary: "NIC statistics and xstats per port") { [unowned self] _ in
            controlCounters?.refresh()
            return portsAnswer()
        }
        control.register("reload", summary: "re-read the configuration (args: file) and apply what can change live") {
            [unowned self] args in
            let file: String
            switch args["file"] {
            case nil, is NSNull: file = configuration.file
            case let given as String where given.hasPrefix("/"): file = given
            default: throw ControlError("file must be an absolute path")
            }
            return ["applied": true, "file": file, "changes": try reload(file: file)]
        }
        control.register("connections", summary: "the connection table (args: service, owner, limit)") { [unowned self] args in
            try connectionsAnswer(args)
        }
        registerPreviewCommand()
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
                "mac": MACAddress(port.mac).description,
                "rx_queues": settings?.rxQueues ?? 0, "tx_queues": settings?.txQueues ?? 0,
            ]
            if let link = ControlCounters.link(port: port.portID) {
                entry["link"] = ["up": link.up, "speed_mbps": Int(link.speedMbps), "full_duplex": link.fullDuplex]
            }
            return entry
        }
        if let gossip {
            let snapshot = gossip.counters()
            answer["gossip"] = [
                "host": snapshot.hostID, "synchronised": snapshot.synchronised, "owned_flows": snapshot.ownedFlows,
                "remote_flows": snapshot.remoteFlows,
                "peers": snapshot.peers.map { peer -> [String: Any] in
                    ["host": peer.hostID, "endpoint": peer.endpoint, "state": peer.alive ? "up" : "down",
                     "synchronised": peer.synchronised, "silence_ms": peer.silenceMs ?? -1, "flows": peer.flows]
                },
            ] as [String: Any]
        }
        if let cluster {
            answer["cluster"] = ["host": cluster.configuration.localHostID,
                                 "services": cluster.configuration.services.map(\.name),
                                 "connections": cluster.connections.count, "departing": cluster.configuration.departingHosts,
                                 "capacity": cluster.connections.positions]
        }
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

    private func connectionsAnswer(_ args: [String: Any]) throws -> [String: Any] {
        guard let cluster else { throw ControlError("this engine has no `cluster:` section, so no connection table") }
        let limit = try Self.intArgument(args, "limit", default: 100, in: 0...1_000_000)
        let owner = try args["owner"].map { _ in try Self.intArgument(args, "owner", default: 0, in: 1...4095) }
        var service: ServiceSettings?
        if let name = args["service"] {
            guard let name = name as? String else { throw ControlError("service must be a service name") }
            guard let found = cluster.configuration.services.first(where: { $0.name == name }) else {
                throw ControlError("no service '\(name)' (services: \(cluster.configuration.services.map(\.name).joined(separator: ", ")))")
            }
            service = found
        }
        let table = cluster.connections
        let hz = Double(sy_tsc_hz())
        let now = sy_rdtsc()
        var rows: [[String: Any]] = []
        var matched = 0
        var key = sy_flow_key()
        for position in 0..<table.positions {
            let entry = table.entries + position
            let control = sy_atomic_load_u64(&entry.pointee.control)
            guard FlowEntry.isValid(control) else { continue }
            let ownerHost = Int(FlowEntry.owner(control))
            if let owner, owner != ownerHost { continue }
            guard sy_flow_table_key_at(table.hash, Int32(position), &key) == 0 else { continue }
            let family = key.family
            let client = withUnsafeBytes(of: key.src) { IPAddress(family: family, at: $0.baseAddress!) }
            let vip = withUnsafeBytes(of: key.dst) { IPAddress(family: family, at: $0.baseAddress!) }
            let vipPort = UInt16(bigEndian: key.dst_port)
            if let service, service.vip != vip || service.port != vipPort || service.transport.number != key.protocol {
                continue
            }
            matched += 1
            guard rows.count < limit else { continue }
            let backend = IPAddress(family: FlowEntry.family(control) == 0 ? family : FlowEntry.family(control),
                                    high: entry.pointee.backendHigh, low: entry.pointee.backendLow)
            let seen = sy_relaxed_load_u64(&entry.pointee.lastSeen)
            let serviceName = cluster.configuration.services.first {
                $0.vip == vip && $0.port == vipPort && $0.transport.number == key.protocol
            }?.name
            rows.append([
                "client": Self.endpoint(client, UInt16(bigEndian: key.src_port)),
                "vip": Self.endpoint(vip, vipPort),
                "protocol": key.protocol == 6 ? "tcp" : key.protocol == 17 ? "udp" : String(key.protocol),
                "service": serviceName ?? "-",
                "owner": ownerHost,
                "backend": Self.endpoint(backend, UInt16(bigEndian: FlowEntry.backendPort(control))),
                "state": Self.stateName(FlowEntry.state(control)),
                "idle_s": now > seen && hz > 0 ? Double(now - seen) / hz : 0,
            ])
        }
        return ["connections": rows, "matched": matched, "table_entries": table.count, "capacity": table.positions]
    }

    private static func endpoint(_ address: IPAddress, _ port: UInt16) -> String {
        address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }

    private static func stateName(_ state: UInt8) -> String {
        switch FlowState(rawValue: state) {
        case .embryonic: "syn"
        case .established: "established"
        case .closing: "closing"
        case .remote: "remote"
        case .datagram: "datagram"
        case nil: "unknown"
        }
    }

    /// An integer argument in range, or a `ControlError` naming it.
    static func intArgument(_ args: [String: Any], _ name: String, default fallback: Int, in range: ClosedRange<Int>) throws -> Int {
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
