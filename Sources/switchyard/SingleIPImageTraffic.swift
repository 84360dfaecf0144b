import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardPcap

/// The traffic of the two-host example: clients' flows to the VIP, which the router spreads over
/// the hosts (ECMP), and the backends' replies. Which host owns a flow is computed here exactly as
/// the hosts compute it (the cluster section's Maglev tables and the flow hash), so every capture
/// holds only what that host would really see:
///
///     host N uplink    every packet of the flows the router sends to host N, owned here or by the
///                      peer (those host N encapsulates), and, as VXLAN from the peer, the packets of
///                      the flows the router sent to the peer but host N owns
///     host N backends  the replies of host N's backends, for every flow host N owns
///
/// Each flow has four packets each way: TCP SYN / SYN-ACK and three data segments, or four UDP
/// datagrams. The captures are replayed forever (`infinite_rx`).
struct SingleIPImageTraffic {
    struct Flow {
        var index: Int
        var service: SingleIPImageExample.Service
        var client: [UInt8]
        var clientPort: UInt16
        /// The host the router sends the flow's packets to.
        var arrivesAt: Int
        /// The host of the backend the flow's consistent hash picks.
        var owner: Int
        var backend: SingleIPImageExample.Backend
    }

    static let flowCount = 256
    static let packetsPerFlow = 4
    let example: SingleIPImageExample
    let flows: [Flow]

    init(example: SingleIPImageExample) throws {
        self.example = example
        let cluster = try ClusterConfiguration.parse(sectionBody: example.clusterSection(host: 1, gossip: false),
                                                     file: "single-ip-image example")
        let directory = ServiceDirectory(cluster)
        let services = SingleIPImageExample.services
        let backends = services.flatMap(\.backends)
        flows = (0..<Self.flowCount).map { index in
            let serviceIndex = index % services.count
            let service = services[serviceIndex]
            let client: [UInt8] = [203, 0, 113, UInt8(1 + index / 2 % 250)]
            let clientPort = UInt16(40000 + index)
            let hash = Self.flowHash(client: client, clientPort: clientPort, service: service)
            let backend = backends[Int(directory.view.pick(service: serviceIndex, flowHash: hash)!)]
            return Flow(index: index, service: service, client: client, clientPort: clientPort,
                        arrivesAt: SingleIPImageExample.hostIDs[index / 2 % 2], owner: backend.host, backend: backend)
        }
    }

    /// The flow hash classify computes (FlowKeys): CRC32-C of the client-side key.
    static func flowHash(client: [UInt8], clientPort: UInt16, service: SingleIPImageExample.Service) -> UInt32 {
        var key = sy_flow_key()
        withUnsafeMutableBytes(of: &key) { raw in
            raw.copyBytes(from: client)
            UnsafeMutableRawBufferPointer(rebasing: raw[16...]).copyBytes(from: SingleIPImageExample.vip)
        }
        key.src_port = clientPort.bigEndian
        key.dst_port = service.port.bigEndian
        key.protocol = service.transport.number
        key.family = 4
        return withUnsafePointer(to: &key) { FlowKeys.hash($0) }
    }

    func owned(by host: Int) -> [Flow] { flows.filter { $0.owner == host } }

    /// The client's `round`-th packet of `flow`, as the router sends it to the host it picked.
    func request(_ flow: Flow, round: Int) -> [UInt8] {
        let link = Frames.Link(source: SingleIPImageExample.router.mac, destination: Frames.netPcapMAC(0))
        let vip = SingleIPImageExample.vip
        switch flow.service.transport {
        case .tcp:
            return Frames.ipv4TCP(source: flow.client, destination: vip, sourcePort: flow.clientPort,
                                  destinationPort: flow.service.port, flags: round == 0 ? [.syn] : [.ack, .psh],
                                  sequence: 1000 + UInt32(round), acknowledgment: round == 0 ? 0 : 5001,
                                  payload: round == 0 ? [] : Array("GET /\(round) HTTP/1.1\r\nHost: vip\r\n\r\n".utf8),
                                  link: link)
        case .udp:
            return Frames.ipv4UDP(source: flow.client, destination: vip, sourcePort: flow.clientPort,
                                  destinationPort: flow.service.port, payload: Array("query \(round)".utf8), link: link)
        }
    }

    /// The backend's `round`-th reply to `flow`, as it arrives on the owner's backends port.
    func reply(_ flow: Flow, round: Int) -> [UInt8] {
        let link = Frames.Link(source: flow.backend.mac, destination: Frames.netPcapMAC(1))
        let body = Array(repeating: UInt8(0x61 + round), count: round == 0 ? 0 : 200)
        switch flow.service.transport {
        case .tcp:
            return Frames.ipv4TCP(source: flow.backend.address, destination: flow.client, sourcePort: flow.backend.port,
                                  destinationPort: flow.clientPort, flags: round == 0 ? [.syn, .ack] : [.ack, .psh],
                                  sequence: 5000 + UInt32(round), acknowledgment: 1001, payload: body, link: link)
        case .udp:
            return Frames.ipv4UDP(source: flow.backend.address, destination: flow.client, sourcePort: flow.backend.port,
                                  destinationPort: flow.clientPort, payload: body, link: link)
        }
    }

    /// `frame` as the peer's encapsulate stage sends it to `host` (outer MACs: both uplinks are net_pcap0).
    func fromPeer(_ frame: [UInt8], flow: Flow, to host: Int) -> [UInt8] {
        Frames.vxlan(outerSource: SingleIPImageExample.address(ofHost: SingleIPImageExample.peer(of: host)),
                     outerDestination: SingleIPImageExample.address(ofHost: host),
                     sourcePort: UInt16(49152 + flow.index), vni: UInt32(SingleIPImageExample.vni), inner: frame,
                     link: Frames.Link(source: Frames.netPcapMAC(0), destination: Frames.netPcapMAC(0)))
    }

    /// Host `host`'s uplink capture, round by round (every flow's first packet before any data).
    func uplink(host: Int) -> [[UInt8]] {
        (0..<Self.packetsPerFlow).flatMap { round in
            flows.compactMap { flow -> [UInt8]? in
                if flow.arrivesAt == host { return request(flow, round: round) }
                if flow.owner == host { return fromPeer(request(flow, round: round), flow: flow, to: host) }
                return nil
            }
        }
    }

    /// Host `host`'s backends capture.
    func backends(host: Int) -> [[UInt8]] {
        (0..<Self.packetsPerFlow).flatMap { round in owned(by: host).map { reply($0, round: round) } }
    }

    /// Writes every capture into the example's directory.
    func write() throws {
        for host in SingleIPImageExample.hostIDs {
            try Pcap.write(uplink(host: host),
                           to: example.path(SingleIPImageExample.captureName(host: host, port: "uplink")))
            try Pcap.write(backends(host: host),
                           to: example.path(SingleIPImageExample.captureName(host: host, port: "backends")))
        }
    }
}
