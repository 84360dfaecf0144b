import CDPDK
import OwnershipLookupStage
import SwitchyardCluster
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// Daisy chaining through the previous generation of the tables (docs/gossip.md, "Listener
/// registration"): this host is host 1; `web` has one backend on host 2 in the file, and host 1
/// registers a listener, so the current table gives about half the flows to host 1 while the
/// previous one gave them all to host 2.
@Suite("daisy chaining")
struct DaisyChainTests {
    static let cluster = """
        host: 1
        hosts:
          - { id: 1, address: 198.18.0.11 }
          - { id: 2, address: 198.18.0.12 }
          - { id: 3, address: 198.18.0.13 }
        services:
          - name: web
            vip: 198.19.0.1
            port: 80
            backends: [{ host: 2, address: 198.18.101.10, port: 8080 }]
        connections:
          capacity: 8192
        """
    static let listener = ListenerBook.Listener(vip: IPAddress("198.19.0.1")!, protocolNumber: 6, servicePort: 80,
                                                address: IPAddress("198.18.100.20")!, port: 8080, weight: 1)

    /// The file's runtime, then one with host 1's listener (previous generation: the file's).
    static func runtimes() throws -> (file: ClusterRuntime, listening: ClusterRuntime, book: ListenerBook) {
        TestEAL.start()
        let settings = try ClusterConfiguration.parse(sectionBody: cluster, file: "<daisy>")
        let file = try ClusterRuntime(configuration: settings, name: "sydaisy\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        let book = ListenerBook(localHostID: 1, incarnation: 1)
        try book.listen(listener, source: .ctl)
        let listening = ClusterRuntime(reloading: file, configuration: settings, listeners: book)
        return (file, listening, book)
    }

    static func harness(_ runtime: ClusterRuntime, fromPeer: UInt16 = 0, handedOn: Bool = false) throws -> StageHarness<OwnershipLookup> {
        try StageHarness<OwnershipLookup>(sharedCluster: runtime, prepare: { packet in
            classifyForTest(packet, cluster: runtime, fromPeer: fromPeer)
            if handedOn { packet.meta.pointee.flags |= UInt8(SY_META_HANDED_ON) }
        })
    }

    static func ack(_ port: UInt16) -> [UInt8] {
        Frames.ipv4TCP(source: [198, 18, 1, 1], destination: [198, 19, 0, 1], sourcePort: port, destinationPort: 80, flags: [.ack])
    }

    static func syn(_ port: UInt16) -> [UInt8] {
        Frames.ipv4TCP(source: [198, 18, 1, 1], destination: [198, 19, 0, 1], sourcePort: port, destinationPort: 80, flags: [.syn])
    }

    /// The host the current and the previous table give a flow (by its metadata).
    static func picks(_ meta: sy_meta, _ runtime: ClusterRuntime) -> (current: UInt16, previous: UInt16) {
        let view = runtime.directory.view
        let current = view.pick(service: Int(meta.service) - 1, flowHash: meta.flow_hash).map { view.backends[Int($0)].hostID } ?? 0
        let previous = view.previousPick(service: Int(meta.service) - 1, flowHash: meta.flow_hash)?.pointee.hostID ?? 0
        return (current, previous)
    }

    @Test func theNewTableIsAnotherGenerationAndKeepsThePreviousOne() throws {
        let (file, listening, _) = try Self.runtimes()
        #expect(listening.directory.previous === file.directory)
        #expect(listening.configuration.services[0].backends.count == 2)
        #expect(listening.origins[0] == [.config, .listen(host: 1, version: 1)])
        #expect(listening.fileConfiguration.services[0].backends.count == 1)
    }

    /// A non-SYN without an entry that the new table gives here is handed on to host 2 (the
    /// previous table's choice), marked; none is served here (that would be a misrouted packet).
    @Test func aNonSynWithoutEntryIsHandedOnToThePreviousOwner() throws {
        let (_, listening, _) = try Self.runtimes()
        let harness = try Self.harness(listening)
        harness.push((0..<400).map { Self.ack(UInt16(20000 + $0)) })
        let remote = harness.outputMeta(.remote)
        #expect(harness.output(.local).isEmpty, "no packet of host 2's flows may be served here")
        #expect(remote.count == 400)
        var handedOn = 0
        for meta in remote {
            let picks = Self.picks(meta, listening)
            #expect(meta.peer == 2)
            if picks.current == 1 {
                #expect(meta.flags & UInt8(SY_META_HANDED_ON) != 0)
                handedOn += 1
            } else {
                #expect(meta.flags & UInt8(SY_META_HANDED_ON) == 0)
            }
        }
        #expect(handedOn > 100 && handedOn < 300, "about half the flows move to host 1's listener: \(handedOn)")
        #expect(harness.counter(.daisyChained) == UInt64(handedOn))
        #expect(harness.counter(.missRemote) == UInt64(400 - handedOn))
        try harness.finish()
    }

    /// A SYN is a new flow: it follows the current table (opened here when it picks host 1).
    @Test func aSynFollowsTheCurrentTable() throws {
        let (_, listening, _) = try Self.runtimes()
        let harness = try Self.harness(listening)
        harness.push((0..<200).map { Self.syn(UInt16(21000 + $0)) })
        #expect(harness.counter(.daisyChained) == 0)
        #expect(harness.counter(.opened) == UInt64(harness.output(.local).count))
        #expect(harness.output(.local).count > 50)
        for meta in harness.outputMeta(.local) { #expect(Self.picks(meta, listening).current == 1) }
        try harness.finish()
    }

    /// From a peer (host 3 sent it by the current table): handed on once, FROM_PEER cleared so
    /// that encapsulate sends it, HANDED_ON set. Flows the current table gives host 2 are a
    /// peer loop, as before.
    @Test func aPacketFromAPeerIsHandedOnOnce() throws {
        let (_, listening, _) = try Self.runtimes()
        let harness = try Self.harness(listening, fromPeer: 3)
        harness.push((0..<300).map { Self.ack(UInt16(22000 + $0)) })
        for meta in harness.outputMeta(.remote) {
            #expect(Self.picks(meta, listening).current == 1)
            #expect(meta.peer == 2)
            #expect(meta.flags & UInt8(SY_META_FROM_PEER) == 0 && meta.flags & UInt8(SY_META_HANDED_ON) != 0)
        }
        #expect(harness.counter(.daisyChained) == UInt64(harness.output(.remote).count))
        #expect(harness.counter(.peerLoop) == UInt64(300 - harness.output(.remote).count))
        #expect(harness.output(.local).isEmpty)
        try harness.finish()
    }

    /// The no-loop rule: a packet that was handed on already is never handed on again, whatever
    /// the tables say. It is served here (miss: adopt) or dropped as a peer loop.
    @Test func aHandedOnPacketIsNeverHandedOnAgain() throws {
        let (_, listening, _) = try Self.runtimes()
        let harness = try Self.harness(listening, fromPeer: 2, handedOn: true)
        harness.push((0..<300).map { Self.ack(UInt16(23000 + $0)) })
        #expect(harness.output(.remote).isEmpty)
        #expect(harness.counter(.daisyChained) == 0)
        for meta in harness.outputMeta(.local) { #expect(Self.picks(meta, listening).current == 1) }
        #expect(harness.counter(.adopted) == UInt64(harness.output(.local).count))
        #expect(harness.counter(.peerLoop) == UInt64(300 - harness.output(.local).count))
        try harness.finish()
    }

    /// After `unlisten` (the listener at weight 0), a peer still on the previous table sends host
    /// 1 packets of connections that began under it: host 1 serves them by that table (its withdrawn
    /// listener, whose connections stay). A SYN is never served by the previous table (its backend
    /// may be gone): a peer-loop drop, retransmitted by the client. New flows from its own uplink
    /// follow the current table.
    @Test func aPeerOnThePreviousTableIsServedByItButNeverForANewConnection() throws {
        let (_, listening, book) = try Self.runtimes()
        book.unlisten(Self.listener)
        let settings = listening.fileConfiguration
        let withdrawn = ClusterRuntime(reloading: listening, configuration: settings, listeners: book)
        #expect(withdrawn.configuration.services[0].backends[1].weight == 0)
        let fromPeer = try Self.harness(withdrawn, fromPeer: 2)
        fromPeer.push((0..<300).map { Self.ack(UInt16(24000 + $0)) })
        let served = fromPeer.outputMeta(.local)
        #expect(served.count > 50)
        let backend = Self.listener.address
        for meta in served {
            #expect(Self.picks(meta, withdrawn) == (current: 2, previous: 1))
            #expect(meta.target_high == backend.high && meta.target_port == UInt16(8080).bigEndian)
        }
        #expect(fromPeer.counter(.previousTable) == UInt64(served.count))
        #expect(fromPeer.counter(.adopted) == UInt64(served.count))
        #expect(fromPeer.counter(.peerLoop) == UInt64(300 - served.count))
        let before = fromPeer.counter(.peerLoop)
        fromPeer.push((0..<300).map { Self.syn(UInt16(26000 + $0)) })
        #expect(fromPeer.output(.local).count == served.count, "no SYN is served by the previous table")
        #expect(fromPeer.counter(.peerLoop) == before + 300)
        try fromPeer.finish()

        let uplink = try Self.harness(withdrawn)
        uplink.push((0..<100).map { Self.syn(UInt16(25000 + $0)) })
        #expect(uplink.output(.remote).count == 100 && uplink.counter(.previousTable) == 0)
        try uplink.finish()
    }
}
