import Foundation
import SwitchyardEngine
import SwitchyardCluster
import SwitchyardConfig

/// `ctl preview FILE`: what a reload of FILE would do to the live flows, without applying it.
///
///     FILE ──load + validate (as reload)──► refused? ──► the same errors as reload
///          └─► new ServiceDirectory (Maglev tables, off the hot path)
///                 └─► ReloadPreview(current directory, new, connection table) ──► JSON answer
///
/// Runs on the control thread between its ticks: the lcores never wait for it (they keep reading
/// the running directory; the new one is freed when the answer is built).
extension ClusterPlugin {
    func registerPreviewCommand() {
        control.register("preview", summary: "what a reload of a file would move: connections and new flows per service (args: file)") {
            [unowned self] args in
            try preview(file: engine.fileArgument(args))
        }
    }

    /// Loads `file` as `reload` would and compares its services with the running ones. Throws the
    /// errors a reload of `file` would give (invalid file, fixed keys changed), changing nothing.
    func preview(file: String) throws -> [String: Any] {
        guard let load = engine.configurationLoader else { throw ControlError("this engine was started without a configuration loader") }
        let new: EngineConfiguration
        do {
            new = try load(file)
        } catch let errors as ConfigErrors {
            throw ControlError("invalid configuration, a reload would change nothing:\n\(errors.description)")
        } catch {
            throw ControlError("cannot load \(file): \(error)")
        }
        let running = Set(configuration.lcores.map(\.id)), wanted = Set(new.lcores.map(\.id))
        guard running == wanted else {
            throw ControlError("a reload would be refused: the new configuration has lcores \(wanted.sorted()), the engine runs \(running.sorted())")
        }
        guard (new.cluster == nil) == (configuration.cluster == nil) else {
            throw ControlError("a reload would be refused: a `cluster:` section can be changed by a reload, but not added or removed")
        }
        let fixed = configuration.fixedDifferences(to: new)
        guard fixed.isEmpty else {
            throw ControlError("a reload would be refused, nothing would change:\n" + fixed.map { "  " + $0 }.joined(separator: "\n"))
        }
        guard let cluster, let settings = new.cluster else {
            throw ControlError("this engine has no `cluster:` section: no services or connections to preview")
        }
        let started = Date()
        // As a reload builds it: the file's services plus every host's listeners, this host's
        // from FILE's `cluster.listen` (on a copy of the book: a preview changes nothing).
        let book = listenerState.book?.copy()
        book?.replaceOwn(from: .file, with: settings.listen.compactMap { $0.listener(services: settings.services) })
        let next = ServiceDirectory(settings.adding(listeners: book).configuration)
        let preview = ReloadPreview(current: cluster.directory, next: next, table: cluster.connections)
        return [
            "file": file,
            "changes": configuration.liveChanges(to: new),
            "connections": preview.walked,
            "unmatched": preview.unmatched,
            "services": preview.services.map(Self.json),
            "seconds": Date().timeIntervalSince(started),
        ]
    }

    private static func json(_ s: ReloadPreview.Service) -> [String: Any] {
        func share(_ part: Int) -> Double { s.slots > 0 ? Double(part) / Double(s.slots) : 0 }
        func shares(_ list: [ReloadPreview.Share], backend: Bool) -> [[String: Any]] {
            list.map { item in
                var entry: [String: Any] = [
                    "share_before": share(item.slotsBefore), "share_after": share(item.slotsAfter),
                    "lost": share(item.slotsLost), "gained": share(item.slotsGained),
                ]
                if backend {
                    entry["backend"] = item.name
                    entry["host"] = item.hostID
                    entry["weight_before"] = item.weightBefore.map { $0 as Any } ?? NSNull()
                    entry["weight_after"] = item.weightAfter.map { $0 as Any } ?? NSNull()
                } else {
                    entry["host"] = item.hostID
                }
                return entry
            }
        }
        let vip = s.vip.isIPv4 ? "\(s.vip):\(s.port)" : "[\(s.vip)]:\(s.port)"
        return [
            "service": s.name, "vip": vip,
            "protocol": s.protocolNumber == 6 ? "tcp" : s.protocolNumber == 17 ? "udp" : String(s.protocolNumber),
            "status": s.status,
            "connections": s.connections, "local": s.local, "remote": s.remote,
            "pick_changes": ["backend": s.pickChangesBackend, "host": s.pickChangesHost],
            "held_by_entry": ["backend": s.heldByEntryBackend, "host": s.heldByEntryHost, "by_state": s.heldByState] as [String: Any],
            "new_flows": [
                "backend_moved": share(s.movedSlotsBackend), "host_moved": share(s.movedSlotsHost),
                "slots": s.slots, "exact": s.exact,
                "backends": shares(s.backends, backend: true), "hosts": shares(s.hosts, backend: false),
            ] as [String: Any],
        ]
    }
}
