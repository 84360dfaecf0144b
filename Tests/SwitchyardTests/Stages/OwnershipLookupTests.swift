import CDPDK
import OwnershipLookupStage
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// Host 1 is this host. `here` has its only backend on host 1 (every pick is local), `there` on
/// host 2 (every pick is remote), `udp-here` is a UDP service on host 1.
let ownershipCluster = """
    host: 1
    hosts:
      - { id: 1, address: 198.18.0.11 }
      - { id: 2, address: 198.18.0.12 }
    services:
      - name: here
        vip: 198.19.0.1
        port: 80
        backends: [{ host: 1, address: 198.18.100.10, port: 8080 }]
      - name: there
        vip: 198.19.0.2
        port: 80
        backends: [{ host: 2, address: 198.18.101.10, port: 8080 }]
      - name: udp-here
        vip: 198.19.0.1
        protocol: udp
        port: 53
        backends: [{ host: 1, address: 198.18.100.11, port: 5353 }]
    connections:
      capacity: 4096
      embryonic_share: 0.01
    """

/// Fills sy_meta as classify does, for plain IPv4 TCP/UDP frames without VLAN or options.
func classifyForTest(_ packet: Packet, cluster: ClusterRuntime, fromPeer: UInt16 = 0) {
    let bytes = packet.bytes
    let meta = packet.meta
    meta.pointee.l3 = 14
    meta.pointee.l4 = 34
    meta.pointee.family = 4
    let protocolNumber = bytes.load(fromByteOffset: 23, as: UInt8.self)
    meta.pointee.protocol = protocolNumber
    if protocolNumber == 6 { meta.pointee.tcp_flags = bytes.load(fromByteOffset: 47, as: UInt8.self) }
    let vip = IPAddress(family: 4, at: bytes + 30)
    let port = UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: 36, as: UInt16.self))
    if let service = cluster.directory.view.servicesByTuple.find(vip, protocol: protocolNumber, port: port) {
        meta.pointee.service = UInt16(service + 1)
    }
    if fromPeer != 0 {
        meta.pointee.flags |= UInt8(SY_META_FROM_PEER)
        meta.pointee.peer = fromPeer
    }
    let key = sy_meta_key(meta)!
    FlowKeys.fill(key, frame: bytes, meta: meta)
    meta.pointee.flow_hash = FlowKeys.hash(key)
}

@Suite("ownership-lookup")
struct OwnershipLookupTests {
    let client: [UInt8] = [198, 18, 1, 1]

    func tcp(_ port: UInt16, to vip: [UInt8] = [198, 19, 0, 1], flags: Frames.TCPFlags) -> [UInt8] {
        Frames.ipv4TCP(source: client, destination: vip, sourcePort: port, destinationPort: 80, flags: flags)
    }

    func makeHarness(_ parameters: String = "{}", shared: ClusterRuntime? = nil, fromPeer: UInt16 = 0,
                     burstSize: Int = 32) throws -> StageHarness<OwnershipLookup>
    {
        var runtime: ClusterRuntime?
        let harness = try StageHarness<OwnershipLookup>(
            parameters: parameters, burstSize: burstSize, cluster: shared == nil ? ownershipCluster : nil, sharedCluster: shared,
            prepare: { packet in classifyForTest(packet, cluster: runtime!, fromPeer: fromPeer) })
        runtime = harness.cluster
        return harness
    }

    @Test func synOpensAFlowOwnedHereAndItsLifeFollowsTheTCPFlags() throws {
        let harness = try makeHarness()
        let cluster = try #require(harness.cluster)
        harness.push([tcp(40000, flags: [.syn])])
        #expect(harness.output(.local).count == 1)
        #expect(harness.counter(.opened) == 1)
        #expect(cluster.connections.count == 1)
        #expect(cluster.connections.embryonic == 1)
        let opened = cluster.tick(budget: 0)
        #expect(opened.opened == 1)
        #expect(opened.events.first?.owner == 1)
        #expect(opened.events.first?.backend_port == UInt16(8080).bigEndian)

        harness.push([tcp(40000, flags: [.ack])])
        #expect(harness.counter(.hit) == 1)
        #expect(cluster.connections.embryonic == 0) // established now
        harness.push([tcp(40000, flags: [.fin, .ack])])
        #expect(harness.counter(.closedByFin) == 1)
        #expect(cluster.connections.count == 1) // closing, kept for the last packets
        harness.push([tcp(40000, flags: [.rst])])
        #expect(harness.counter(.closedByRst) == 1)
        #expect(cluster.connections.count == 0)
        let closed = cluster.tick(budget: 0)
        #expect(closed.closed == 1)
        #expect(closed.events.first?.reason == 2)
        #expect(harness.output(.local).count == 4)
        try harness.finish()
    }

    @Test func theBypassTupleIsHandedOnInTheMetadata() throws {
        let harness = try makeHarness()
        harness.push([tcp(40001, flags: [.syn]), tcp(40001, flags: [.ack])])
        let backend = try #require(IPAddress("198.18.100.10"))
        for meta in harness.outputMeta(.local) {
            #expect(meta.has_target == 1)
            #expect(meta.target_high == backend.high)
            #expect(meta.target_port == UInt16(8080).bigEndian)
        }
        #expect(harness.outputMeta(.local).count == 2)
        try harness.finish()
    }

    @Test func aNewFlowWhoseBackendIsOnAPeerGoesThereWithoutAnEntry() throws {
        let harness = try makeHarness()
        harness.push([tcp(40002, to: [198, 19, 0, 2], flags: [.syn]), tcp(40002, to: [198, 19, 0, 2], flags: [.ack])])
        #expect(harness.output(.remote).count == 2)
        #expect(harness.counter(.forwardedNew) == 1)
        #expect(harness.counter(.missRemote) == 1)
        #expect(harness.cluster!.connections.count == 0)
        try harness.finish()
    }

    @Test func newFlowRemoteCountsNewConnectionsAndMissRemoteTheirOtherPackets() throws {
        let harness = try makeHarness()
        // 23 remote connections of 4 packets each (SYN, ACK, data, FIN): 23 new flows, 69 other packets.
        for flow in 0..<23 {
            let port = UInt16(41000 + flow)
            harness.push([tcp(port, to: [198, 19, 0, 2], flags: [.syn]), tcp(port, to: [198, 19, 0, 2], flags: [.ack]),
                          tcp(port, to: [198, 19, 0, 2], flags: [.psh, .ack]), tcp(port, to: [198, 19, 0, 2], flags: [.fin, .ack])])
        }
        #expect(harness.output(.remote).count == 92)
        #expect(harness.counter(.forwardedNew) == 23)
        #expect(harness.counter(.missRemote) == 69)
        // A SYN flood towards a peer's service: one new flow per SYN, nothing else.
        harness.push((0..<200).map { tcp(20000 + UInt16($0), to: [198, 19, 0, 2], flags: [.syn]) })
        #expect(harness.counter(.forwardedNew) == 223)
        #expect(harness.counter(.missRemote) == 69)
        try harness.finish()
    }

    @Test func everyICMPErrorIsCountedWhereverItGoes() throws {
        let plain = try makeHarness()
        let cluster = try #require(plain.cluster)
        // An ICMP error about a flow: classify marks it and fills the quoted flow's key (here: the frame's own).
        let errors = try StageHarness<OwnershipLookup>(sharedCluster: cluster, prepare: { packet in
            classifyForTest(packet, cluster: cluster)
            packet.meta.pointee.flags |= UInt8(SY_META_ICMP_ERROR)
        })
        plain.push([tcp(42000, flags: [.syn])])
        // Owned here with an entry (hit) and without (miss); owned by a peer (two misses).
        errors.push([tcp(42000, flags: [.ack]), tcp(42002, flags: [.ack]), tcp(42001, to: [198, 19, 0, 2], flags: [.ack]),
                     tcp(42003, to: [198, 19, 0, 2], flags: [.ack])])
        #expect(errors.output(.local).count == 2)
        #expect(errors.output(.remote).count == 2)
        #expect(errors.counter(.icmpError) == 4)
        #expect(errors.counter(.forwardedNew) == 0)
        #expect(errors.counter(.missRemote) == 2)
        try plain.finish()
        try errors.finish()
    }

    /// rte_hash looks up at most 64 keys per call (and checks it only in debug builds): a burst of
    /// 256 (the largest `burst_size`) is looked up in parts, and every packet finds its entry.
    @Test func burstsOfTheLargestSizeFindEveryEntry() throws {
        let harness = try makeHarness(burstSize: maximumBurstSize)
        let flows = (0..<maximumBurstSize).map { tcp(UInt16(42000 + $0), flags: [.ack]) }
        harness.push(flows)
        #expect(harness.counter(.adopted) == UInt64(maximumBurstSize))
        #expect(harness.cluster!.connections.count == maximumBurstSize)
        harness.push(flows)
        #expect(harness.counter(.hit) == UInt64(maximumBurstSize))
        #expect(harness.output(.local).count == 2 * maximumBurstSize)
        try harness.finish()
    }

    @Test func missPolicyAdoptRecordsAnEstablishedFlowAndDropRefusesIt() throws {
        let adopt = try makeHarness()
        adopt.push([tcp(40003, flags: [.ack])])
        #expect(adopt.output(.local).count == 1)
        #expect(adopt.counter(.adopted) == 1)
        #expect(adopt.cluster!.connections.count == 1)
        #expect(adopt.cluster!.connections.embryonic == 0)
        try adopt.finish()

        let strict = try makeHarness("miss: drop")
        strict.push([tcp(40004, flags: [.ack]), tcp(40005, flags: [.syn])])
        #expect(strict.output(.drop).count == 1)
        #expect(strict.counter(.missDropped) == 1)
        #expect(strict.output(.local).count == 1)
        try strict.finish()
    }

    @Test func anEntryOwnedByAPeerWinsOverTheLocalPickAndPeerTrafficNeverLoops() throws {
        let harness = try makeHarness()
        let cluster = try #require(harness.cluster)
        // The control plane (gossip) learned that host 2 owns this flow.
        let frame = tcp(40006, flags: [.ack])
        let learner = try StageHarness<Recorder>(sharedCluster: cluster, prepare: { packet in
            classifyForTest(packet, cluster: cluster)
            var key = sy_flow_key()
            FlowKeys.fill(&key, frame: packet.bytes, meta: packet.meta)
            let control = FlowEntry.makeControl(state: .remote, family: 4, owner: 2, backendPortNetworkOrder: 0)
            _ = cluster.connections.view.insert(key: &key, hash: packet.meta.pointee.flow_hash, control: control,
                                                backendHigh: 0, backendLow: 0, now: sy_rdtsc())
        })
        learner.push([frame])
        try learner.finish()
        harness.push([frame])
        #expect(harness.output(.remote).count == 1)

        let fromPeer = try makeHarness(shared: cluster, fromPeer: 3)
        fromPeer.push([frame])
        #expect(fromPeer.output(.drop).count == 1)
        #expect(fromPeer.counter(.peerLoop) == 1)
        try harness.finish()
        try fromPeer.finish()
    }

    @Test func establishedFlowsKeepTheirBackendWhenTheBackendSetChanges() throws {
        let harness = try makeHarness()
        let before = try #require(harness.cluster)
        harness.push([tcp(40007, to: [198, 19, 0, 2], flags: [.syn])]) // remote now: backend on host 2
        harness.push([tcp(40008, flags: [.syn])])                       // local: backend on host 1
        // Reload: service `here` moves to host 2, `there` to host 1.
        let moved = ownershipCluster
            .replacingOccurrences(of: "[{ host: 1, address: 198.18.100.10", with: "[{ host: 2, address: 198.18.100.10")
            .replacingOccurrences(of: "[{ host: 2, address: 198.18.101.10", with: "[{ host: 1, address: 198.18.101.10")
        let reloaded = ClusterRuntime(reloading: before,
                                      configuration: try ClusterConfiguration.parse(sectionBody: moved, file: "reload"))
        let after = try makeHarness(shared: reloaded)
        after.push([tcp(40008, flags: [.ack])]) // has an entry: stays local, with the old backend
        #expect(after.output(.local).count == 1)
        after.push([tcp(40009, flags: [.syn])]) // new flow: follows the new set, to host 2
        #expect(after.output(.remote).count == 1)
        try harness.finish()
        try after.finish()
    }

    @Test func aSynFloodCannotCrowdOutEstablishedConnections() throws {
        let harness = try makeHarness()
        let cluster = try #require(harness.cluster)
        harness.push((0..<20).map { tcp(1000 + UInt16($0), flags: [.syn]) })
        harness.push((0..<20).map { tcp(1000 + UInt16($0), flags: [.ack]) }) // 20 established
        let limit = Int(Double(4096) * 0.01)
        harness.push((0..<500).map { tcp(20000 + UInt16($0), flags: [.syn]) }) // the flood
        #expect(cluster.connections.embryonic == UInt64(limit))
        #expect(harness.counter(.stateless) >= UInt64(500 - limit))
        #expect(harness.output(.local).count == 540) // every flood SYN is still served, statelessly
        let hitsBefore = harness.counter(.hit)
        harness.push((0..<20).map { tcp(1000 + UInt16($0), flags: [.ack]) })
        #expect(harness.counter(.hit) == hitsBefore + 20)
        // The flood's embryonic entries expire after the SYN timeout; established ones stay.
        let later = sy_rdtsc() + UInt64(6 * Double(sy_tsc_hz()))
        let tick = cluster.tick(now: later, budget: 1 << 20)
        #expect(tick.expired == limit)
        #expect(cluster.connections.count == 20)
        try harness.finish()
    }

    @Test func udpFlowsOpenOnTheirFirstDatagramAndExpireWhenIdle() throws {
        let harness = try makeHarness()
        let cluster = try #require(harness.cluster)
        let datagram = Frames.ipv4UDP(source: client, destination: [198, 19, 0, 1], sourcePort: 5000, destinationPort: 53,
                                      payload: Array("query".utf8))
        harness.push([datagram, datagram])
        #expect(harness.counter(.opened) == 1)
        #expect(harness.counter(.hit) == 1)
        _ = cluster.tick(budget: 0)
        let tick = cluster.tick(now: sy_rdtsc() + UInt64(61 * Double(sy_tsc_hz())), budget: 1 << 20)
        #expect(tick.expired == 1)
        #expect(tick.closed == 1)
        #expect(tick.events.first?.reason == 3)
        try harness.finish()
    }

    @Test func theFlowHashIsTheTablesOwnHashAndDPDKsCRC() throws {
        let harness = try makeHarness()
        let table = harness.cluster!.connections.hash
        var key = sy_flow_key()
        for seed in 0..<64 {
            withUnsafeMutableBytes(of: &key) { bytes in
                for index in 0..<40 { bytes[index] = UInt8(truncatingIfNeeded: seed &* 31 &+ index &* 7) }
            }
            #expect(FlowKeys.hash(&key) == sy_flow_hash(table, &key))
            #expect(FlowKeys.hash(&key) == rte_hash_crc(&key, 40, 0)) // same values as DPDK's own CRC
        }
    }

    /// classify's common case hashes the key from registers: the same value as the key in memory.
    @Test func theFlowHashFromRegistersIsTheKeysHash() {
        for seed in 0..<256 {
            let word = { (n: Int) -> UInt64 in UInt64(seed &+ 1) &* 0x9e37_79b9_7f4a_7c15 &* UInt64(n &+ 3) }
            let client = UInt32(truncatingIfNeeded: word(0)), vip = UInt32(truncatingIfNeeded: word(1))
            let ports = UInt32(truncatingIfNeeded: word(2)), protocolNumber: UInt8 = seed % 2 == 0 ? 6 : 17
            var key = sy_flow_key()
            FlowKeys.fillZeroed(&key, ipv4Client: client, vip: vip, ports: ports, protocolNumber: protocolNumber)
            #expect(FlowKeys.hash(ipv4Client: client, vip: vip, ports: ports, protocolNumber: protocolNumber)
                == rte_hash_crc(&key, 40, 0))
            var key6 = sy_flow_key()
            FlowKeys.fillZeroed(&key6, ipv6ClientHigh: word(3), clientLow: word(4), vipHigh: word(5), vipLow: word(6),
                                ports: ports, protocolNumber: protocolNumber)
            #expect(FlowKeys.hash(ipv6ClientHigh: word(3), clientLow: word(4), vipHigh: word(5), vipLow: word(6),
                                  ports: ports, protocolNumber: protocolNumber) == rte_hash_crc(&key6, 40, 0))
        }
    }

    @Test func packetsClassifyDidNotMarkAsVIPFlowsAreDropped() throws {
        let harness = try makeHarness()
        harness.push([Frames.ipv4TCP(source: client, destination: [198, 18, 9, 9], sourcePort: 1, destinationPort: 80)])
        #expect(harness.counter(.notClassified) == 1)
        try harness.finish()
    }
}

/// A stage that passes everything: lets a test run `prepare` code on real mbufs.
struct Recorder: Stage {
    enum Disposition: UInt8, StageDisposition { case drop, out }
    static let kind = "recorder"
    static let summary = "test: passes every packet"
    init(parameters: NoParameters, context: StageContext) {}
    mutating func process(_ burst: PacketBurst, _ out: BurstOutput<Recorder>) { out.sendAll(burst.count, to: .out) }
}
