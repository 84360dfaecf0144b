import CDPDK
import Foundation
import SwitchyardEngine
import SwitchyardCluster
import SwitchyardGossip

/// Listener registration (seeds 002/003; docs/configuration.md `cluster.listen`, docs/operations.md
/// `ctl listen`): this host's backends come and go while the engine runs, every host's are
/// gossiped, and the control thread republishes the tables whenever the set of listeners moves.
///
///     ctl listen / unlisten ─┐                          ┌─► gossip: LISTENERS to every peer
///     cluster.listen (start) ├─► ListenerBook (own set) ┤
///     gossip: peers' sets ───┘   (ordering rule)        └─► tick: changes moved?
///                                                              │ new ClusterRuntime(reloading:listeners:)
///                                                              │   Maglev tables built here, off the hot path;
///                                                              │   the previous directory kept (daisy chaining)
///                                                              └─► LcoreGraph per lcore ─RCU─► lcores
///
/// A withdrawn listener (`ctl unlisten`) stays at weight 0 until the connection table holds no
/// connection of this host to it (checked once a second), so its replies are still translated.
extension ClusterPlugin {
    /// Control-thread state of listener registration.
    final class ListenerState {
        var book: ListenerBook?
        /// `book.changes` as of the tables the lcores run.
        var published: UInt64 = 0
        var publishes: UInt64 = 0
        var lastPurgeCheck = Date.distantPast
        var startedAt = Date()
        /// Health checks of this host's backends (ClusterPlugin+Health).
        let health = HealthChecker()
    }

    /// At start, before the graphs are built: the book, the file's listeners, the first tables.
    func setUpListeners() {
        guard let current = cluster, let settings = configuration.cluster else { return }
        let state = listenerState
        state.startedAt = Date()
        let incarnation = gossip?.incarnation ?? (UInt64(Date().timeIntervalSince1970 * 1000) << 16 | UInt64.random(in: 0...0xffff))
        let book = ListenerBook(localHostID: UInt16(settings.localHostID), incarnation: incarnation,
                                clock: { [startedAt = state.startedAt] in Date().timeIntervalSince(startedAt) })
        state.book = book
        gossip?.listenerBook = book
        book.replaceOwn(from: .file, with: settings.listen.compactMap { $0.listener(services: settings.services) })
        if !book.own.listeners.isEmpty {
            let next = ClusterRuntime(reloading: current, configuration: settings, listeners: book)
            next.directory.forgetPrevious() // nothing ran by the table without them
            cluster = next
            log("listeners: \(book.own.listeners.count) from cluster.listen, generation \(book.generationText)")
        }
        state.published = book.changes
    }

    /// Every tick, after gossip: republishes the tables when any listener set changed; once a
    /// second, purges withdrawn listeners that no connection uses any more.
    func tickListeners() {
        guard let book = listenerState.book else { return }
        tickHealth(book: book)
        if Date().timeIntervalSince(listenerState.lastPurgeCheck) >= 1 {
            listenerState.lastPurgeCheck = Date()
            purgeUnusedListeners(book)
        }
        if book.changes != listenerState.published {
            do {
                try publishListeners()
            } catch {
                log("listeners: \(error)")
                listenerState.published = book.changes // not again until the next change
            }
        }
    }

    /// Builds the directory and every lcore's graph for the current listeners, then publishes
    /// them (RCU): the same path as a reload, with the same configuration.
    func publishListeners() throws {
        guard let book = listenerState.book, let current = cluster, let settings = configuration.cluster else { return }
        let changes = book.changes
        // A change that leaves every backend and weight as they are (a peer's first, empty set; a
        // listener left out) publishes nothing: the previous table stays the one before the last
        // real change, which daisy chaining needs.
        let effective = settings.adding(listeners: book)
        if Self.backendsText(effective.configuration) == Self.backendsText(current.configuration)
            && effective.skipped.count == current.skippedListeners.count
        {
            listenerState.published = changes
            return
        }
        let next = ClusterRuntime(reloading: current, configuration: settings, listeners: book)
        try publish(cluster: next)
        listenerState.published = changes
        listenerState.publishes += 1
        log("listeners: tables republished, generation \(book.generationText)"
            + (next.skippedListeners.isEmpty ? "" : "; left out: " + next.skippedListeners.map {
                "host \($0.host) \($0.listener.address):\($0.listener.port) (\($0.reason))"
            }.joined(separator: ", ")))
    }

    /// Every graph built before any is published; on a failure nothing changes.
    func publish(cluster next: ClusterRuntime) throws {
        try engine.publishGraphs(with: Self.services(next))
        cluster = next
        // No lcore reads the directory before the previous one any more.
        next.directory.forgetPreviousOfPrevious()
    }

    /// Withdrawn listeners of this host with no connection left in the table are removed.
    private func purgeUnusedListeners(_ book: ListenerBook) {
        let withdrawn = book.own.listeners.filter(\.withdrawn)
        guard !withdrawn.isEmpty, let cluster else { return }
        var used = Set<Int>()
        let table = cluster.connections
        let local = UInt16(cluster.configuration.localHostID)
        for position in 0..<table.positions {
            let entry = table.entries + position
            let control = sy_atomic_load_u64(&entry.pointee.control)
            guard FlowEntry.isValid(control), FlowEntry.owner(control) == local else { continue }
            let port = UInt16(bigEndian: FlowEntry.backendPort(control))
            for (index, listener) in withdrawn.enumerated() where listener.port == port
                && listener.address.high == entry.pointee.backendHigh && listener.address.low == entry.pointee.backendLow
            {
                used.insert(index)
            }
            if used.count == withdrawn.count { return }
        }
        for (index, listener) in withdrawn.enumerated() where !used.contains(index) {
            book.purge(listener)
            gossip?.announceListenersSoon()
            log("listeners: \(listener.address):\(listener.port) removed (withdrawn, no connection left)")
        }
    }

    func registerListenerCommands() {
        control.register("listen", summary: "register a backend of this host (args: service, address, port, weight)") {
            [unowned self] args in try listenCommand(args)
        }
        control.register("unlisten", summary: "withdraw a backend of this host (args: service, address, port)") {
            [unowned self] args in try unlistenCommand(args)
        }
        control.register("backends", summary: "every backend: origin (config/listen), weight, state, generation") {
            [unowned self] _ in try backendsAnswer()
        }
    }

    /// The listener the arguments name (service by name, address, port default the service's).
    private func listenerArgument(_ args: [String: Any], weight: Bool) throws -> (ServiceSettings, ListenerBook.Listener) {
        guard let cluster, listenerState.book != nil, let settings = configuration.cluster else {
            throw ControlError("this engine has no `cluster:` section")
        }
        guard let name = args["service"] as? String else { throw ControlError("service must be a service name") }
        guard let service = settings.services.first(where: { $0.name == name }) else {
            throw ControlError("no service '\(name)' (services: \(settings.services.map(\.name).joined(separator: ", ")))")
        }
        guard let text = args["address"] as? String, let address = IPAddress(text) else {
            throw ControlError("address must be an IPv4 or IPv6 address")
        }
        guard address.family == service.vip.family else {
            throw ControlError("the VIP of '\(name)' is IPv\(service.vip.family) but \(address) is IPv\(address.family): translation keeps the family")
        }
        let port = try Engine.intArgument(args, "port", default: Int(service.port), in: 1...65535)
        let w = weight ? try Engine.intArgument(args, "weight", default: 1, in: 0...65535) : 0
        _ = cluster
        return (service, ListenerBook.Listener(vip: service.vip, protocolNumber: service.transport.number,
                                               servicePort: service.port, address: address, port: UInt16(port),
                                               weight: UInt16(w)))
    }

    private func listenCommand(_ args: [String: Any]) throws -> [String: Any] {
        let (service, listener) = try listenerArgument(args, weight: true)
        let book = listenerState.book!
        // The bypass tuple must not serve anything else already (replies go back to one VIP).
        if let cluster {
            for (s, other) in cluster.configuration.services.enumerated() where other.transport == service.transport {
                for (b, backend) in other.backends.enumerated() where backend.address == listener.address && backend.port == listener.port {
                    var isListener = false
                    if case .listen = cluster.origins[s][b] { isListener = true }
                    let mine = isListener && backend.hostID == cluster.configuration.localHostID && other.name == service.name
                    if !mine {
                        throw ControlError("\(listener.address):\(listener.port) is already a backend of '\(other.name)' (host \(backend.hostID), \(isListener ? "listen" : "config"))")
                    }
                }
            }
        }
        let changed: Bool
        do {
            changed = try book.listen(listener, source: .ctl)
        } catch {
            throw ControlError("\(error)")
        }
        if changed {
            gossip?.announceListenersSoon()
            try publishListeners()
        }
        return ["service": service.name, "backend": Self.endpointText(listener.address, listener.port),
                "weight": Int(listener.weight), "changed": changed, "generation": book.generationText,
                "version": book.own.version]
    }

    private func unlistenCommand(_ args: [String: Any]) throws -> [String: Any] {
        let (service, listener) = try listenerArgument(args, weight: false)
        let book = listenerState.book!
        guard book.unlisten(listener) != nil else {
            throw ControlError("\(Self.endpointText(listener.address, listener.port)) is not a listener of '\(service.name)' on this host"
                + " (see `switchyard ctl backends`; backends of cluster.services change by reload)")
        }
        gossip?.announceListenersSoon()
        try publishListeners()
        return ["service": service.name, "backend": Self.endpointText(listener.address, listener.port),
                "state": "withdrawn", "generation": book.generationText, "version": book.own.version]
    }

    private func backendsAnswer() throws -> [String: Any] {
        guard let cluster, let book = listenerState.book else { throw ControlError("this engine has no `cluster:` section") }
        var rows: [[String: Any]] = []
        let now = Date().timeIntervalSince(listenerState.startedAt)
        for (s, service) in cluster.configuration.services.enumerated() {
            for (b, backend) in service.backends.enumerated() {
                var row: [String: Any] = [
                    "service": service.name, "backend": Self.endpointText(backend.address, backend.port),
                    "host": backend.hostID, "weight": backend.weight,
                ]
                switch cluster.origins[s][b] {
                case .config:
                    row["origin"] = "config"
                    row["generation"] = 0
                    row["state"] = backend.weight == 0 ? "drained" : "active"
                case .configDown(_, let version):
                    row["origin"] = "config"
                    row["generation"] = Int(version)
                    row["weight"] = cluster.fileConfiguration.services.first { $0.name == service.name }?
                        .backends.first { $0.address == backend.address && $0.port == backend.port }?.weight ?? 0
                    row["state"] = "down"
                case .listen(let host, let version):
                    row["origin"] = "listen"
                    row["generation"] = Int(version)
                    let listener = book.sets[host]?.listeners.first {
                        $0.address == backend.address && $0.port == backend.port && $0.servicePort == service.port
                            && $0.vip == service.vip && $0.protocolNumber == service.transport.number
                    }
                    row["weight"] = Int(listener?.weight ?? 0)
                    row["state"] = listener?.withdrawn == true ? "withdrawn"
                        : listener?.down == true ? "down" : (listener?.weight == 0 ? "drained" : "active")
                    if host == book.localHostID, let listener { row["source"] = book.sources[listener]?.rawValue ?? "-" }
                    if let at = book.changedAt[host] { row["since_s"] = max(0, now - at) }
                }
                let key = HealthChecker.key(ListenerBook.Listener(vip: service.vip, protocolNumber: service.transport.number,
                                                                  servicePort: service.port, address: backend.address,
                                                                  port: backend.port, weight: 0))
                if let probe = listenerState.health.probes[key] {
                    let h = probe.health
                    row["health"] = [
                        "state": h.suppressed ? "suppressed" : h.state.rawValue, "since_s": max(0, now - h.since),
                        "last": h.lastResult, "checks": h.checks, "failed": h.failedChecks, "transitions": h.transitions,
                        "successes_in_a_row": h.successes, "failures_in_a_row": h.failures,
                        "flap_penalty": h.penalty(at: now, halfLife: probe.settings.flapHalfLifeSeconds),
                        "passive_refused": probe.passive.refused, "passive_unreachable": probe.passive.unreachable,
                        "kind": probe.settings.kind.rawValue,
                    ] as [String: Any]
                }
                rows.append(row)
            }
        }
        let skipped = cluster.skippedListeners.map { skip -> [String: Any] in
            ["host": Int(skip.host), "backend": Self.endpointText(skip.listener.address, skip.listener.port),
             "reason": skip.reason]
        }
        return ["backends": rows, "skipped": skipped, "generation": book.generationText,
                "digest": String(format: "%016llx", book.digest), "publishes": listenerState.publishes,
                "stale_sets": book.staleSets]
    }

    /// Every service's backends with host, weight and origin, in table order: equal texts build
    /// equal tables.
    static func backendsText(_ c: ClusterConfiguration) -> String {
        c.services.map { s in
            "\(s.vip) \(s.transport) \(s.port): " + s.backends.map { "\($0.hostID) \($0.address):\($0.port) w\($0.weight)" }
                .joined(separator: ", ")
        }.joined(separator: "; ")
    }

    static func endpointText(_ address: IPAddress, _ port: UInt16) -> String {
        address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }
}
