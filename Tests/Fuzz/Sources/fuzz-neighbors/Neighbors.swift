import CDPDK
import ClassifyStage
import ForwardStage
import FuzzSupport
import SwitchyardCluster
import SwitchyardCore
import SwitchyardPcap

/// ARP and neighbour discovery: classify (`input: wire`, `learn_neighbors: true`, `answer: true`)
/// learns from the frame into the cluster's neighbour table, then forward parses the same frame
/// (as it came in: forward reads only the Ethernet type and the IP destination) and addresses it
/// from that table, or turns it into an ARP request / neighbour solicitation.
///
///     selector bit 1: forward with routes (gateway 198.18.0.1 / fd00:18::1, connected 198.18.0.0/24)
///                     or without (everything directly connected)
///
/// Invariants beyond StageBench's and PacketBench's:
/// - the neighbour table never holds a group (multicast, broadcast) or all-zero MAC, nor an
///   address this host owns (its own, a VIP): learning must not be poisoned by what it is told;
/// - forward's `out` has the port's MAC as source and a unicast destination that the table
///   (or a static entry) gives for some next hop; `resolve` is exactly an ARP request (42 bytes,
///   46 with a VLAN tag, broadcast) or a neighbour solicitation (86 / 90 bytes, to 33:33:ff:..).
final class Target {
    let packets = PacketBench()
    let runtime = FuzzCluster.runtime()
    let classify: StageBench<Classify>
    let forwards: [StageBench<Forward>]
    let owned: Set<[UInt8]>

    init() {
        let runtime = self.runtime
        classify = StageBench<Classify>("classify", parameters: "{}", ports: FuzzCluster.ports, cluster: runtime)
        forwards = [
            StageBench<Forward>("forward", parameters: "{ port: uplink, source_ipv6: \"fe80::2\" }", ports: FuzzCluster.ports, cluster: runtime),
            StageBench<Forward>("forward-routes", parameters: """
                port: uplink
                source_ipv6: "fe80::2"
                routes:
                  - { prefix: 198.18.0.0/24 }
                  - { prefix: 0.0.0.0/0, via: 198.18.0.1 }
                  - { prefix: "::/0", via: "fd00:18::1" }
                neighbors:
                  - { address: 198.18.0.1, mac: "02:00:00:00:00:01" }
                """, ports: FuzzCluster.ports, cluster: runtime),
        ]
        owned = Set(["198.18.0.11", "198.19.0.1", "198.19.0.2", "fd00:19::1"].map { FuzzCluster.ip($0) })
    }

    func run(_ input: FuzzInput) {
        let forward = forwards[Int(input.selector >> 1) & 1]
        let packet = packets.load(input.frame, layout: input.layout, port: 0)
        let learned = classify.counter(.neighborLearned)
        let classified = classify.run(packet.mbuf)
        packets.check(packet, stage: "classify")
        if classify.counter(.neighborLearned) != learned { checkTable() }
        if classified == .answer { FuzzOutput.built(packets.bytes(packet)) }
        packets.release(packet)

        let again = packets.load(input.frame, layout: input.layout, port: 0)
        let disposition = forward.run(again.mbuf)
        packets.check(again, stage: forward.name)
        let bytes = packets.bytes(again)
        switch disposition {
        case .out:
            let destination = Array(bytes[0..<6])
            if Array(bytes[6..<12]) != FuzzCluster.uplinkMAC || destination[0] & 1 != 0 || destination == [0, 0, 0, 0, 0, 0] {
                violated("\(forward.name): out from \(bytes[6..<12]) to \(destination)")
            }
            FuzzOutput.derived(input: input.frame, output: bytes)
        case .resolve:
            let arp = bytes.count == 42 || bytes.count == 46
            let ns = bytes.count == 86 || bytes.count == 90
            let ok = (arp && bytes[0..<6].allSatisfy { $0 == 0xff }) || (ns && Array(bytes[0..<3]) == [0x33, 0x33, 0xff])
            if !ok || Array(bytes[6..<12]) != FuzzCluster.uplinkMAC {
                violated("\(forward.name): resolve gave \(bytes.count) bytes to \(bytes.prefix(6))")
            }
            FuzzOutput.built(bytes)
        case .drop:
            break
        }
        packets.release(again)
        packets.checkPool()
        classify.checkTotals()
        forward.checkTotals()
    }

    func checkTable() {
        for (address, mac, _) in runtime.neighbors.entries {
            let m = [mac.bytes.0, mac.bytes.1, mac.bytes.2, mac.bytes.3, mac.bytes.4, mac.bytes.5]
            if m[0] & 1 != 0 || m.allSatisfy({ $0 == 0 }) { violated("neighbour \(address) learned with MAC \(m)") }
            if owned.contains(address.bytes) { violated("neighbour entry for an owned address \(address)") }
        }
    }
}

nonisolated(unsafe) var target: Target?

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    FuzzMain.initialize(target: "neighbors") {
        let s = Seeds.self
        let router = FuzzCluster.routerMAC, router4 = FuzzCluster.ip("198.18.0.1")
        let seeds: [[UInt8]] = [
            Frames.arpRequest(senderMAC: router, senderIP: router4, targetIP: s.host),
            Frames.arpRequest(senderMAC: router, senderIP: router4, targetIP: s.vip, vlan: 10),
            Frames.arpReply(senderMAC: [0x02, 0, 0, 0, 0, 0x12], senderIP: s.peer, targetMAC: FuzzCluster.uplinkMAC, targetIP: s.host),
            Frames.gratuitousARP(senderMAC: [0x02, 0, 0, 0, 0, 0x33], senderIP: FuzzCluster.ip("198.18.0.33")),
            Frames.icmpv6NeighborSolicitation(source: s.router6, target: s.vip6, sourceMAC: router),
            Frames.icmpv6NeighborSolicitation(source: FuzzCluster.ip("fe80::1"), target: s.vip6, sourceMAC: router, vlan: 10),
            Frames.ipv4TCP(source: s.client, destination: FuzzCluster.ip("198.18.0.12"), sourcePort: 1, destinationPort: 2, link: s.toUplink),
            Frames.ipv4TCP(source: s.client, destination: FuzzCluster.ip("198.18.0.77"), sourcePort: 1, destinationPort: 2, link: s.toUplink),
            Frames.ipv6TCP(source: s.client6, destination: FuzzCluster.ip("fd00:18::77"), sourcePort: 1, destinationPort: 2, link: s.toUplink),
            Frames.ipv4UDP(source: s.client, destination: FuzzCluster.ip("203.0.113.9"), sourcePort: 1, destinationPort: 2,
                           link: Frames.Link(source: router, destination: FuzzCluster.uplinkMAC, vlan: 7)),
        ]
        return seeds.map { [0] + $0 } + seeds.map { [2] + $0 }
    }
    target = Target()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let input = FuzzInput(data, size) else { return 0 }
    target!.run(input)
    return 0
}
