import SwitchyardCluster
import SwitchyardEngine
import SwitchyardClusterPlugin
import SwitchyardStages
import Testing

/// What a reload may change in `cluster.hosts` (EngineConfiguration+LiveChanges): hosts join and
/// leave; a host that stays keeps its address, mac and gossip member; this host stays.
@Suite("hosts join and leave: configuration")
struct HostsLiveChangeTests {
    static func configuration(host: Int = 1, hosts: [(Int, String)], gossipPort: Int = 7946) throws -> EngineConfiguration {
        let text = """
            eal: { hugepages: off }
            ports: [{ name: wire, device: net_null0 }]
            stages: [{ name: sink, kind: drop }]
            lcores: [{ id: 1, poll: [{ port: wire, queue: 0, to: sink }] }]
            cluster:
              host: \(host)
              hosts:
            \(hosts.map { "    - { id: \($0.0), address: \($0.1) }" }.joined(separator: "\n"))
              services:
                - name: web
                  vip: 198.19.0.1
                  port: 80
                  backends:
            \(hosts.map { "        - { host: \($0.0), address: 198.18.100.\($0.0), port: 8080 }" }.joined(separator: "\n"))
              gossip:
                key: \(String(repeating: "ab", count: 32))
                members:
            \(hosts.map { "      - { host: \($0.0), address: 10.0.0.\($0.0), port: \($0.0 == 2 ? gossipPort : 7946) }" }.joined(separator: "\n"))
            bgp:                      # below the hosts: a host more moves it down, which changes nothing
              local_as: 65001
              router_id: 198.18.2.11
              peers: [{ address: 198.18.2.1, as: 65000 }]

            """
        return try EngineConfiguration.parse(text, file: "hosts.yaml", stages: builtinStages, plugins: standardPlugins)
    }

    @Test func hostsMayJoinAndLeave() throws {
        let two = try Self.configuration(hosts: [(1, "198.18.0.11"), (2, "198.18.0.12")])
        let three = try Self.configuration(hosts: [(1, "198.18.0.11"), (2, "198.18.0.12"), (3, "198.18.0.13")])
        #expect(two.fixedDifferences(to: three).isEmpty, "\(two.fixedDifferences(to: three))")
        #expect(three.fixedDifferences(to: two).isEmpty, "\(three.fixedDifferences(to: two))")
        #expect(two.liveChanges(to: three).contains("host 3 joins"), "\(two.liveChanges(to: three))")
        #expect(three.liveChanges(to: two).contains { $0.hasPrefix("host 3 leaves (drains") }, "\(three.liveChanges(to: two))")
        // A departing host (kept by the engine) is not listed as leaving again.
        var kept = two
        kept.cluster!.hosts.append(three.cluster!.host(id: 3)!)
        kept.cluster!.departingHosts = [3]
        #expect(three.liveChanges(to: kept).contains { $0.hasPrefix("host 3 leaves") }, "\(three.liveChanges(to: kept))")
        #expect(!kept.liveChanges(to: two).contains { $0.hasPrefix("host 3") })
    }

    @Test func aHostThatStaysKeepsItsAddressAndThisHostStays() throws {
        let two = try Self.configuration(hosts: [(1, "198.18.0.11"), (2, "198.18.0.12")])
        let moved = try Self.configuration(hosts: [(1, "198.18.0.11"), (2, "198.18.0.22")])
        #expect(two.fixedDifferences(to: moved).contains { $0.hasPrefix("cluster.hosts (host 2): '198.18.0.12' -> '198.18.0.22'") },
                "\(two.fixedDifferences(to: moved))")
        let gossipMoved = try Self.configuration(hosts: [(1, "198.18.0.11"), (2, "198.18.0.12")], gossipPort: 7947)
        #expect(two.fixedDifferences(to: gossipMoved).contains { $0.hasPrefix("cluster.gossip.members (host 2)") },
                "\(two.fixedDifferences(to: gossipMoved))")
        let otherHost = try Self.configuration(host: 2, hosts: [(2, "198.18.0.12")])
        #expect(two.fixedDifferences(to: otherHost).contains { $0.hasPrefix("cluster.host:") })
        #expect(two.fixedDifferences(to: otherHost).contains { $0.contains("this host (id 1) cannot be removed") })
    }
}
