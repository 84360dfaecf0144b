import Foundation
import SwitchyardConfig
import SwitchyardCore

/// Cross-checks that need the whole file: names that exist, queues polled exactly once,
/// wiring that is acyclic and reachable, rings with one producer side and one consumer.
extension EngineConfiguration {
    func error(line: Int, _ context: String, key: String? = nil, _ message: String) -> ConfigError {
        ConfigError(file: file, line: line, column: 0, context: context, key: key, message: message)
    }

    mutating func validate(into diagnostics: inout ConfigDiagnostics) {
        checkUniqueNames(into: &diagnostics)
        checkWiringTargets(into: &diagnostics)
        checkLcores(into: &diagnostics)
        guard diagnostics.errors.isEmpty else { return }
        checkCycles(into: &diagnostics)
        checkReachability(into: &diagnostics)
        checkTransmitQueues(into: &diagnostics)
    }

    private func checkUniqueNames(into diagnostics: inout ConfigDiagnostics) {
        var seen: [String: (String, Int)] = [:]
        func claim(_ name: String, _ what: String, _ line: Int) {
            if let (other, otherLine) = seen[name] {
                diagnostics.add(error(line: line, "\(what) '\(name)'", key: "name",
                                      "name already used by \(other) '\(name)' on line \(otherLine)"))
            } else {
                seen[name] = (what, line)
            }
        }
        var devices: [String: String] = [:]
        for port in ports {
            claim(port.name, "port", port.line)
            if let other = devices[port.deviceName] {
                diagnostics.add(error(line: port.line, "port '\(port.name)'", key: "device",
                                      "device '\(port.deviceName)' is already port '\(other)'"))
            }
            devices[port.deviceName] = port.name
        }
        for ring in rings { claim(ring.name, "ring", ring.line) }
        for stage in stages { claim(stage.name, "stage", stage.line) }
        var lcoreIDs: [Int: Int] = [:]
        for lcore in lcores {
            if let otherLine = lcoreIDs[lcore.id] {
                diagnostics.add(error(line: lcore.line, "lcore \(lcore.id)", key: "id",
                                      "lcore \(lcore.id) is already defined on line \(otherLine)"))
            }
            lcoreIDs[lcore.id] = lcore.line
        }
    }

    private func checkWiringTargets(into diagnostics: inout ConfigDiagnostics) {
        for stage in stages {
            for (index, target) in stage.next.enumerated() where index > 0 {
                let key = "next.\(stage.descriptor.dispositions[index])"
                let context = "stage '\(stage.name)'"
                switch target {
                case .drop:
                    break
                case .stage(let name):
                    if self.stage(named: name) == nil {
                        diagnostics.add(error(line: stage.line, context, key: key, "no stage named '\(name)'"))
                    } else if name == stage.name {
                        diagnostics.add(error(line: stage.line, context, key: key, "a stage cannot feed itself"))
                    }
                case .port(let name):
                    if let port = port(named: name) {
                        if port.txQueues == 0 {
                            diagnostics.add(error(line: stage.line, context, key: key,
                                                  "port '\(name)' has no tx queues (tx_queues: 0)"))
                        }
                    } else {
                        diagnostics.add(error(line: stage.line, context, key: key, "no port named '\(name)'"))
                    }
                case .ring(let name):
                    if ring(named: name) == nil {
                        diagnostics.add(error(line: stage.line, context, key: key, "no ring named '\(name)'"))
                    }
                }
            }
        }
    }

    private func checkLcores(into diagnostics: inout ConfigDiagnostics) {
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        if lcores.isEmpty {
            diagnostics.add(error(line: 1, "", key: "lcores", "no lcores: nothing would poll the ports"))
        }
        if eal.controlCPU >= cpus {
            diagnostics.add(error(line: 1, "eal", key: "control_cpu",
                                  "cpu \(eal.controlCPU) does not exist on this machine (\(cpus) CPUs)"))
        }
        var pollers: [String: Int] = [:]
        var ringConsumers: [String: Int] = [:]
        for lcore in lcores {
            let context = "lcore \(lcore.id)"
            if lcore.cpu >= cpus {
                diagnostics.add(error(line: lcore.line, context, key: "cpu",
                                      "cpu \(lcore.cpu) does not exist on this machine (\(cpus) CPUs)"))
            }
            for (source, to) in lcore.poll {
                if stage(named: to) == nil {
                    diagnostics.add(error(line: lcore.line, context, key: "poll.to", "no stage named '\(to)'"))
                }
                switch source {
                case .port(let name, let queue):
                    guard let port = port(named: name) else {
                        diagnostics.add(error(line: lcore.line, context, key: "poll.port", "no port named '\(name)'"))
                        continue
                    }
                    if queue >= port.rxQueues {
                        diagnostics.add(error(line: lcore.line, context, key: "poll.queue",
                                              "port '\(name)' has \(port.rxQueues) rx queue(s); queue \(queue) does not exist"))
                    }
                    let slot = "\(name)/\(queue)"
                    if let other = pollers[slot] {
                        diagnostics.add(error(line: lcore.line, context, key: "poll",
                                              "port '\(name)' rx queue \(queue) is already polled by lcore \(other)"))
                    }
                    pollers[slot] = lcore.id
                case .ring(let name):
                    guard ring(named: name) != nil else {
                        diagnostics.add(error(line: lcore.line, context, key: "poll.ring", "no ring named '\(name)'"))
                        continue
                    }
                    if let other = ringConsumers[name] {
                        diagnostics.add(error(line: lcore.line, context, key: "poll.ring",
                                              "ring '\(name)' is already polled by lcore \(other) (a ring has one consumer)"))
                    }
                    ringConsumers[name] = lcore.id
                }
            }
        }
        for port in ports {
            for queue in 0..<port.rxQueues where pollers["\(port.name)/\(queue)"] == nil {
                diagnostics.add(error(line: port.line, "port '\(port.name)'", key: "rx_queues",
                                      "rx queue \(queue) is polled by no lcore (its packets would be lost); poll it or lower rx_queues"))
            }
        }
        for ring in rings where ringConsumers[ring.name] == nil {
            diagnostics.add(error(line: ring.line, "ring '\(ring.name)'", "no lcore polls this ring"))
        }
    }

    /// Stage-to-stage edges only: rings and ports end a path within an lcore.
    func successors(of stage: StageInstance) -> [String] {
        stage.next.compactMap { if case .stage(let name) = $0 { name } else { nil } }
    }

    /// Where packets of `stage` can go next, across lcores: stage edges, and ring edges to the
    /// stage the ring's consumer feeds. A cycle through a ring loops packets as surely as a direct one.
    private func successorsAcrossRings(of stage: StageInstance) -> [String] {
        stage.next.flatMap { target -> [String] in
            switch target {
            case .stage(let name): return [name]
            case .ring(let ring):
                return lcores.flatMap { $0.poll.filter { $0.source == .ring(ring) }.map(\.to) }
            case .drop, .port: return []
            }
        }
    }

    private func checkCycles(into diagnostics: inout ConfigDiagnostics) {
        enum Mark { case visiting, done }
        var marks: [String: Mark] = [:]
        var reported = false
        func visit(_ name: String, _ path: [String]) {
            guard !reported, let stage = stage(named: name) else { return }
            switch marks[name] {
            case .done: return
            case .visiting:
                let cycle = path[path.firstIndex(of: name)!...] + [name]
                diagnostics.add(error(line: stage.line, "stage '\(name)'", key: "next",
                                      "wiring forms a cycle: \(cycle.joined(separator: " -> "))"))
                reported = true
                return
            case nil:
                marks[name] = .visiting
                for next in successorsAcrossRings(of: stage) { visit(next, path + [name]) }
                marks[name] = .done
            }
        }
        for stage in stages { visit(stage.name, []) }
    }

    /// Stages reachable from one lcore's sources without crossing a ring.
    func stagesReachable(from lcore: LcoreSettings) -> [String] {
        var order: [String] = []
        var seen = Set<String>()
        func visit(_ name: String) {
            guard seen.insert(name).inserted, let stage = stage(named: name) else { return }
            order.append(name)
            for next in successors(of: stage) { visit(next) }
        }
        for (_, to) in lcore.poll { visit(to) }
        return order
    }

    private func checkReachability(into diagnostics: inout ConfigDiagnostics) {
        var reachable = Set<String>()
        var fedRings = Set<String>()
        for lcore in lcores {
            for name in stagesReachable(from: lcore) {
                reachable.insert(name)
                for case .ring(let ring) in stage(named: name)!.next { fedRings.insert(ring) }
            }
        }
        for stage in stages where !reachable.contains(stage.name) {
            diagnostics.add(error(line: stage.line, "stage '\(stage.name)'",
                                  "unreachable: no lcore polls a port queue or ring that leads here"))
        }
        for ring in rings where !fedRings.contains(ring.name) {
            diagnostics.add(error(line: ring.line, "ring '\(ring.name)'",
                                  "nothing feeds this ring: wire a disposition to ring:\(ring.name)"))
        }
    }

    /// Ports each lcore transmits on (through its reachable stages), in first-use order.
    func transmitPorts(of lcore: LcoreSettings) -> [String] {
        var ports: [String] = []
        for name in stagesReachable(from: lcore) {
            for case .port(let port) in stage(named: name)!.next where !ports.contains(port) { ports.append(port) }
        }
        return ports
    }

    private func checkTransmitQueues(into diagnostics: inout ConfigDiagnostics) {
        for port in ports {
            let senders = lcores.filter { transmitPorts(of: $0).contains(port.name) }.map(\.id)
            if senders.count > port.txQueues {
                diagnostics.add(error(line: port.line, "port '\(port.name)'", key: "tx_queues",
                                      "\(senders.count) lcores (\(senders.map(String.init).joined(separator: ", "))) transmit on this port, each needs its own tx queue, but tx_queues is \(port.txQueues)"))
            }
        }
    }
}
