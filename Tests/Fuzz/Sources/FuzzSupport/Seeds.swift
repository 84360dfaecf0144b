import SwitchyardPcap

/// Crafted frames for the seed corpora, in the fuzz cluster's addresses (FuzzCluster): one of
/// each kind a parser tells apart, built with SwitchyardPcap's Frames.
public enum Seeds {
    static let ip = FuzzCluster.ip
    public static let vip = ip("198.19.0.1"), vip2 = ip("198.19.0.2"), vip6 = ip("fd00:19::1")
    public static let host = ip("198.18.0.11"), peer = ip("198.18.0.12"), client = ip("198.51.100.7")
    public static let client6 = ip("2001:db8::7"), router6 = ip("fd00:18::1"), host6 = ip("fd00:18::11")
    public static let backend = ip("198.18.100.10"), backendUDP = ip("198.18.100.11"), backend6 = ip("fd00:100::10")
    public static let toUplink = Frames.Link(source: FuzzCluster.routerMAC, destination: FuzzCluster.uplinkMAC)
    public static let toBackends = Frames.Link(source: [0x02, 0, 0, 0, 0x10, 0x10], destination: FuzzCluster.backendsMAC)

    /// Frames arriving on the uplink: VIP traffic, ICMP errors about it, ARP/ND/echo, tunnels.
    public static func uplink() -> [[UInt8]] {
        let l = toUplink
        let syn = Frames.ipv4TCP(source: client, destination: vip, sourcePort: 40000, destinationPort: 80, flags: [.syn], link: l)
        let quoted = Frames.withoutEthernet(Frames.ipv4TCP(source: vip, destination: client, sourcePort: 80, destinationPort: 40000, flags: [.syn, .ack]))
        let quoted6 = Frames.withoutEthernet(Frames.ipv6TCP(source: vip6, destination: client6, sourcePort: 80, destinationPort: 40000, flags: [.syn, .ack]))
        let inner = Frames.ipv4TCP(source: client, destination: vip, sourcePort: 40001, destinationPort: 80, flags: [.ack])
        return [
            syn,
            Frames.ipv4TCP(source: client, destination: vip2, sourcePort: 40000, destinationPort: 443, flags: [.syn], link: l),
            Frames.ipv4UDP(source: client, destination: vip, sourcePort: 5000, destinationPort: 7000, payload: [1, 2, 3, 4], link: l),
            Frames.ipv6TCP(source: client6, destination: vip6, sourcePort: 40000, destinationPort: 80, flags: [.syn], link: l),
            Frames.icmpv4DestinationUnreachable(source: ip("198.51.100.1"), destination: vip, code: 4, original: quoted, link: l),
            Frames.icmpv4TimeExceeded(source: ip("198.51.100.1"), destination: vip, original: quoted, link: l),
            Frames.icmpv6PacketTooBig(source: router6, destination: vip6, mtu: 1280, original: quoted6, link: l),
            Frames.icmpv4EchoRequest(source: client, destination: vip, link: l),
            Frames.icmpv6EchoRequest(source: client6, destination: vip6, link: l),
            Frames.arpRequest(senderMAC: FuzzCluster.routerMAC, senderIP: ip("198.18.0.1"), targetIP: host),
            Frames.arpReply(senderMAC: FuzzCluster.routerMAC, senderIP: ip("198.18.0.1"), targetMAC: FuzzCluster.uplinkMAC, targetIP: host),
            Frames.gratuitousARP(senderMAC: [0x02, 0, 0, 0, 0, 0x12], senderIP: peer),
            Frames.icmpv6NeighborSolicitation(source: router6, target: vip6, sourceMAC: FuzzCluster.routerMAC),
            Frames.vxlan(outerSource: peer, outerDestination: host, vni: 7, inner: inner, link: l),
            Frames.gue(outerSource: peer, outerDestination: host, destinationPort: 6080, inner: Frames.withoutEthernet(inner), link: l),
            Frames.ipv4TCP(source: client, destination: vip, sourcePort: 40000, destinationPort: 80, flags: [.syn], link: Frames.Link(source: FuzzCluster.routerMAC, destination: FuzzCluster.uplinkMAC, vlan: 10)),
            Frames.ipv4TCP(source: client, destination: host, sourcePort: 40000, destinationPort: 22, flags: [.syn], link: l),
            Frames.gre(source: client, destination: vip, payload: [0, 0, 0, 0], link: l),
        ]
    }

    /// Frames from the backends: replies from their bypass tuples and ICMP errors they send.
    public static func backends() -> [[UInt8]] {
        let l = toBackends
        let quoted = Frames.withoutEthernet(Frames.ipv4TCP(source: client, destination: backend, sourcePort: 40000, destinationPort: 8080, flags: [.ack]))
        return [
            Frames.ipv4TCP(source: backend, destination: client, sourcePort: 8080, destinationPort: 40000, flags: [.syn, .ack], link: l),
            Frames.ipv4UDP(source: backendUDP, destination: client, sourcePort: 7700, destinationPort: 5000, payload: [9, 9], link: l),
            Frames.ipv6TCP(source: backend6, destination: client6, sourcePort: 8080, destinationPort: 40000, flags: [.ack], link: l),
            Frames.icmpv4DestinationUnreachable(source: backend, destination: client, code: 3, original: quoted, link: l),
            Frames.arpRequest(senderMAC: [0x02, 0, 0, 0, 0x10, 0x10], senderIP: backend, targetIP: host),
        ]
    }
}
