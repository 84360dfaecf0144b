import Foundation
import SwitchyardCluster
import SwitchyardConfig
import Testing

/// `cluster.gossip`: defaults, every key, and errors that name the key.
@Suite("gossip settings")
struct GossipSettingsTests {
    static let key = String(repeating: "0123456789abcdef", count: 4)

    static func cluster(_ gossip: String) -> String {
        """
        host: 1
        hosts:
          - { id: 1, address: 198.18.0.11 }
          - { id: 2, address: 198.18.0.12 }
          - { id: 3, address: 198.18.0.13 }
        gossip:
        \(gossip.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        """
    }

    func parse(_ gossip: String) throws -> GossipSettings {
        try #require(try GossipTestbed.parseCluster(Self.cluster(gossip)).gossip)
    }

    func error(_ gossip: String, sourceLocation: SourceLocation = #_sourceLocation) -> ConfigError? {
        do {
            _ = try GossipTestbed.parseCluster(Self.cluster(gossip))
            Issue.record("expected an error", sourceLocation: sourceLocation)
            return nil
        } catch let error as ConfigError {
            return error
        } catch {
            Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
            return nil
        }
    }

    @Test func defaultsUseTheHostsAddresses() throws {
        let s = try parse("key: \(Self.key)")
        #expect(s.key.count == 32 && s.key[0] == 0x01 && s.key[31] == 0xef)
        #expect(s.members.map(\.address.description) == ["198.18.0.11", "198.18.0.12", "198.18.0.13"])
        #expect(s.members.allSatisfy { $0.port == 7946 })
        #expect(s.bindAddress.description == "198.18.0.11" && s.bindPort == 7946)
        #expect(s.multicast == nil)
        #expect(s.heartbeatMilliseconds == 200 && s.peerTimeoutMilliseconds == 1000 && s.digestIntervalMilliseconds == 1000)
        #expect(s.maxMessagesPerPoll == 65536 && s.replayWindow == 1024 && s.downRetentionMilliseconds == 300_000)
        #expect(s.receiveBudgetMilliseconds == 5 && s.syncPagesPerPoll == 256)
        // Without the key, the cluster section has no gossip.
        let plain = try GossipTestbed.parseCluster("host: 1\nhosts:\n  - { id: 1, address: 198.18.0.11 }")
        #expect(plain.gossip == nil)
    }

    @Test func everyKeyIsRead() throws {
        let s = try parse("""
            key: \(Self.key.uppercased())
            port: 9000
            members:
              - { host: 2, address: 10.0.0.2 }
              - { host: 1, address: 10.0.0.1, port: 9001 }
            bind: 0.0.0.0
            multicast: { group: 239.1.2.3, port: 9100, interface: 10.0.0.1, ttl: 4, loop: true }
            heartbeat_ms: 50
            peer_timeout_ms: 250
            digest_interval_ms: 500
            max_messages_per_poll: 64
            receive_budget_ms: 3
            replay_window: 128
            down_retention_ms: 0
            sync_pages_per_poll: 8
            max_clock_skew_ms: 1000
            """)
        #expect(s.members.map { "\($0.hostID) \($0.address):\($0.port)" } == ["1 10.0.0.1:9001", "2 10.0.0.2:9000", "3 198.18.0.13:9000"])
        #expect(s.bindAddress.description == "0.0.0.0" && s.bindPort == 9001)
        #expect(s.multicast == GossipMulticast(group: IPAddress("239.1.2.3")!, port: 9100, interface: IPAddress("10.0.0.1")!,
                                               ttl: 4, loop: true))
        #expect(s.heartbeatMilliseconds == 50 && s.peerTimeoutMilliseconds == 250 && s.digestIntervalMilliseconds == 500)
        #expect(s.maxMessagesPerPoll == 64 && s.replayWindow == 128 && s.downRetentionMilliseconds == 0)
        #expect(s.receiveBudgetMilliseconds == 3)
        #expect(s.syncPagesPerPoll == 8 && s.maxClockSkewMilliseconds == 1000)
    }

    @Test func theKeyMayComeFromAFile() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("gossip.key", Self.key + "\n")
        #expect(try parse("key_file: \(path)").key.count == 32)
        try directory.write("short.key", "abcd\n")
        #expect(error("key_file: \(directory.file("short.key"))")?.message.contains("64 hex digits") == true)
        #expect(error("key_file: \(directory.file("missing.key"))")?.message.contains("cannot read") == true)
    }

    /// IPv6 members: one AF_INET6 socket; `bind` of the same family; no multicast.
    @Test func ipv6MembersAreAccepted() throws {
        let members = "members: [{ host: 1, address: \"fd00:2::11\" }, { host: 2, address: \"fd00:2::12\" }, { host: 3, address: \"fd00:2::13\", port: 7000 }]"
        let settings = try parse("key: \(Self.key)\n\(members)")
        #expect(settings.members.map(\.address) == ["fd00:2::11", "fd00:2::12", "fd00:2::13"].map { IPAddress($0)! })
        #expect(settings.members.map(\.port) == [7946, 7946, 7000])
        #expect(settings.bindAddress == IPAddress("fd00:2::11")!)
        #expect(try parse("key: \(Self.key)\n\(members)\nbind: \"fd00:2::99\"").bindAddress == IPAddress("fd00:2::99")!)
        let multicast = error("key: \(Self.key)\n\(members)\nmulticast: { group: 239.1.1.1 }")
        #expect(multicast?.key == "group" && multicast?.message.contains("not an IPv6 multicast address") == true,
                "\(multicast?.description ?? "no error")")
        let group6 = try #require(try parse("key: \(Self.key)\n\(members)\nmulticast: { group: \"ff05::7:7\", ttl: 2 }").multicast)
        #expect(group6.group == IPAddress("ff05::7:7")! && group6.interface == IPAddress("fd00:2::11")! && group6.ttl == 2)
        let interface = error("key: \(Self.key)\n\(members)\nmulticast: { group: \"ff05::7:7\", interface: 10.0.0.1 }")
        #expect(interface?.key == "interface" && interface?.message.contains("not of the gossip members' family") == true,
                "\(interface?.description ?? "no error")")
    }

    /// Hosts with IPv6 cluster addresses (an IPv6 underlay) gossip on those addresses by default.
    @Test func ipv6HostsGossipOnTheirAddressesByDefault() throws {
        let yaml = """
        host: 2
        hosts:
          - { id: 1, address: "fd00::11" }
          - { id: 2, address: "fd00::12" }
        gossip:
          key: \(Self.key)
        """
        let settings = try #require(try GossipTestbed.parseCluster(yaml).gossip)
        #expect(settings.members.map(\.address) == [IPAddress("fd00::11")!, IPAddress("fd00::12")!])
        #expect(settings.bindAddress == IPAddress("fd00::12")!)
    }

    @Test(arguments: [
        ("port: 1", "key", "needs a shared key"),
        ("key: abcd", "key", "64 hex digits"),
        ("key: \(String(repeating: "zz", count: 32))", "key", "hex"),
        ("key: \(String(repeating: "a", count: 65))", "key", "even number"),
        ("key: \(key)\nkey_file: /x", "key_file", "not both"),
        ("key: \(key)\nport: 0", "port", "0"),
        ("key: \(key)\nmembers: [{ host: 9, address: 10.0.0.9 }]", "host", "not in cluster.hosts"),
        ("key: \(key)\nmembers: [{ host: 2, address: 10.0.0.2 }, { host: 2, address: 10.0.0.3 }]", "host", "two gossip members"),
        ("key: \(key)\nmembers: [{ host: 2, address: 198.18.0.13 }]", "members", "same gossip address"),
        ("key: \(key)\nmembers: [{ host: 2, address: \"fd00::2\" }]", "members", "one address family"),
        ("key: \(key)\nmembers: [{ host: 1, address: \"fe80::1\" }, { host: 2, address: \"fd00::2\" }, { host: 3, address: \"fd00::3\" }]",
         "members", "link-local"),
        ("key: \(key)\nbind: \"fd00::1\"", "bind", "not of the gossip members' family"),
        ("key: \(key)\nmembers: [{ host: 2, address: 10.0.0.2, mac: x }]", "mac", "unknown key"),
        ("key: \(key)\nbind: nowhere", "bind", "not an IPv4"),
        ("key: \(key)\nmulticast: { group: 10.1.1.1 }", "group", "not an IPv4 multicast"),
        ("key: \(key)\nmulticast: { interface: 10.0.0.1 }", "group", "missing"),
        ("key: \(key)\nmulticast: { group: 239.1.1.1, ttl: 0 }", "ttl", "0"),
        ("key: \(key)\nheartbeat_ms: 5", "heartbeat_ms", "5"),
        ("key: \(key)\nheartbeat_ms: 500\npeer_timeout_ms: 900", "peer_timeout_ms", "two heartbeats"),
        ("key: \(key)\nreplay_window: 100", "replay_window", "multiple of 64"),
        ("key: \(key)\nmax_messages_per_poll: 0", "max_messages_per_poll", "0"),
        ("key: \(key)\nreceive_budget_ms: 0", "receive_budget_ms", "0"),
        ("key: \(key)\nreceive_budget_ms: 1001", "receive_budget_ms", "1001"),
        ("key: \(key)\npeers: unicast", "peers", "unknown key"),
    ] as [(String, String, String)])
    func badValuesAreNamed(gossip: String, key: String, message: String) {
        let found = error(gossip)
        #expect(found?.key == key, "\(found?.description ?? "no error")")
        #expect(found?.message.contains(message) == true, "\(found?.description ?? "no error")")
        #expect((found?.line ?? 0) > 0)
    }
}
