import SwitchyardConfig

/// One item of `cluster.listen`: a backend of this host, registered at start and gossiped to
/// every host, as `switchyard ctl listen SERVICE ADDRESS:PORT --weight W` would.
///
///     cluster:
///       listen:
///         - { service: web, address: 198.18.100.20, port: 8080, weight: 2 }
public struct ListenSettings: Sendable, Equatable {
    /// The service's `name`.
    public var service: String
    public var address: IPAddress
    public var port: UInt16
    public var weight: Int
    public var line: Int

    public init(service: String, address: IPAddress, port: UInt16, weight: Int, line: Int = 0) {
        self.service = service
        self.address = address
        self.port = port
        self.weight = weight
        self.line = line
    }

    /// As a listener of `book`, given the services (nil when the service is unknown).
    public func listener(services: [ServiceSettings]) -> ListenerBook.Listener? {
        guard let s = services.first(where: { $0.name == service }) else { return nil }
        return ListenerBook.Listener(vip: s.vip, protocolNumber: s.transport.number, servicePort: s.port,
                                     address: address, port: port, weight: UInt16(weight))
    }
}

extension ClusterConfiguration {
    /// `listen:` items: errors name the item (`cluster listen #N`), the key and the line.
    static func parseListen(_ map: ConfigMap, services: [ServiceSettings]) throws -> [ListenSettings] {
        var result: [ListenSettings] = []
        for (index, item) in try map.list("listen").enumerated() {
            let m = try item.within("cluster listen #\(index + 1)").map()
            guard index < ListenerBook.defaultCapacity else {
                throw item.within("cluster listen #\(index + 1)").error("at most \(ListenerBook.defaultCapacity) listeners per host (what one gossip message carries)")
            }
            let nameValue = try m.required("service")
            let name = try nameValue.string()
            guard let service = services.first(where: { $0.name == name }) else {
                throw nameValue.error("no service '\(name)' (services: \(services.map(\.name).joined(separator: ", ")))")
            }
            let address = try parseAddress(m.required("address"))
            guard address.family == service.vip.family else {
                throw m.error("the VIP of '\(name)' is IPv\(service.vip.family) but this address is IPv\(address.family): translation keeps the family", key: "address")
            }
            let port = UInt16(try m.int("port", default: Int(service.port), in: 1...65535))
            let weight = try m.int("weight", default: 1, in: 0...65535)
            for other in services where other.transport == service.transport {
                if other.backends.contains(where: { $0.address == address && $0.port == port }) {
                    throw m.error("\(address) port \(port) is already a backend of '\(other.name)' in cluster.services", key: "address")
                }
            }
            if let previous = result.first(where: { earlier in
                earlier.address == address && earlier.port == port
                    && services.first(where: { $0.name == earlier.service })?.transport == service.transport
            }) {
                throw m.error("\(address) port \(port) is already listed (line \(previous.line))", key: "address")
            }
            try m.finish()
            result.append(ListenSettings(service: name, address: address, port: port, weight: weight, line: m.line))
        }
        return result
    }
}
