import Foundation
import SwitchyardCluster

/// The embedded default of `switchyard run`: two hosts of one cluster on this machine, each
/// running the whole single-IP-image pipeline (docs/configuration.md, "The single-IP-image
/// pipeline"; the same stages and wiring as Tests/Golden/host1/config.yaml) on virtual devices.
///
///     clients ──► VIP 198.19.0.1 (web tcp/80, dns udp/53); each service has one backend per host
///
///     host 1 (198.18.0.11)                                 host 2 (198.18.0.12)
///     uplink    net_pcap0 rx: clients (half the flows),     the same for the other half
///               and VXLAN from host 2 (its flows we own)
///     backends  net_pcap1 rx: our backends' replies         our backends' replies
///     exception net_null0                                   net_null0
///     control thread ◄──── gossip: UDP, 127.0.0.1:P1 ◄──► 127.0.0.1:P2 ────► control thread
///
/// Transmitted packets are dropped by the devices (net_pcap without `tx_pcap`, net_null), after
/// the engine counted them as sent. Each host is its own `switchyard run --config hostN.yaml`
/// process: DPDK's EAL starts once per process.
struct SingleIPImageExample {
    struct Backend {
        var host: Int
        var address: [UInt8]
        var port: UInt16
        var mac: [UInt8]
    }

    struct Service {
        var name: String
        var transport: TransportProtocol
        var port: UInt16
        var backends: [Backend]
    }

    static let hostIDs = [1, 2]
    static let vip: [UInt8] = [198, 19, 0, 1]
    static let router: (address: [UInt8], mac: [UInt8]) = ([198, 18, 0, 1], [2, 0, 0, 0, 0, 1])
    static let vni = 7
    static let services = [
        Service(name: "web", transport: .tcp, port: 80, backends: [
            Backend(host: 1, address: [198, 18, 100, 10], port: 8080, mac: [2, 0, 0, 0, 0x10, 0x10]),
            Backend(host: 2, address: [198, 18, 101, 10], port: 8080, mac: [2, 0, 0, 0, 0x11, 0x10]),
        ]),
        Service(name: "dns", transport: .udp, port: 53, backends: [
            Backend(host: 1, address: [198, 18, 100, 11], port: 5353, mac: [2, 0, 0, 0, 0x10, 0x11]),
            Backend(host: 2, address: [198, 18, 101, 11], port: 5353, mac: [2, 0, 0, 0, 0x11, 0x11]),
        ]),
    ]

    /// A host's uplink address (tunnels go to it).
    static func address(ofHost id: Int) -> [UInt8] { [198, 18, 0, UInt8(10 + id)] }
    static func peer(of host: Int) -> Int { host == 1 ? 2 : 1 }
    static func fileName(host: Int) -> String { "host\(host).yaml" }
    static func captureName(host: Int, port: String) -> String { "host\(host)-\(port).pcap" }
    static let keyFileName = "gossip.key"

    /// Where the captures and the key are: configuration paths are `directory/NAME` (bare names when empty).
    var directory: String
    /// Each host's gossip UDP port on 127.0.0.1, by host id (7946, 7947 when empty).
    var gossipPorts: [Int: Int]
    /// Each host's Prometheus TCP port on 127.0.0.1 (9101, 9102 when empty).
    var metricsPorts: [Int: Int]
    /// CPUs of the machine (the placement below depends on it).
    var cpuCount: Int
    /// Each host's engine name (`name:`, and so its control socket); `example-hostN` when empty.
    var names: [Int: String] = [:]

    func name(ofHost host: Int) -> String { names[host] ?? Self.defaultName(host: host) }
    static func defaultName(host: Int) -> String { "example-host\(host)" }

    func path(_ name: String) -> String { directory.isEmpty ? name : directory + "/" + name }

    /// CPUs of a host's control thread (lcore 0) and its one worker lcore. The captures replay
    /// forever, so each worker polls one CPU at 100 %. With 2 or 3 CPUs, host 1's worker takes CPU 1
    /// and host 2's CPU 0, and each control thread (gossip, connection events, every 10 ms) sits on
    /// the other host's worker CPU, where the kernel's scheduler gives a thread that mostly sleeps
    /// the CPU as soon as it wakes: no worker shares a CPU with the other worker. From 4 CPUs on,
    /// every thread has its own CPU. `idle: backoff` lets an lcore sleep when its ports are quiet.
    static func placement(host: Int, cpus: Int) -> (control: Int, worker: Int) {
        switch cpus {
        case ..<2: (0, 0)
        case 2...3: host == 1 ? (0, 1) : (1, 0)
        default: host == 1 ? (0, 1) : (2, 3)
        }
    }

    /// The body of host `host`'s `cluster:` section (ClusterConfiguration.parse(sectionBody:) format).
    /// Without `gossip`, it has no gossip section (what the traffic generator parses).
    func clusterSection(host: Int, gossip: Bool = true) -> String {
        var lines = ["host: \(host)", "hosts:"]
        for id in Self.hostIDs { lines.append("  - { id: \(id), address: \(text(Self.address(ofHost: id))) }") }
        lines.append("tunnel: { kind: vxlan, port: 4789, vni: \(Self.vni) }")
        lines.append("services:")
        for service in Self.services {
            lines += ["  - name: \(service.name)", "    vip: \(text(Self.vip))",
                      "    protocol: \(service.transport.rawValue)", "    port: \(service.port)", "    backends:"]
            for backend in service.backends {
                lines.append("      - { host: \(backend.host), address: \(text(backend.address)), port: \(backend.port) }")
            }
        }
        lines.append("connections: { capacity: 65536 }")
        if gossip {
            lines += ["gossip:                        # connection ownership, HMAC-authenticated UDP",
                      "  key_file: \(path(Self.keyFileName))",
                      "  members:                     # gossip runs on loopback, not on the hosts' uplink addresses"]
            for id in Self.hostIDs {
                lines.append("    - { host: \(id), address: 127.0.0.1, port: \(gossipPorts[id] ?? 7945 + id) }")
            }
        }
        return lines.joined(separator: "\n")
    }

    /// Host `host`'s whole configuration file.
    func configuration(host: Int) -> String {
        let (control, worker) = Self.placement(host: host, cpus: cpuCount)
        let peer = Self.peer(of: host)
        let backendNeighbors = Self.services.flatMap(\.backends).filter { $0.host == host }
            .map { "      - { address: \(text($0.address)), mac: \"\(Self.text(mac: $0.mac))\" }" }
            .joined(separator: "\n")
        let cluster = clusterSection(host: host).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")
        return """
            # Switchyard example: host \(host) of a two-host cluster, the whole single-IP-image pipeline on
            # virtual devices. Host \(peer) runs the same file with `host: \(peer)` and its own captures.
            #
            #  uplink rx ─► classify ─vip──► fragments ─flow─► owner ─local──► translate-in ─► to-backends ─► port:backends
            #                  │                                  └─remote──► encap ─► to-uplink ─► port:uplink  (VXLAN to the owner)
            #                  ├─tunnel─► decap ─► classify-tunnel ─vip─► fragments          (VXLAN from the peer)
            #                  ├─answer─► port:uplink          (ARP, ND and echo replies)
            #                  ├─local, other─► port:exception (the host's own traffic, for the kernel)
            #                  └─reply──► drop                 (side: uplink: never a reply from here)
            #  backends rx ─► classify-backends ─reply─► translate-out ─► to-uplink ─► port:uplink
            #                 (side: backends)
            name: \(name(ofHost: host))          # the control socket: /run/switchyard/\(name(ofHost: host)).sock
            metrics: { listen: 127.0.0.1:\(metricsPorts[host] ?? 9100 + host) }
            eal:
              hugepages: auto              # hugepages when reserved, else --no-huge
              memory_mb: 256
              control_cpu: \(control)
            ports:
              - name: uplink               # the router's side: clients' packets to the VIP, VXLAN from host \(peer)
                device: net_pcap0,rx_pcap=\(path(Self.captureName(host: host, port: "uplink"))),infinite_rx=1
              - name: backends             # this host's backends: their replies
                device: net_pcap1,rx_pcap=\(path(Self.captureName(host: host, port: "backends"))),infinite_rx=1
              - name: exception            # a net_tap port into the kernel on a real host
                device: net_null0
                rx_queues: 0
            stages:                        # the golden pipeline (Tests/Golden/host1/config.yaml), neighbours aside
              - name: classify
                kind: classify
                filter_mac: true             # only frames for this port's MAC (02:70:63:61:70:00), broadcast, multicast
                side: uplink                 # the default: a packet from a bypass tuple here is dropped, never a reply
                fragments: vip               # TCP/UDP fragments to a VIP go on, for the fragments stage
                next: { vip: fragments, reply: drop, tunnel: decap, answer: port:uplink,
                        local: port:exception, other: port:exception }
              - name: decap
                kind: decapsulate
                next: { inner: classify-tunnel }
              - name: classify-tunnel
                kind: classify
                input: tunnel
                fragments: vip
                next: { vip: fragments, reply: drop, tunnel: drop, answer: drop, local: drop, other: drop }
              - name: fragments
                kind: fragments              # later fragments get their first fragment's flow (held briefly if early)
                next: { flow: owner }
              - name: owner
                kind: ownership-lookup
                next: { local: translate-in, remote: encap }
              - name: translate-in
                kind: tuple-translate
                next: { out: to-backends }
              - name: to-backends
                kind: forward
                port: backends
                neighbors:
            \(backendNeighbors)
                next: { out: port:backends, resolve: port:backends }
              - name: encap
                kind: encapsulate
                mtu: 1500
                next: { out: to-uplink, too-big: to-uplink }
              - name: classify-backends
                kind: classify
                filter_mac: true
                side: backends               # replies from the bypass tuples are translated back to the VIP here only
                next: { vip: drop, reply: translate-out, tunnel: drop, answer: port:backends,
                        local: port:exception, other: port:exception }
              - name: translate-out
                kind: tuple-translate
                next: { out: to-uplink }
              - name: to-uplink
                kind: forward
                port: uplink
                routes:
                  - { prefix: 198.18.0.0/24 }                 # the hosts' segment: directly connected
                  - { prefix: 0.0.0.0/0, via: \(text(Self.router.address)) }    # everything else through the router
                  - { prefix: "::/0", via: "fd00:18::1" }
                neighbors:
                  - { address: \(text(Self.router.address)), mac: "\(Self.text(mac: Self.router.mac))" }
                  - { address: \(text(Self.address(ofHost: peer))), mac: "02:70:63:61:70:00" }  # host \(peer)'s uplink (net_pcap0 in its process)
                next: { out: port:uplink, resolve: port:uplink }
            lcores:
              - id: 1
                cpu: \(worker)
                idle: backoff
                idle_sleep_us: 100
                poll:
                  - { port: uplink, queue: 0, to: classify }
                  - { port: backends, queue: 0, to: classify-backends }
            cluster:
            \(cluster)

            """
    }

    private func text(_ address: [UInt8]) -> String { address.map(String.init).joined(separator: ".") }
    static func text(mac: [UInt8]) -> String { mac.map { String(format: "%02x", $0) }.joined(separator: ":") }
}
