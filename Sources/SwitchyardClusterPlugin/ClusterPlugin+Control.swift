import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardEngine

/// The cluster's control-socket commands beside the engine's (`switchyard ctl`):
///
///     connections   the connection table: client, VIP, owner, backend, state, idle
///     preview       what a reload of a file would move (ClusterPlugin+Preview.swift)
///     bgp, drain, undrain                   (ClusterPlugin+Bgp.swift)
///     listen, unlisten, backends            (ClusterPlugin+Listeners.swift, with a `cluster:` section)
extension ClusterPlugin {
    func registerClusterCommands() {
        control.register("connections", summary: "the connection table (args: service, owner, limit)") { [unowned self] args in
            try connectionsAnswer(args)
        }
        registerPreviewCommand()
        registerBgpCommands()
    }

    private func connectionsAnswer(_ args: [String: Any]) throws -> [String: Any] {
        guard let cluster else { throw ControlError("this engine has no `cluster:` section, so no connection table") }
        let limit = try Engine.intArgument(args, "limit", default: 100, in: 0...1_000_000)
        let owner = try args["owner"].map { _ in try Engine.intArgument(args, "owner", default: 0, in: 1...4095) }
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
                "state": ReloadPreview.stateName(FlowEntry.state(control)),
                "idle_s": now > seen && hz > 0 ? Double(now - seen) / hz : 0,
            ])
        }
        return ["connections": rows, "matched": matched, "table_entries": table.count, "capacity": table.positions]
    }

    private static func endpoint(_ address: IPAddress, _ port: UInt16) -> String {
        address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }
}
