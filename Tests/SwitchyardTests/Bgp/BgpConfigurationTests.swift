import Foundation
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardEngine
import SwitchyardClusterPlugin
import SwitchyardStages
import Testing

/// The `bgp:` section (docs/bgp.md): defaults, the generated BIRD files, and every mistake named by
/// file, line and key.
@Suite("bgp configuration")
struct BgpConfigurationTests {
    static let bgp = """
        bgp:
          local_as: 65001
          router_id: 198.18.2.11
          peers:
            - { address: 198.18.2.1, as: 65000 }
            - { address: 198.18.2.2, as: 4200000000 }
          hold_time: 6
          bfd: { interval_ms: 200, multiplier: 5 }
          drain_seconds: 2.5
          run_dir: /tmp/sy-bgp-test

        """

    static var valid: String { ClusterConfigurationTests.valid + bgp }

    func parse(_ text: String) throws -> EngineConfiguration {
        try EngineConfiguration.parse(text, file: "bgp.yaml", stages: builtinStages, plugins: standardPlugins)
    }

    func firstError(_ text: String) -> ConfigError? {
        do {
            _ = try parse(text)
            return nil
        } catch let errors as ConfigErrors {
            return errors.errors.first
        } catch {
            return nil
        }
    }

    /// The line of `needle` in `text` (1-based).
    func line(of needle: String, in text: String) -> Int {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return (lines.firstIndex { $0.contains(needle) } ?? -1) + 1
    }

    @Test func theReferenceSectionAndItsDefaults() throws {
        let settings = try #require(try parse(Self.valid).bgp)
        #expect(settings.localAS == 65001)
        #expect(settings.routerID.description == "198.18.2.11")
        #expect(settings.nextHop?.description == "198.18.0.11") // this host's cluster address
        #expect(settings.nextHop6 == nil) // the cluster address is IPv4: no IPv6 next hop
        #expect(settings.peers.map(\.asNumber) == [65000, 4_200_000_000])
        #expect(settings.holdTime == 6 && settings.keepaliveTime == 2)
        #expect(settings.bfd == BfdSettings(intervalMilliseconds: 200, multiplier: 5))
        #expect(settings.drainSeconds == 2.5)
        #expect(settings.vips.map(\.description) == ["198.19.0.1"]) // the IPv6 VIP is not announced: no next_hop6
        #expect(settings.scope == .local)
        #expect(settings.birdPath == "/usr/sbin/bird" && settings.birdcPath == "/usr/sbin/birdc")
        #expect(settings.runDirectory(name: "x") == "/tmp/sy-bgp-test")

        let minimal = ClusterConfigurationTests.valid
            + "bgp: { local_as: 65001, router_id: 10.0.0.1, peers: [{ address: 10.0.0.2, as: 65000 }] }\n"
        let defaults = try #require(try parse(minimal).bgp)
        #expect(defaults.holdTime == 9 && defaults.keepaliveTime == 3)
        #expect(defaults.bfd == nil && defaults.drainSeconds == 5)
        #expect(defaults.runDirectory(name: "edge") == "/run/switchyard/bgp-edge")
        #expect(try parse(ClusterConfigurationTests.valid).bgp == nil)
    }

    @Test(arguments: [
        ("peers:\n    - { address: 198.18.2.1, as: 65000 }", "peers:\n    - { address: router-1, as: 65000 }",
         "address", "not an IP address"),
        ("peers:\n    - { address: 198.18.2.1, as: 65000 }", "source: 198.18.2.11\n  peers:\n    - { address: \"fd00::1\", as: 65000 }",
         "address", "not of the family of `source`"),
        ("drain_seconds: 2.5", "drain_seconds: 2.5\n  next_hop6: 198.18.0.11", "next_hop6", "not an IPv6 address"),
        ("drain_seconds: 2.5", "drain_seconds: 2.5\n  next_hop: \"fd00::11\"", "next_hop", "not an IPv4 address"),
        ("{ address: 198.18.2.1, as: 65000 }", "{ address: 198.18.2.1, as: 0 }", "as", "out of range"),
        ("{ address: 198.18.2.1, as: 65000 }", "{ address: 198.18.2.1, as: 4294967296 }", "as", "out of range"),
        ("local_as: 65001", "local_as: 0", "local_as", "out of range"),
        ("local_as: 65001", "local_as: 4294967296", "local_as", "out of range"),
        ("router_id: 198.18.2.11", "router_id: 1.2.3", "router_id", "not an IP address"),
        ("hold_time: 6", "hold_time: 2", "hold_time", "out of range"),
        ("hold_time: 6", "hold_time: 65536", "hold_time", "out of range"),
        ("hold_time: 6", "hold_time: 6\n  keepalive_time: 3", "keepalive_time", "out of range"),
        ("interval_ms: 200", "interval_ms: 5", "interval_ms", "out of range"),
        ("multiplier: 5", "multiplier: 0", "multiplier", "out of range"),
        ("drain_seconds: 2.5", "drain_seconds: -1", "drain_seconds", "out of range"),
        ("drain_seconds: 2.5", "drain_seconds: 2.5\n  vips: [198.19.0.9]", "vips", "not the VIP of any service"),
        ("drain_seconds: 2.5", "drain_seconds: 2.5\n  vips: [\"fd00:19::1\"]", "vips", "needs an IPv6 next hop: give `next_hop6`"),
        ("drain_seconds: 2.5", "drain_seconds: 2.5\n  vips: [198.19.0.1, 198.19.0.1]", "vips", "given twice"),
        ("drain_seconds: 2.5", "drain_seconds: 2.5\n  backends: some", "backends", "not one of"),
        ("drain_seconds: 2.5", "drain_seconds: 2.5\n  next_hop: uplink", "next_hop", "not an IP address"),
        ("drain_seconds: 2.5", "drain_seconds: 2.5\n  bird: bird", "bird", "absolute path"),
        ("drain_seconds: 2.5", "drain_seconds: 2.5\n  holdtime: 3", "holdtime", "unknown key"),
        ("run_dir: /tmp/sy-bgp-test", "run_dir: /tmp/" + String(repeating: "d", count: 100), "run_dir", "108 bytes"),
        ("    - { address: 198.18.2.2, as: 4200000000 }", "    - { address: 198.18.2.1, as: 65002 }", "address", "twice"),
    ])
    func mistakesNameFileLineAndKey(old: String, new: String, key: String, words: String) throws {
        precondition(Self.valid.contains(old), "not in the reference: \(old)")
        let text = Self.valid.replacingOccurrences(of: old, with: new)
        let found = try #require(firstError(text), "\(new) should be an error")
        #expect(found.file == "bgp.yaml")
        #expect(found.key == key, "\(found)")
        #expect(found.description.contains(words), "\(found)")
        // The line of the key (or, for a key inside a flow mapping or list, of that item).
        let expected = line(of: new.split(separator: "\n").last.map(String.init) ?? new, in: text)
        #expect(found.line == expected, "\(found), expected line \(expected)")
    }

    @Test func bgpNeedsAClusterSection() throws {
        let text = String(ClusterConfigurationTests.valid[..<ClusterConfigurationTests.valid.range(of: "cluster:")!.lowerBound])
            .replacingOccurrences(of: "kind: ownership-lookup\n    next: { local: port:wire, remote: port:wire }",
                                  with: "kind: drop")
            + Self.bgp
        var errors: [ConfigError] = []
        do { _ = try parse(text) } catch let thrown as ConfigErrors { errors = thrown.errors }
        let found = try #require(errors.first { $0.context == "bgp" }, "\(errors)")
        #expect(found.message.contains("needs a `cluster:` section"), "\(found)")
        #expect(found.line == line(of: "bgp:", in: text) + 1) // the section's first line
    }

    @Test func theGeneratedBirdFiles() throws {
        let settings = try #require(try parse(Self.valid).bgp)
        let conf = BgpSpeaker.birdConfiguration(settings, runDirectory: "/tmp/d", engineName: "edge")
        for line in ["router id 198.18.2.11;", "include \"/tmp/d/vips.conf\";", "interval 200 ms; multiplier 5;",
                     "neighbor 198.18.2.1 as 65000;", "neighbor 198.18.2.2 as 4200000000;", "local as 65001;",
                     "hold time 6;", "keepalive time 2;", "bfd on;", "next hop address 198.18.0.11;",
                     "export where proto = \"vips\";"]
        {
            #expect(conf.contains(line), "missing: \(line)")
        }
        let vips = BgpSpeaker.vipsConfiguration([IPAddress("198.19.0.1")!])
        #expect(vips.contains("protocol static vips {") && vips.contains("route 198.19.0.1/32 blackhole;"))
        #expect(!BgpSpeaker.vipsConfiguration([]).contains("route"))
    }

    /// IPv6 VIPs: announced with `next_hop6` (or an IPv6 cluster address) in an `ipv6` channel and
    /// the static protocol `vips6`; sessions may be IPv6.
    @Test func ipv6VipsAreAnnouncedWithAnIPv6NextHop() throws {
        let text = Self.valid.replacingOccurrences(of: "drain_seconds: 2.5", with: "drain_seconds: 2.5\n  next_hop6: \"fd00::11\"")
            .replacingOccurrences(of: "    - { address: 198.18.2.2, as: 4200000000 }", with: "    - { address: \"fd00:2::1\", as: 65000 }")
        let settings = try #require(try parse(text).bgp)
        #expect(settings.vips.map(\.description) == ["198.19.0.1", "fd00:19::1"])
        #expect(settings.nextHop?.description == "198.18.0.11" && settings.nextHop6?.description == "fd00::11")
        #expect(settings.peers.map(\.address.description) == ["198.18.2.1", "fd00:2::1"])
        let conf = BgpSpeaker.birdConfiguration(settings, runDirectory: "/tmp/d", engineName: "edge")
        for line in ["neighbor fd00:2::1 as 65000;", "export where proto = \"vips6\";", "next hop address fd00::11;",
                     "export where proto = \"vips\";", "next hop address 198.18.0.11;"]
        {
            #expect(conf.contains(line), "missing: \(line)")
        }
        let vips = BgpSpeaker.vipsConfiguration([IPAddress("198.19.0.1")!, IPAddress("fd00:19::1")!], ipv6: true)
        #expect(vips.contains("protocol static vips6 {\n    ipv6;\n    route fd00:19::1/128 blackhole;\n}"))
        #expect(vips.contains("protocol static vips {\n    ipv4;\n    route 198.19.0.1/32 blackhole;\n}"))
        #expect(BgpSpeaker.vipsConfiguration([], ipv6: true).contains("protocol static vips6 {\n    ipv6;\n}"))
        try expectBirdAccepts(conf: BgpSpeaker.birdConfiguration(settings, runDirectory: "DIR", engineName: "t"), vips: vips)

        // An IPv6 underlay: the IPv6 VIPs by default (next_hop6 = the cluster address), the IPv4
        // ones only with `next_hop`.
        let v6 = """
            cluster:
              host: 1
              hosts:
                - { id: 1, address: "fd00::11" }
                - { id: 2, address: "fd00::12" }
              services:
                - { name: web, vip: 198.19.0.1, port: 80, backends: [{ host: 1, address: 198.18.100.10, port: 8080 }] }
                - { name: web6, vip: "fd00:19::1", port: 80, backends: [{ host: 1, address: "fd00:100::10", port: 8080 }] }
            bgp: { local_as: 65001, router_id: 198.18.2.11, peers: [{ address: "fd00:2::1", as: 65000 }] }

            """
        let base = String(ClusterConfigurationTests.valid[..<ClusterConfigurationTests.valid.range(of: "cluster:")!.lowerBound])
        let underlay6 = try #require(try parse(base + v6).bgp)
        #expect(underlay6.vips.map(\.description) == ["fd00:19::1"])
        #expect(underlay6.nextHop == nil && underlay6.nextHop6?.description == "fd00::11")
        let conf6 = BgpSpeaker.birdConfiguration(underlay6, runDirectory: "/tmp/d", engineName: "edge")
        #expect(conf6.contains("ipv6 {") && !conf6.contains("ipv4 {"))
        let both = try #require(try parse(base + v6.replacingOccurrences(of: "router_id: 198.18.2.11,", with: "router_id: 198.18.2.11, next_hop: 198.18.0.11,")).bgp)
        #expect(both.vips.map(\.description) == ["198.19.0.1", "fd00:19::1"])
        let missing = firstError(base + v6.replacingOccurrences(of: "router_id: 198.18.2.11,", with: "router_id: 198.18.2.11, vips: [198.19.0.1],"))
        #expect(missing?.key == "vips" && missing?.message.contains("needs an IPv4 next hop: give `next_hop`") == true, "\(String(describing: missing))")
    }

    /// `bird -p` accepts `conf` (with DIR standing for its directory) and `vips`, when BIRD is installed.
    func expectBirdAccepts(conf: String, vips: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/bird") else { return }
        let directory = NSTemporaryDirectory() + "sy-bgp6-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try conf.replacingOccurrences(of: "DIR", with: directory).write(toFile: directory + "/bird.conf", atomically: true, encoding: .utf8)
        try vips.write(toFile: directory + "/vips.conf", atomically: true, encoding: .utf8)
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/sbin/bird")
        check.arguments = ["-p", "-c", directory + "/bird.conf"]
        try check.run()
        check.waitUntilExit()
        #expect(check.terminationStatus == 0, "bird -p rejects:\n\(conf)\n\(vips)", sourceLocation: sourceLocation)
    }

    /// BIRD itself accepts what the engine writes (`bird -p`), when it is installed.
    @Test func birdAcceptsTheGeneratedFiles() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/bird") else { return }
        let directory = NSTemporaryDirectory() + "sy-bgp-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let settings = try #require(try parse(Self.valid).bgp)
        try BgpSpeaker.birdConfiguration(settings, runDirectory: directory, engineName: "t")
            .write(toFile: directory + "/bird.conf", atomically: true, encoding: .utf8)
        try BgpSpeaker.vipsConfiguration([IPAddress("198.19.0.1")!])
            .write(toFile: directory + "/vips.conf", atomically: true, encoding: .utf8)
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/sbin/bird")
        check.arguments = ["-p", "-c", directory + "/bird.conf"]
        try check.run()
        check.waitUntilExit()
        #expect(check.terminationStatus == 0)
    }
}

/// The announcement rule, per VIP (`AnnouncementPolicy`, docs/bgp.md "The rule").
@Suite("bgp announcement rule")
struct AnnouncementPolicyTests {
    let cluster: ClusterConfiguration
    let vip = IPAddress("198.19.0.1")!
    let up = AnnouncementPolicy.HostState(running: true, drained: false, synchronised: true)

    init() throws {
        cluster = try #require(try EngineConfiguration.parse(ClusterConfigurationTests.valid, file: "c.yaml",
                                                             stages: builtinStages, plugins: standardPlugins).cluster)
    }

    func with(weights: [Int], host: Int = 1) -> ClusterConfiguration {
        var copy = cluster
        copy.localHostID = host
        for (index, weight) in weights.enumerated() { copy.services[0].backends[index].weight = weight }
        return copy
    }

    @Test func aHealthyLocalBackendAnnounces() {
        let decision = AnnouncementPolicy.decide(vip: vip, cluster: cluster, scope: .local, host: up)
        #expect(decision.announce)
        #expect(decision.reason == "healthy local backend web 198.18.100.10:8080")
    }

    @Test func everyConditionWithdrawsInOrder() {
        let stopping = AnnouncementPolicy.HostState(running: false, drained: true, synchronised: false)
        #expect(AnnouncementPolicy.decide(vip: vip, cluster: cluster, scope: .local, host: stopping)
            == .init(announce: false, reason: "stopping"))
        let drained = AnnouncementPolicy.HostState(running: true, drained: true, synchronised: false)
        #expect(AnnouncementPolicy.decide(vip: vip, cluster: cluster, scope: .local, host: drained).reason == "drained (ctl drain)")
        let syncing = AnnouncementPolicy.HostState(running: true, drained: false, synchronised: false)
        #expect(AnnouncementPolicy.decide(vip: vip, cluster: cluster, scope: .local, host: syncing).reason
            == "not synchronised (gossip)")
        #expect(!AnnouncementPolicy.decide(vip: IPAddress("198.19.0.9")!, cluster: cluster, scope: .local, host: up).announce)
    }

    @Test func weightZeroIsUnhealthyAndOnlyLocalBackendsCount() {
        // Host 1's only backend of web drained: withdraw, although host 2's backend still serves.
        let drained = AnnouncementPolicy.decide(vip: vip, cluster: with(weights: [0, 1]), scope: .local, host: up)
        #expect(!drained.announce && drained.reason.contains("no healthy local backend"))
        // backends: cluster counts host 2's backend.
        let forwarding = AnnouncementPolicy.decide(vip: vip, cluster: with(weights: [0, 1]), scope: .cluster, host: up)
        #expect(forwarding.announce && forwarding.reason == "healthy backend (host 2) web 198.18.101.10:8080")
        // No backend with weight anywhere: withdrawn in either scope.
        #expect(!AnnouncementPolicy.decide(vip: vip, cluster: with(weights: [0, 0]), scope: .cluster, host: up).announce)
        // Host 2 has a local backend of web (weight 1).
        #expect(AnnouncementPolicy.decide(vip: vip, cluster: with(weights: [0, 1], host: 2), scope: .local, host: up).announce)
        #expect(!AnnouncementPolicy.isHealthy(cluster.services[0].backends[0].with(weight: 0)))
    }
}

extension BackendSettings {
    func with(weight: Int) -> BackendSettings {
        var copy = self
        copy.weight = weight
        return copy
    }
}
