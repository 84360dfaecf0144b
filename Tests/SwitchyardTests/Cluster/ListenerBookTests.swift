import SwitchyardCluster
import SwitchyardGossip
import SwitchyardTesting
import Testing

/// The ordering rule of listener registration (docs/gossip.md, "Listener registration"): each
/// host's set is versioned (incarnation, version); a newer one replaces the held one, an older or
/// equal one changes nothing; so every host ends with the same sets and the same tables whatever
/// the order and loss of the messages.
@Suite("listener book")
struct ListenerBookTests {
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
            backends: [{ host: 1, address: 198.18.100.10, port: 8080 }]
          - name: dns
            vip: 198.19.0.1
            protocol: udp
            port: 53
            backends: []
        """

    static func web(_ last: UInt8, weight: UInt16 = 1) -> ListenerBook.Listener {
        ListenerBook.Listener(vip: IPAddress("198.19.0.1")!, protocolNumber: 6, servicePort: 80,
                              address: IPAddress(bytes: [198, 18, 100, last]), port: 8080, weight: weight)
    }

    static func set(_ incarnation: UInt64, _ version: UInt64, _ listeners: [ListenerBook.Listener]) -> ListenerBook.ListenerSet {
        ListenerBook.ListenerSet(incarnation: incarnation, version: version, listeners: listeners)
    }

    @Test func aNewerVersionReplacesAnOlderOrEqualOneChangesNothing() {
        let book = ListenerBook(localHostID: 1, incarnation: 100)
        #expect(book.apply(host: 2, set: Self.set(50, 2, [Self.web(20)])) == .applied)
        #expect(book.apply(host: 2, set: Self.set(50, 1, [Self.web(21)])) == .stale)
        #expect(book.apply(host: 2, set: Self.set(50, 2, [Self.web(22)])) == .stale, "same version: nothing changes")
        #expect(book.sets[2]?.listeners == [Self.web(20)])
        // A restart: a higher incarnation wins even with a lower version.
        #expect(book.apply(host: 2, set: Self.set(60, 1, [])) == .applied)
        #expect(book.sets[2]?.listeners == [])
        #expect(book.apply(host: 2, set: Self.set(50, 9, [Self.web(23)])) == .stale, "an older incarnation never comes back")
        #expect(book.staleSets == 3)
        #expect(book.apply(host: 1, set: Self.set(999, 9, [Self.web(24)])) == .stale, "nobody else writes this host's set")
    }

    @Test func listenUnlistenAndPurgeEachMakeOneVersion() throws {
        let book = ListenerBook(localHostID: 1, incarnation: 100)
        #expect(try book.listen(Self.web(20), source: .ctl))
        #expect(book.own.version == 1)
        #expect(try book.listen(Self.web(20), source: .ctl) == false, "the same again: no new version")
        #expect(try book.listen(Self.web(20, weight: 3), source: .ctl))
        #expect(book.own.version == 2 && book.own.listeners == [Self.web(20, weight: 3)])
        #expect(book.unlisten(Self.web(20)) != nil)
        #expect(book.own.version == 3 && book.own.listeners.first?.withdrawn == true)
        #expect(book.own.listeners.first?.effectiveWeight == 0)
        #expect(book.unlisten(Self.web(20)) == nil, "withdrawn already")
        #expect(book.purge(Self.web(20)))
        #expect(book.own.version == 4 && book.own.listeners.isEmpty)
        #expect(book.changes == 4)
    }

    @Test func aReloadOfTheFileKeepsCtlListenersAndWithdrawsDroppedFileOnes() throws {
        let book = ListenerBook(localHostID: 1, incarnation: 100)
        book.replaceOwn(from: .file, with: [Self.web(30), Self.web(31)])
        try book.listen(Self.web(40), source: .ctl)
        book.replaceOwn(from: .file, with: [Self.web(31)])
        let own = book.own.listeners
        #expect(own.count == 3)
        #expect(own.first { $0.address == Self.web(30).address }?.withdrawn == true)
        #expect(own.first { $0.address == Self.web(31).address }?.withdrawn == false)
        #expect(book.sources[Self.web(40)] == .ctl)
    }

    /// Every order of the same messages (some duplicated, older ones late) gives the same book:
    /// same generation, same digest, same effective services.
    @Test func everyOrderOfTheMessagesGivesTheSameDirectory() throws {
        let settings = try ClusterConfiguration.parse(sectionBody: Self.cluster, file: "<book>")
        let messages: [(UInt16, ListenerBook.ListenerSet)] = [
            (2, Self.set(10, 1, [Self.web(20)])),
            (2, Self.set(10, 2, [Self.web(20, weight: 2), Self.web(21)])),
            (3, Self.set(11, 1, [Self.web(30)])),
            (3, Self.set(11, 2, [Self.web(30), Self.web(10)])), // 198.18.100.10:8080 is the file's: left out
            (2, Self.set(10, 3, [Self.web(21)])),
        ]
        var reference: (digest: UInt64, generation: String, backends: [String])?
        var orders = 0
        func permutations(_ items: [Int]) -> [[Int]] {
            guard items.count > 1 else { return [items] }
            return items.indices.flatMap { i in
                permutations(Array(items[..<i] + items[(i + 1)...])).map { [items[i]] + $0 }
            }
        }
        for order in permutations(Array(messages.indices)) {
            let book = ListenerBook(localHostID: 1, incarnation: 100)
            // Each message may arrive twice (a retransmission after loss): apply every one again at the end.
            for index in order + order.reversed() { book.apply(host: messages[index].0, set: messages[index].1) }
            let effective = settings.adding(listeners: book)
            let backends = effective.configuration.services[0].backends.map { "\($0.hostID) \($0.address):\($0.port) w\($0.weight)" }
            let result = (book.digest, book.generationText, backends)
            if let reference {
                #expect(result.0 == reference.digest && result.1 == reference.generation && result.2 == reference.backends)
            } else {
                reference = result
                #expect(effective.skipped.count == 1 && effective.skipped.first?.host == 3)
            }
            orders += 1
        }
        #expect(orders == 120)
        #expect(reference?.generation == "1:0 2:3 3:2")
        #expect(reference?.backends == ["1 198.18.100.10:8080 w1", "2 198.18.100.21:8080 w1", "3 198.18.100.30:8080 w1"])
    }

    /// Hosts build the same Maglev table from the same book, in whatever order listeners came.
    @Test func theTablesDependOnTheSetsOnlyNotOnTheOrderOfRegistration() throws {
        TestEAL.start()
        let settings = try ClusterConfiguration.parse(sectionBody: Self.cluster, file: "<book>")
        let a = ListenerBook(localHostID: 1, incarnation: 100)
        try a.listen(Self.web(20), source: .ctl)
        try a.listen(Self.web(21), source: .ctl)
        let b = ListenerBook(localHostID: 1, incarnation: 100)
        try b.listen(Self.web(21), source: .ctl)
        try b.listen(Self.web(20), source: .ctl)
        let ta = ServiceDirectory(settings.adding(listeners: a).configuration)
        let tb = ServiceDirectory(settings.adding(listeners: b).configuration)
        for slot in 0..<ta.lookupTableSize { #expect(ta.services[0].lookup![slot] == tb.services[0].lookup![slot]) }
        #expect(ta.services[1].lookup == nil, "a service without backends picks none (no-backend)")
    }

    @Test func aListenersMessageRoundTrips() throws {
        let withdrawn = ListenerBook.Listener(vip: IPAddress("fd00:19::1")!, protocolNumber: 17, servicePort: 53,
                                              address: IPAddress("fd00:100::53")!, port: 5353, weight: 7, withdrawn: true)
        var down = Self.web(21, weight: 3)
        down.down = true
        let body = GossipBody.listeners(ListenerAnnouncement(version: 42, listeners: [Self.web(20, weight: 9), down, withdrawn]))
        let authenticator = GossipAuthenticator(key: [UInt8](repeating: 7, count: 32))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 8)
        defer { buffer.deallocate() }
        let header = GossipHeader(kind: GossipKind.listeners.rawValue, sender: 2, incarnation: 5, sequence: 1, timestamp: 0)
        let length = try #require(GossipCodec.encode(body, header: header, authenticator: authenticator, into: buffer))
        #expect(length == 32 + 12 + 18 + 18 + 42 + 32)
        let decoded = GossipCodec.decode(UnsafeRawBufferPointer(rebasing: buffer[0..<length]), authenticator: authenticator)
        guard case .success(let message) = decoded else { Issue.record("\(decoded)"); return }
        #expect(message.body == body)
        // A reserved bit set is malformed.
        buffer[32 + 12 + 2] |= 4
        let resigned = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
        authenticator.sign(resigned.baseAddress!, length: length - 32)
        guard case .failure(.malformed) = GossipCodec.decode(UnsafeRawBufferPointer(resigned), authenticator: authenticator) else {
            Issue.record("a reserved flag must be malformed"); return
        }
    }

    /// `cluster.listen`: this host's listeners at start; errors name the item, key and line.
    @Test func clusterListenIsParsedStrictly() throws {
        let good = try ClusterConfiguration.parse(sectionBody: Self.cluster + """

            listen:
              - { service: web, address: 198.18.100.20, weight: 3 }
              - { service: dns, address: 198.18.100.53, port: 5353 }
            """, file: "x.yaml")
        #expect(good.listen == [ListenSettings(service: "web", address: IPAddress("198.18.100.20")!, port: 80, weight: 3, line: 18),
                                ListenSettings(service: "dns", address: IPAddress("198.18.100.53")!, port: 5353, weight: 1, line: 19)])
        let cases: [(String, String)] = [
            ("  - { service: wbe, address: 198.18.100.20 }", "x.yaml:18:18: cluster listen #1: key 'service': no service 'wbe' (services: web, dns)"),
            ("  - { service: web, address: 198.18.100.10, port: 8080 }", "cluster listen #1: key 'address': 198.18.100.10 port 8080 is already a backend of 'web' in cluster.services"),
            ("  - { service: web, address: fd00::1 }", "cluster listen #1: key 'address': the VIP of 'web' is IPv4 but this address is IPv6"),
            ("  - { service: web, address: 198.18.100.20 }\n  - { service: web, address: 198.18.100.20 }", "cluster listen #2: key 'address': 198.18.100.20 port 80 is already listed (line 18)"),
            ("  - { service: web, address: 198.18.100.20, colour: blue }", "cluster listen #1: key 'colour'"),
        ]
        for (items, message) in cases {
            #expect {
                _ = try ClusterConfiguration.parse(sectionBody: Self.cluster + "\nlisten:\n" + items, file: "x.yaml")
            } throws: { error in
                "\(error)".contains(message) || { print("got: \(error)"); return false }()
            }
        }
    }
}

/// Health checks' state machine (rise, fall, flap damping) and how a down backend reaches the
/// tables: through the owner's listener set.
@Suite("backend health")
struct BackendHealthTests {
    static var settings: HealthCheckSettings {
        var s = HealthCheckSettings()
        s.rise = 2
        s.fall = 3
        s.flapHalfLifeSeconds = 10
        s.flapSuppress = 2
        s.flapReuse = 1
        return s
    }

    @Test func fallConsecutiveFailuresTakeItDownAndRiseSuccessesBringItBack() {
        var h = BackendHealth(now: 0)
        let s = Self.settings
        #expect(h.state == .up)
        do { let changed = h.record(success: false, detail: "refused", now: 1, settings: s); #expect(!changed) }
        do { let changed = h.record(success: true, detail: "ok", now: 2, settings: s); #expect(!changed, "a success resets the count") }
        do { let changed = h.record(success: false, detail: "refused", now: 3, settings: s); #expect(!changed) }
        do { let changed = h.record(success: false, detail: "refused", now: 4, settings: s); #expect(!changed) }
        do { let changed = h.record(success: false, detail: "refused", now: 5, settings: s); #expect(changed) }
        #expect(h.state == .down && h.since == 5 && h.lastResult == "refused")
        do { let changed = h.record(success: true, detail: "ok", now: 6, settings: s); #expect(!changed) }
        do { let changed = h.record(success: true, detail: "ok", now: 7, settings: s); #expect(changed) }
        #expect(h.state == .up && h.transitions == 2 && h.checks == 7 && h.failedChecks == 4)
    }

    /// Two falls within a half-life reach flap_suppress: the backend stays down although its
    /// checks pass, until the penalty has decayed under flap_reuse.
    @Test func aFlappingBackendIsHeldDownUntilThePenaltyDecays() {
        var s = Self.settings
        s.fall = 1
        s.rise = 1
        var h = BackendHealth(now: 0)
        h.record(success: false, detail: "x", now: 1, settings: s)   // down, penalty 1
        h.record(success: true, detail: "ok", now: 2, settings: s)   // up
        h.record(success: false, detail: "x", now: 3, settings: s)   // down, penalty ~1.8: not yet
        #expect(h.state == .down && !h.suppressed)
        h.record(success: true, detail: "ok", now: 4, settings: s)
        h.record(success: false, detail: "x", now: 5, settings: s)   // third fall: penalty ≥ 2
        #expect(h.state == .down && h.suppressed)
        h.record(success: true, detail: "ok", now: 6, settings: s)
        #expect(h.state == .down, "suppressed: stays down")
        // The penalty halves every 10 s: from about 2.4 to under 1 takes about 13 s.
        h.record(success: true, detail: "ok", now: 12, settings: s)
        #expect(h.state == .down)
        h.record(success: true, detail: "ok", now: 25, settings: s)
        #expect(h.state == .up && !h.suppressed)
        #expect(h.penalty(at: 25, halfLife: 10) < 1)
    }

    /// A file backend marked down by its owner has weight 0 on every host (origin configDown);
    /// marked up again, the record goes and the file's weight is back.
    @Test func aDownFileBackendHasWeightZeroEverywhere() throws {
        let settings = try ClusterConfiguration.parse(sectionBody: ListenerBookTests.cluster, file: "<health>")
        let owner = ListenerBook(localHostID: 1, incarnation: 5)
        let backend = ListenerBook.Listener(vip: IPAddress("198.19.0.1")!, protocolNumber: 6, servicePort: 80,
                                            address: IPAddress("198.18.100.10")!, port: 8080, weight: 0)
        #expect(owner.setDown(backend, down: true, isFileBackend: true))
        #expect(!owner.setDown(backend, down: true, isFileBackend: true))
        // Host 2 learns host 1's set.
        let peer = ListenerBook(localHostID: 2, incarnation: 9)
        #expect(peer.apply(host: 1, set: owner.own) == .applied)
        let down = settings.adding(listeners: peer)
        #expect(down.configuration.services[0].backends.map(\.weight) == [0])
        #expect(down.origins[0] == [.configDown(host: 1, version: 1)])
        #expect(down.skipped.isEmpty)
        #expect(owner.setDown(backend, down: false, isFileBackend: true))
        #expect(owner.own.listeners.isEmpty && owner.own.version == 2)
        peer.apply(host: 1, set: owner.own)
        #expect(settings.adding(listeners: peer).configuration.services[0].backends.map(\.weight) == [1])
        // A listener's own flag: down keeps it registered at weight 0.
        try owner.listen(ListenerBookTests.web(20, weight: 4), source: .ctl)
        #expect(owner.setDown(ListenerBookTests.web(20), down: true, isFileBackend: false))
        #expect(owner.own.listeners.first?.down == true && owner.own.listeners.first?.effectiveWeight == 0)
    }

    @Test func healthCheckKeysAreParsedStrictly() throws {
        let base = ListenerBookTests.cluster.replacingOccurrences(of: "    backends: [{ host: 1, address: 198.18.100.10, port: 8080 }]",
                                                                  with: "    backends: [{ host: 1, address: 198.18.100.10, port: 8080 }]\n    health_check: HC")
        #expect(base != ListenerBookTests.cluster)
        let good = try ClusterConfiguration.parse(sectionBody: base.replacingOccurrences(of: "HC", with:
            "{ kind: http, path: /health, status: 204, interval_ms: 500, timeout_ms: 200, rise: 1, fall: 2, port: 9000 }"), file: "x.yaml")
        let h = try #require(good.services[0].healthCheck)
        #expect(h.kind == .http && h.path == "/health" && h.status == 204 && h.intervalMilliseconds == 500
                && h.timeoutMilliseconds == 200 && h.rise == 1 && h.fall == 2 && h.port == 9000)
        let checked = try ClusterConfiguration.parse(sectionBody: base.replacingOccurrences(of: "HC", with: "{}")
            .replacingOccurrences(of: "port: 8080 }]", with: "port: 8080, check_address: 10.0.0.1 }]"), file: "x.yaml")
        #expect(checked.services[0].backends[0].checkAddress == IPAddress("10.0.0.1"))
        #expect {
            _ = try ClusterConfiguration.parse(sectionBody: base.replacingOccurrences(of: "HC", with: "{}")
                .replacingOccurrences(of: "port: 8080 }]", with: "port: 8080, check_address: fd00::1 }]"), file: "x.yaml")
        } throws: { "\($0)".contains("key 'check_address': fd00::1 is IPv6 but the backend is IPv4") }
        let cases: [(String, String)] = [
            ("{ kind: ping }", "service 'web' health_check: key 'kind'"),
            ("{ kind: tcp, path: /x }", "key 'path': applies to kind: http only"),
            ("{ interval_ms: 100, timeout_ms: 200 }", "key 'timeout_ms': 200 is longer than interval_ms (100): one check at a time"),
            ("{ flap_suppress: 2, flap_reuse: 3 }", "key 'flap_reuse': 3.0 is above flap_suppress (2.0)"),
            ("{ fall: 0 }", "key 'fall'"),
            ("{ colour: red }", "key 'colour'"),
        ]
        for (value, message) in cases {
            #expect {
                _ = try ClusterConfiguration.parse(sectionBody: base.replacingOccurrences(of: "HC", with: value), file: "x.yaml")
            } throws: { error in
                "\(error)".contains(message) || { print("got: \(error)"); return false }()
            }
        }
    }
}
