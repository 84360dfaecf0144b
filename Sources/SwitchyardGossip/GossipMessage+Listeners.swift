import SwitchyardCluster

/// LISTENERS (kind 7): the sender's whole listener set (`ListenerBook`), version `version` of the
/// sender's incarnation (the header's). Sent when the set changes and every `digest_interval_ms`.
///
///     0                8        10     12
///     ┌────────────────┬────────┬──────┬──────────────────────┐
///     │    version     │ count  │  0   │ count records         │
///     └────────────────┴────────┴──────┴──────────────────────┘
///
///     record: 18 bytes (IPv4) or 42 bytes (IPv6)
///     0     1      2      3    4        6         8         10
///     ┌─────┬──────┬──────┬────┬────────┬─────────┬─────────┬─────────┬──────────┐
///     │ fam │proto │flags │ 0  │ weight │ service │ backend │   VIP   │ backend  │
///     │ 4|6 │      │      │    │        │  port   │  port   │ address │ address  │
///     └─────┴──────┴──────┴────┴────────┴─────────┴─────────┴─────────┴──────────┘
///     flags bit 0: withdrawn, bit 1: down (health checks; other bits 0); addresses 4 or 16 bytes each, by fam
public struct ListenerAnnouncement: Equatable, Sendable {
    public static let overhead = 12
    public var version: UInt64
    public var listeners: [ListenerBook.Listener]

    public init(version: UInt64, listeners: [ListenerBook.Listener]) {
        self.version = version
        self.listeners = listeners
    }

    public static func recordSize(_ listener: ListenerBook.Listener) -> Int { listener.vip.family == 4 ? 18 : 42 }
}

extension GossipCodec {
    static func encodeListeners(_ a: ListenerAnnouncement, _ w: inout Writer) {
        guard a.listeners.count <= Int(UInt16.max) else { w.overflow = true; return }
        w.u64(a.version); w.u16(UInt16(a.listeners.count)); w.u16(0)
        for l in a.listeners {
            let size = l.vip.family == 4 ? 4 : 16
            w.u8(l.vip.family); w.u8(l.protocolNumber); w.u8((l.withdrawn ? 1 : 0) | (l.down ? 2 : 0)); w.u8(0)
            w.u16(l.weight); w.u16(l.servicePort); w.u16(l.port)
            let vip = l.vip.bytes, address = l.address.bytes
            vip.withUnsafeBytes { w.raw($0.baseAddress!, size) }
            address.withUnsafeBytes { w.raw($0.baseAddress!, size) }
        }
    }

    static func decodeListeners(_ r: inout Reader) -> GossipBody? {
        guard let version = r.u64(), let count = r.u16(), r.u16() == 0 else { return nil }
        var listeners: [ListenerBook.Listener] = []
        for _ in 0..<count {
            guard let family = r.u8(), family == 4 || family == 6, let proto = r.u8(), proto == 6 || proto == 17,
                  let flags = r.u8(), flags & ~3 == 0, r.u8() == 0, let weight = r.u16(), let servicePort = r.u16(),
                  servicePort != 0, let port = r.u16(), port != 0
            else { return nil }
            let size = family == 4 ? 4 : 16
            guard let vip = r.take(size), let address = r.take(size) else { return nil }
            listeners.append(ListenerBook.Listener(
                vip: IPAddress(bytes: Array(UnsafeRawBufferPointer(start: vip, count: size))), protocolNumber: proto,
                servicePort: servicePort, address: IPAddress(bytes: Array(UnsafeRawBufferPointer(start: address, count: size))),
                port: port, weight: weight, withdrawn: flags & 1 != 0, down: flags & 2 != 0))
        }
        return .listeners(ListenerAnnouncement(version: version, listeners: listeners))
    }
}
