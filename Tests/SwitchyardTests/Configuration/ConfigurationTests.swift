import SwitchyardConfig
import SwitchyardEngine
import SwitchyardClusterPlugin
import SwitchyardStages
import Testing

/// One test per kind of configuration error: each asserts the file, line, context and key named.
@Suite("configuration validation")
struct ConfigurationTests {
    static let valid = """
        ports:
          - name: wire
            device: net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap
        rings:
          - name: handoff
            size: 256
        stages:
          - name: count
            kind: counter
            next: { out: ring:handoff }
          - name: swap
            kind: mac-swap
            next:
              out: port:wire
        lcores:
          - id: 1
            poll:
              - { port: wire, queue: 0, to: count }
          - id: 2
            cpu: 1
            idle: backoff
            poll:
              - { ring: handoff, to: swap }

        """

    func parse(_ text: String) throws -> EngineConfiguration {
        try EngineConfiguration.parse(text, file: "test.yaml", stages: builtinStages, plugins: standardPlugins)
    }

    /// The errors `text` produces (fails the test when it parses).
    func errors(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigError] {
        do {
            _ = try parse(text)
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
        precondition(Self.valid.contains(old))
        return Self.valid.replacingOccurrences(of: old, with: new)
    }

    @Test("the reference configuration is valid, pipelined over a ring")
    func valid() throws {
        let config = try parse(Self.valid)
        #expect(config.ports.map(\.name) == ["wire"])
        #expect(config.stages.map(\.name) == ["count", "swap"])
        #expect(config.lcores.map(\.id) == [1, 2])
        #expect(config.lcores[1].idle == .backoff(maxSleepMicroseconds: 200))
        #expect(config.stages[1].next == [.drop, .port("wire")])
    }

    @Test("a misspelled key names the key, its line and its stage")
    func misspelledKey() {
        let found = errors(replacing("    next:\n      out: port:wire", with: "    nxet:\n      out: port:wire"))
        #expect(found.count >= 1)
        let error = found.first { $0.key == "nxet" }
        #expect(error?.line == 13)
        #expect(error?.context == "stage 'swap'")
        #expect(error?.file == "test.yaml")
        #expect(error?.description.hasPrefix("test.yaml:13:") == true)
        #expect(error?.description.contains("stage 'swap': key 'nxet': unknown key") == true)
    }

    @Test("an unknown top-level key is an error")
    func unknownTopLevelKey() {
        let found = errors(Self.valid + "colours: [red]\n")
        #expect(found.map(\.key) == ["colours"])
        #expect(found.first?.line == 24)
    }

    @Test("wrong types name the key and what was expected")
    func wrongType() {
        let found = errors(replacing("size: 256", with: "size: big"))
        #expect(found.first?.key == "size")
        #expect(found.first?.context == "ring 'handoff'")
        #expect(found.first?.message.contains("expected an integer") == true)
        #expect(found.first?.line == 6)
    }

    @Test("a ring size must be a power of two")
    func ringSize() {
        #expect(errors(replacing("size: 256", with: "size: 300")).first?.message == "300 is not a power of two")
    }

    @Test("an unknown stage kind lists the known ones")
    func unknownKind() {
        let found = errors(replacing("kind: mac-swap", with: "kind: mac-swop"))
        #expect(found.first?.key == "kind")
        #expect(found.first?.message.contains("unknown stage kind 'mac-swop'") == true)
        #expect(found.first?.message.contains("mac-swap") == true)
    }

    @Test("an unwired disposition is an error")
    func unwired() {
        let found = errors(replacing("    next:\n      out: port:wire\n", with: ""))
        #expect(found.first?.context == "stage 'swap'")
        #expect(found.first?.message.contains("disposition 'out' is not wired") == true)
    }

    @Test("wiring an unknown disposition or disposition 0 is an error")
    func badDisposition() {
        #expect(errors(replacing("out: port:wire", with: "outt: port:wire")).first?.message
            .contains("has no disposition 'outt'") == true)
        #expect(errors(replacing("out: port:wire", with: "out: port:wire\n      drop: port:wire")).first?.message
            .contains("cannot be wired") == true)
    }

    @Test("targets that do not exist")
    func missingTargets() {
        #expect(errors(replacing("out: port:wire", with: "out: port:wyre")).first?.message == "no port named 'wyre'")
        #expect(errors(replacing("out: ring:handoff", with: "out: ring:nowhere")).first?.message == "no ring named 'nowhere'")
        #expect(errors(replacing("out: ring:handoff", with: "out: swop")).first?.message == "no stage named 'swop'")
        #expect(errors(replacing("out: port:wire", with: "out: pirt:wire")).first?.message.contains("is not a target") == true)
    }

    @Test("cyclic wiring names the cycle")
    func cycle() {
        let text = replacing("out: port:wire", with: "out: count").replacingOccurrences(of: "out: ring:handoff", with: "out: swap")
        let found = errors(text)
        #expect(found.contains { $0.message.contains("cycle: count -> swap -> count") })
    }

    @Test("a cycle through a ring is a cycle too")
    func cycleThroughRing() {
        // swap (lcore 2, fed by the ring) sends back into the ring it is fed from.
        let found = errors(replacing("out: port:wire", with: "out: ring:handoff"))
        #expect(found.contains { $0.message.contains("cycle: swap -> swap") }, "\(found)")
    }

    @Test("an unknown key lists every key the section accepts, present or not")
    func unknownKeyHint() {
        let found = errors(replacing("    next:\n      out: port:wire", with: "    nxet:\n      out: port:wire"))
        #expect(found.first?.message == "unknown key (expected one of: kind, name, next)", "\(found)")
    }

    @Test("an unreachable stage is an error")
    func unreachable() {
        let found = errors(replacing("stages:\n", with: "stages:\n  - name: orphan\n    kind: drop\n"))
        #expect(found.first?.context == "stage 'orphan'")
        #expect(found.first?.message.contains("unreachable") == true)
    }

    @Test("lcores, ports and queues that do not exist")
    func missingLcoreResources() {
        #expect(errors(replacing("- { port: wire, queue: 0, to: count }", with: "- { port: wyre, queue: 0, to: count }"))
            .contains { $0.message == "no port named 'wyre'" && $0.context == "lcore 1" })
        #expect(errors(replacing("- { port: wire, queue: 0, to: count }", with: "- { port: wire, queue: 3, to: count }"))
            .contains { $0.message.contains("queue 3 does not exist") })
        #expect(errors(replacing("cpu: 1", with: "cpu: 999")).contains { $0.key == "cpu" && $0.message.contains("does not exist") })
        #expect(errors(replacing("- id: 2", with: "- id: 1")).contains { $0.message.contains("already defined") })
        #expect(errors(replacing("- id: 2", with: "- id: 0")).contains { $0.key == "id" })
    }

    @Test("an rx queue nobody polls, or two pollers of one queue")
    func queuePolling() {
        #expect(errors(replacing("device: net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap", with: "device: net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap\n    rx_queues: 2"))
            .contains { $0.message.contains("rx queue 1 is polled by no lcore") })
        #expect(errors(replacing("{ ring: handoff, to: swap }", with: "{ port: wire, queue: 0, to: swap }"))
            .contains { $0.message.contains("already polled by lcore 1") })
    }

    @Test("more transmitting lcores than tx queues")
    func txQueues() {
        // lcore 1 (count) and lcore 2 (swap, fed from a second port) both transmit on wire,
        // which has one tx queue.
        let direct = replacing("next: { out: ring:handoff }", with: "next: { out: port:wire }")
            .replacingOccurrences(of: "rings:\n  - name: handoff\n    size: 256\n", with: "rings: []\n")
            .replacingOccurrences(of: "      - { ring: handoff, to: swap }", with: "      - { port: wire2, queue: 0, to: swap }")
            .replacingOccurrences(of: "ports:\n", with: "ports:\n  - name: wire2\n    device: net_null0\n    tx_queues: 0\n")
        let found = errors(direct)
        #expect(found.contains { $0.key == "tx_queues" && $0.message.contains("2 lcores (1, 2) transmit on this port") },
                "\(found)")
    }

    @Test("YAML syntax errors name the line")
    func syntax() {
        let found = errors("ports:\n  - name: [unclosed\n")
        #expect(found.first?.message.hasPrefix("YAML syntax error") == true)
        #expect((found.first?.line ?? 0) >= 2)
    }

    @Test("duplicate names and duplicate keys")
    func duplicates() {
        #expect(errors(replacing("  - name: swap", with: "  - name: count")).contains { $0.message.contains("name already used") })
        #expect(!errors(replacing("size: 256", with: "size: 256\n    size: 512")).isEmpty)
    }

    @Test("all errors of a file are reported together, in line order")
    func manyErrors() {
        let text = replacing("size: 256", with: "size: huge").replacingOccurrences(of: "kind: mac-swap", with: "kind: nope")
        let found = errors(text)
        #expect(found.count >= 2)
        #expect(found.map(\.line) == found.map(\.line).sorted())
    }
}
