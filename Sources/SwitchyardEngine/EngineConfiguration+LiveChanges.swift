import Foundation

/// What a reload of a running engine may change, and what it may not.
///
///     live:   stages (kinds, parameters, wiring), lcores' poll lists (each queue and ring keeping
///             its lcore), and what each plug-in says (`EnginePlugin.liveChanges`; the cluster's:
///             ClusterPlugin+LiveChanges.swift)
///     fixed:  control, metrics, eal, mempool, burst_size, ports, rings, lcores (ids, CPUs,
///             idle), and what each plug-in says (`EnginePlugin.fixedDifferences`)
///
/// A fixed part needs a restart: a reload that changes one is refused as a whole, naming the key.
/// `name` is read at start only (it names the control socket): a reload keeps the running name.
extension EngineConfiguration {
    /// One line per fixed key that differs in `new` ("ports 'wire'.device: ..."); empty when the
    /// reload may go ahead.
    public func fixedDifferences(to new: EngineConfiguration) -> [String] {
        var problems: [String] = []
        func check(_ key: String, _ old: String, _ now: String) {
            if old != now { problems.append("\(key): '\(old)' -> '\(now)' cannot change while the engine runs (restart it)") }
        }
        check("control.socket", control.enabled ? control.socket ?? "default" : "none",
              new.control.enabled ? new.control.socket ?? "default" : "none")
        check("metrics.listen", metrics.map { "\($0.host):\($0.port)" } ?? "none",
              new.metrics.map { "\($0.host):\($0.port)" } ?? "none")
        check("eal", "\(eal.hugepages) \(eal.memoryMB) \(eal.controlCPU) \(eal.args)",
              "\(new.eal.hugepages) \(new.eal.memoryMB) \(new.eal.controlCPU) \(new.eal.args)")
        check("mempool", "\(mempool.mbufs.map(String.init) ?? "auto") \(mempool.cache) \(mempool.dataRoom)",
              "\(new.mempool.mbufs.map(String.init) ?? "auto") \(new.mempool.cache) \(new.mempool.dataRoom)")
        check("burst_size", String(burstSize), String(new.burstSize))
        check("ports", ports.map(\.name).joined(separator: ", "), new.ports.map(\.name).joined(separator: ", "))
        for port in ports {
            guard let other = new.port(named: port.name) else { continue }
            check("ports '\(port.name)'", Self.fixedText(port), Self.fixedText(other))
        }
        check("rings", rings.map { "\($0.name)/\($0.size)" }.joined(separator: ", "),
              new.rings.map { "\($0.name)/\($0.size)" }.joined(separator: ", "))
        func lcoreText(_ lcores: [LcoreSettings]) -> String {
            lcores.sorted { $0.id < $1.id }.map { "\($0.id)@\($0.cpu) \($0.idle)" }.joined(separator: ", ")
        }
        check("lcores", lcoreText(lcores), lcoreText(new.lcores))
        for (old, now) in zip(plugins, new.plugins) where ObjectIdentifier(old.plugin) == ObjectIdentifier(now.plugin) {
            problems += old.plugin.fixedDifferences(from: old.settings, to: now.settings)
        }
        return problems
    }

    /// What changes live, in words, for the reply and the log.
    public func liveChanges(to new: EngineConfiguration) -> [String] {
        var changes: [String] = []
        let oldStages = stages.map { "\($0.name):\($0.descriptor.kind):\($0.next)" }
        let newStages = new.stages.map { "\($0.name):\($0.descriptor.kind):\($0.next)" }
        if oldStages != newStages { changes.append("stages or their wiring changed") }
        for (old, now) in zip(plugins, new.plugins) where ObjectIdentifier(old.plugin) == ObjectIdentifier(now.plugin) {
            changes += old.plugin.liveChanges(from: old.settings, to: now.settings)
        }
        return changes
    }

    private static func fixedText(_ port: PortSettings) -> String {
        "device \(port.device), rx_queues \(port.rxQueues), tx_queues \(port.txQueues), rx_descriptors \(port.rxDescriptors), "
            + "tx_descriptors \(port.txDescriptors), rss \(port.rss), promiscuous \(port.promiscuous)"
    }
}
