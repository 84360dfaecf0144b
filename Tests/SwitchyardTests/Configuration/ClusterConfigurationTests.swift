import SwitchyardCluster
import SwitchyardConfig
import SwitchyardEngine
import SwitchyardClusterPlugin
import SwitchyardStages
import Testing

/// The `cluster:` section: every error names the file, line, context and key.
@Suite("cluster configuration")
struct ClusterConfigurationTests {
    static let valid = """
        ports:
          - name: wire
            device: net_null0
        stages:
          - name: owner
            kind: ownership-lookup
            next: { local: port:wire, remote: port:wire }
        lcores:
          - id: 1
            poll:
              - { port: wire, queue: 0, to: owner }
        cluster:
          host: 1
          hosts:
            - { id: 1, address: 198.18.0.11, mac: 02:00:00:00:00:11 }
            - { id: 2, address: 198.18.0.12 }
          tunnel: { kind: vxlan, port: 4789, vni: 42 }
          services:
            - name: web
              vip: 198.19.0.1
              protocol: tcp
              port: 80
              backends:
                - { host: 1, address: 198.18.100.10, port: 8080, weight: 2 }
                - { host: 2, address: 198.18.101.10, port: 8080 }
            - name: web6
              vip: fd00:19::1
              port: 80
              backends:
                - { host: 2, address: fd00:101::10, port: 8080 }
          connections:
            capacity: 65536
            embryonic_share: 0.2
            timeouts: { syn: 3, tcp: 600, fin: 5, udp: 30 }

        """

    func errors(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigError] {
        do {
            _ = try EngineConfiguration.parse(text, file: "cluster.yaml", stages: builtinStages, plugins: standardPlugins)
            Issue.record("expected configuration errors", sourceLocation: sourceLocation)
            return []
        } catch let error as ConfigErrors {
            return error.errors
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
            return []
        }
    }

    func replacing(_ old: String, with new: String) -> String {
        precondition(Self.valid.contains(old), "not in the reference: \(old)")
        return Self.valid.replacingOccurrences(of: old, with: new)
    }

    @Test func theReferenceClusterIsValid() throws {
        let config = try EngineConfiguration.parse(Self.valid, file: "cluster.yaml", stages: builtinStages, plugins: standardPlugins)
        let cluster = try #require(config.cluster)
        #expect(cluster.localHostID == 1)
        #expect(cluster.hosts.map(\.address.description) == ["198.18.0.11", "198.18.0.12"])
        #expect(cluster.hosts[0].mac?.description == "02:00:00:00:00:11")
        #expect(cluster.tunnel.vni == 42)
        #expect(cluster.services[0].backends.map(\.weight) == [2, 1])
        #expect(cluster.services[1].vip.description == "fd00:19::1")
        #expect(cluster.connections.tcpTimeout == 600)
    }

    @Test func aStageThatNeedsTheClusterSaysSoWithoutIt() {
        let text = Self.valid[..<Self.valid.range(of: "cluster:")!.lowerBound]
        let found = errors(String(text))
        #expect(found.first?.key == "kind")
        #expect(found.first?.context == "stage 'owner'")
        #expect(found.first?.message.contains("cluster") == true)
    }

    @Test(arguments: [
        ("host: 1\n  hosts:", "host: 3\n  hosts:", "host", "not in `hosts`"),
        ("{ id: 2, address: 198.18.0.12 }", "{ id: 1, address: 198.18.0.13 }", nil, "used twice"),
        ("{ id: 2, address: 198.18.0.12 }", "{ id: 2, address: 198.18.0.11 }", nil, "used by two hosts"),
        ("{ id: 2, address: 198.18.0.12 }", "{ id: 2, address: fd00::12 }", "address", "IPv4"),
        ("{ id: 2, address: 198.18.0.12 }", "{ id: 2, address: 198.18.0.300 }", "address", "not an IPv4 or IPv6 address"),
        ("mac: 02:00:00:00:00:11", "mac: 02:00:00:00:11", "mac", "not a MAC address"),
        ("kind: vxlan, port: 4789", "kind: geneve, port: 4789", "kind", "geneve"),
        ("vni: 42", "vni: 16777216", "vni", "16777216"),
        ("protocol: tcp", "protocol: sctp", "protocol", "sctp"),
        ("port: 80\n      backends:\n        - { host: 1", "port: 0\n      backends:\n        - { host: 1", "port", "0"),
        ("{ host: 1, address: 198.18.100.10", "{ host: 9, address: 198.18.100.10", "host", "not in cluster.hosts"),
        ("{ host: 2, address: fd00:101::10", "{ host: 2, address: 198.18.101.11", "address", "keeps the family"),
        ("weight: 2", "weight: -1", "weight", "-1"),
        ("vip: 198.19.0.1", "vip: 198.18.0.12", nil, "is the address of host 2"),
        ("capacity: 65536", "capacity: 10", "capacity", "10"),
        ("embryonic_share: 0.2", "embryonic_share: 2", "embryonic_share", "2"),
        ("udp: 30", "udp: 30, icmp: 5", "icmp", "unknown key"),
        ("  connections:", "  lookup_table_size: 65536\n  connections:", "lookup_table_size", "not a prime"),
    ] as [(String, String, String?, String)])
    func badValuesAreNamed(old: String, new: String, key: String?, message: String) {
        let found = errors(replacing(old, with: new))
        #expect(found.count == 1)
        #expect(found.first?.file == "cluster.yaml")
        #expect((found.first?.line ?? 0) > 0)
        if let key { #expect(found.first?.key == key) }
        #expect(found.first?.message.contains(message) == true, "\(found.first?.description ?? "no error")")
    }

    @Test func duplicateServicesAndSharedBackendsAreRefused() {
        let duplicate = replacing("    - name: web6\n", with: """
                - name: web2
                  vip: 198.19.0.1
                  port: 80
                  backends: [{ host: 1, address: 198.18.100.20 }]
                - name: web6

            """)
        #expect(errors(duplicate).first?.message.contains("is already service 'web'") == true)
        let shared = replacing("    - name: web6\n", with: """
                - name: web2
                  vip: 198.19.0.2
                  port: 80
                  backends: [{ host: 1, address: 198.18.100.10, port: 8080 }]
                - name: web6

            """)
        #expect(errors(shared).first?.message.contains("also serves 'web'") == true)
    }
}
