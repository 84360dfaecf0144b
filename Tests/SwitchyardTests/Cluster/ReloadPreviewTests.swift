import CDPDK
import OwnershipLookupStage
import SwitchyardCluster
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// `ReloadPreview` against what the data plane does: flows opened through ownership-lookup under
/// one directory, a preview of another, the reload, then every flow closed and opened again.
/// The connections the preview says change pick are exactly those that land elsewhere.
@Suite("reload preview")
struct ReloadPreviewTests {
    static let before = """
        host: 1
        hosts:
          - { id: 1, address: 198.18.0.11 }
          - { id: 2, address: 198.18.0.12 }
        services:
          - name: web
            vip: 198.19.0.1
            port: 80
            backends:
              - { host: 1, address: 198.18.100.10, port: 8080 }
              - { host: 1, address: 198.18.100.11, port: 8080 }
              - { host: 1, address: 198.18.100.12, port: 8080 }
          - name: quiet
            vip: 198.19.0.2
            port: 80
            backends: [{ host: 1, address: 198.18.100.20, port: 8080 }]
        connections: { capacity: 4096 }
        """

    /// A backend on host 2 joins `web`, one backend's weight doubles; `quiet` is unchanged.
    static let after = before.replacingOccurrences(of: """
              - { host: 1, address: 198.18.100.12, port: 8080 }
        """, with: """
              - { host: 1, address: 198.18.100.12, port: 8080, weight: 2 }
              - { host: 2, address: 198.18.101.10, port: 8080 }
        """)

    static let client: [UInt8] = [198, 18, 1, 1]

    static func tcp(_ port: UInt16, vip: [UInt8] = [198, 19, 0, 1], flags: Frames.TCPFlags) -> [UInt8] {
        Frames.ipv4TCP(source: client, destination: vip, sourcePort: port, destinationPort: 80, flags: flags)
    }

    static func harness(_ runtime: ClusterRuntime) throws -> StageHarness<OwnershipLookup> {
        try StageHarness<OwnershipLookup>(sharedCluster: runtime, prepare: { classifyForTest($0, cluster: runtime) })
    }

    /// Client port → where the flow went: "ADDRESS:PORT" of its backend here, or "host N".
    static func placements(_ harness: StageHarness<OwnershipLookup>) -> [UInt16: String] {
        var placed: [UInt16: String] = [:]
        for (frame, meta) in zip(harness.output(.local), harness.outputMeta(.local)) {
            let port = UInt16(frame[34]) << 8 | UInt16(frame[35])
            placed[port] = "\(IPAddress(family: 4, high: meta.target_high, low: meta.target_low)):\(UInt16(bigEndian: meta.target_port))"
        }
        for (frame, meta) in zip(harness.output(.remote), harness.outputMeta(.remote)) {
            placed[UInt16(frame[34]) << 8 | UInt16(frame[35])] = "host \(meta.peer)"
        }
        return placed
    }

    @Test func theConnectionsWhosePickChangesAreThoseThatMoveOnceTheirEntryIsGone() throws {
        let flows = (0..<400).map { UInt16(20000 + $0) }
        let old = try ClusterConfiguration.parse(sectionBody: Self.before, file: "before.yaml")
        let new = try ClusterConfiguration.parse(sectionBody: Self.after, file: "after.yaml")
        TestEAL.start()
        let runtime = try ClusterRuntime(configuration: old, name: "sytest\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        let first = try Self.harness(runtime)
        first.push(flows.map { Self.tcp($0, flags: [.syn]) })
        first.push(flows.map { Self.tcp($0, flags: [.ack]) })
        first.push((0..<50).map { Self.tcp(UInt16(30000 + $0), vip: [198, 19, 0, 2], flags: [.syn]) })
        #expect(runtime.connections.count == 450)
        let before = Self.placements(first)
        try first.finish()

        // The preview, before anything is applied.
        let preview = ReloadPreview(current: runtime.directory, next: ServiceDirectory(new), table: runtime.connections)
        #expect(preview.walked == 450 && preview.unmatched == 0)
        let web = try #require(preview.services.first { $0.name == "web" })
        let quiet = try #require(preview.services.first { $0.name == "quiet" })
        #expect(web.status == "changed" && quiet.status == "unchanged")
        #expect(web.connections == 400 && web.local == 400 && web.remote == 0)
        #expect(quiet.connections == 50 && quiet.pickChangesBackend == 0 && quiet.heldByEntryBackend == 0 && quiet.movedSlotsBackend == 0)
        // Every entry is where the running table put it: held = changed.
        #expect(web.heldByEntryBackend == web.pickChangesBackend && web.heldByEntryHost == web.pickChangesHost)
        #expect(web.heldByState == ["established": web.pickChangesBackend])
        #expect(web.pickChangesBackend > web.pickChangesHost && web.pickChangesHost > 0)

        // The reload: established connections keep their backend.
        let reloaded = ClusterRuntime(reloading: runtime, configuration: new)
        let kept = try Self.harness(reloaded)
        kept.push(flows.map { Self.tcp($0, flags: [.ack]) })
        #expect(kept.counter(.hit) == 400)
        #expect(Self.placements(kept) == before.filter { $0.key < 30000 })
        try kept.finish()

        // Without their entries (closed, opened again), the new table decides.
        let fresh = try Self.harness(reloaded)
        fresh.push(flows.map { Self.tcp($0, flags: [.rst]) })
        #expect(reloaded.connections.count == 50)
        let again = try Self.harness(reloaded)
        again.push(flows.map { Self.tcp($0, flags: [.syn]) })
        let after = Self.placements(again)
        let moved = flows.filter { before[$0] != after[$0] }
        let movedHost = flows.filter { after[$0]!.hasPrefix("host ") }
        #expect(moved.count == web.pickChangesBackend, "preview \(web.pickChangesBackend), moved \(moved.count)")
        #expect(movedHost.count == web.pickChangesHost, "preview \(web.pickChangesHost), moved to host 2 \(movedHost.count)")
        try fresh.finish()
        try again.finish()

        // The hash space: what each backend loses, others gain; shares add up to the whole.
        #expect(web.slots == new.lookupTableSize && web.exact)
        #expect(web.backends.reduce(0) { $0 + $1.slotsLost } == web.movedSlotsBackend)
        #expect(web.backends.reduce(0) { $0 + $1.slotsGained } == web.movedSlotsBackend)
        #expect(web.backends.reduce(0) { $0 + $1.slotsAfter } == web.slots)
        #expect(web.hosts.map(\.hostID) == [1, 2])
        #expect(web.hosts[1].slotsBefore == 0 && web.hosts[1].slotsGained == web.movedSlotsHost)
        let newcomer = try #require(web.backends.first { $0.name == "198.18.101.10:8080" })
        #expect(newcomer.weightBefore == nil && newcomer.weightAfter == 1)
        // Weights 1:1:2:1 → the newcomer takes about a fifth of the hash space.
        #expect(abs(Double(newcomer.slotsAfter) / Double(web.slots) - 0.2) < 0.01)
        // The 400 flows moved in about the share the hash space says.
        #expect(abs(Double(moved.count) / 400 - Double(web.movedSlotsBackend) / Double(web.slots)) < 0.1)
    }

    @Test func aServiceAddedOrRemovedAndATableOfAnotherSize() throws {
        let old = try ClusterConfiguration.parse(sectionBody: Self.before, file: "before.yaml")
        let changed = Self.before.replacingOccurrences(of: "name: quiet", with: "name: loud")
            .replacingOccurrences(of: "198.19.0.2", with: "198.19.0.3") + "\nlookup_table_size: 251"
        let new = try ClusterConfiguration.parse(sectionBody: changed, file: "after.yaml")
        TestEAL.start()
        let runtime = try ClusterRuntime(configuration: old, name: "sytest\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        let preview = ReloadPreview(current: runtime.directory, next: ServiceDirectory(new), table: runtime.connections)
        #expect(preview.services.map(\.name) == ["web", "loud", "quiet"])
        #expect(preview.services.map(\.status) == ["unchanged", "added", "removed"])
        let web = preview.services[0]
        // Another table size: every flow hash is hashed anew, so some flows move although the
        // backends are the same; the shares are sampled.
        #expect(!web.exact && web.slots == ReloadPreview.sampledHashes)
        #expect(web.movedSlotsBackend > 0 && web.movedSlotsHost == 0)
        #expect(preview.services[1].movedSlotsBackend == preview.services[1].slots) // added: every slot is new
        #expect(preview.services[2].backends.first?.slotsLost == preview.services[2].slots)
    }

    /// Entries learned from a peer (state `remote`): counted as remote, held by their owner host.
    @Test func remoteEntriesAreHeldByTheirOwnerHost() throws {
        let twoHosts = """
            host: 1
            hosts:
              - { id: 1, address: 198.18.0.11 }
              - { id: 2, address: 198.18.0.12 }
            services:
              - name: web
                vip: 198.19.0.1
                port: 80
                backends:
                  - { host: 1, address: 198.18.100.10, port: 8080 }
                  - { host: 2, address: 198.18.101.10, port: 8080 }
            connections: { capacity: 4096 }
            """
        let old = try ClusterConfiguration.parse(sectionBody: twoHosts, file: "before.yaml")
        // Host 2's backend drained: every new flow goes to host 1.
        let new = try ClusterConfiguration.parse(sectionBody: twoHosts.replacingOccurrences(
            of: "address: 198.18.101.10, port: 8080 }", with: "address: 198.18.101.10, port: 8080, weight: 0 }"), file: "after.yaml")
        TestEAL.start()
        _ = sy_thread_ensure_lcore()
        let runtime = try ClusterRuntime(configuration: old, name: "sytest\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        let view = runtime.connections.view
        let backend = try #require(IPAddress("198.18.101.10"))
        var pickedHost2 = 0
        for flow in 0..<100 {
            var key = sy_flow_key()
            key.family = 4
            key.protocol = 6
            key.src_port = UInt16(40000 + flow).bigEndian
            key.dst_port = UInt16(80).bigEndian
            withUnsafeMutableBytes(of: &key.src) { $0.copyBytes(from: Self.client) }
            withUnsafeMutableBytes(of: &key.dst) { $0.copyBytes(from: [198, 19, 0, 1] as [UInt8]) }
            let hash = FlowKeys.hash(&key)
            let pick = try #require(runtime.directory.view.pick(service: 0, flowHash: hash))
            if runtime.directory.backends[Int(pick)].hostID == 2 { pickedHost2 += 1 }
            let control = FlowEntry.makeControl(state: .remote, family: 4, owner: 2, backendPortNetworkOrder: UInt16(8080).bigEndian)
            #expect(view.insert(key: &key, hash: sy_flow_hash(view.hash, &key), control: control, backendHigh: backend.high,
                                backendLow: backend.low, now: 0) != nil)
        }
        let preview = ReloadPreview(current: runtime.directory, next: ServiceDirectory(new), table: runtime.connections)
        let web = try #require(preview.services.first)
        #expect(web.connections == 100 && web.remote == 100 && web.local == 0)
        #expect(web.pickChangesHost == pickedHost2 && web.pickChangesBackend == pickedHost2 && pickedHost2 > 0)
        #expect(web.heldByEntryHost == 100 && web.heldByEntryBackend == 100 && web.heldByState == ["remote": 100])
        #expect(web.hosts.map(\.hostID) == [1, 2] && web.hosts[1].slotsAfter == 0)
        #expect(web.movedSlotsHost == web.hosts[1].slotsBefore)
    }
}
