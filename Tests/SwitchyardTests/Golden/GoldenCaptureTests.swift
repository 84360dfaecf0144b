import Foundation
import SwitchyardPcap
import Testing

/// Golden captures: a configuration, input captures and the expected output captures, run through
/// the real pipeline (the `switchyard` binary, net_pcap ports), compared byte for byte, and every
/// packet Switchyard emitted decoded by tshark with checksum validation on.
///
///     Tests/Golden/host1/config.yaml          the pipeline (GOLDEN_DIR / OUT_DIR filled in)
///     Tests/Golden/host1/*-in.pcap            inputs (GoldenTraffic.swift says what each packet is)
///     Tests/Golden/host1/expected-*.pcap      what each port must transmit
///
/// `SWITCHYARD_GOLDEN_UPDATE=1 swift test --filter GoldenCaptureTests` rewrites the inputs and the
/// expected captures from a run; review the tshark listing it prints before committing them.
@Suite("golden captures", .serialized)
struct GoldenCaptureTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Golden/host1").standardized.path
    static let outputs = ["uplink", "backends", "exception"]
    static var updating: Bool { ProcessInfo.processInfo.environment["SWITCHYARD_GOLDEN_UPDATE"] == "1" }

    /// Runs the pipeline on the inputs in `directory`, returns the output captures by port.
    func run(in workspace: TemporaryDirectory) throws -> (outputs: [String: [[UInt8]]], counters: CounterSnapshot) {
        let template = try String(contentsOfFile: Self.directory + "/config.yaml", encoding: .utf8)
        let config = try workspace.write("config.yaml", template.replacingOccurrences(of: "GOLDEN_DIR", with: Self.directory)
            .replacingOccurrences(of: "OUT_DIR", with: workspace.path))
        let result = try SwitchyardBinary.run(["run", "--config", config, "--duration", "2",
                                               "--stats-json", workspace.file("counters.json")])
        try #require(result.status == 0, "switchyard run failed:\n\(result.output)")
        let counters = try CounterSnapshot(path: workspace.file("counters.json"))
        var outputs: [String: [[UInt8]]] = [:]
        for port in Self.outputs { outputs[port] = try Pcap.read(workspace.file("\(port)-out.pcap")) }
        return (outputs, counters)
    }

    @Test func thePipelineTransmitsExactlyTheExpectedCaptures() throws {
        if Self.updating {
            try Pcap.write(GoldenTraffic.uplink.map(\.frame), to: Self.directory + "/uplink-in.pcap")
            try Pcap.write(GoldenTraffic.backends.map(\.frame), to: Self.directory + "/backends-in.pcap")
        }
        let workspace = try TemporaryDirectory()
        let (outputs, counters) = try run(in: workspace)
        if let error = counters.conservationError() { Issue.record("counters do not add up: \(error)") }
        for port in Self.outputs {
            let expectedPath = Self.directory + "/expected-\(port)-out.pcap"
            if Self.updating {
                try Pcap.write(outputs[port]!, to: expectedPath)
                print("golden: wrote \(expectedPath) (\(outputs[port]!.count) packets)")
            }
            let expected = try Pcap.read(expectedPath)
            let actual = outputs[port]!
            #expect(actual.count == expected.count, "\(port): \(actual.count) packets, expected \(expected.count)")
            for (index, (got, want)) in zip(actual, expected).enumerated() where got != want {
                Issue.record("\(port) packet \(index) differs:\n got  \(hex(got))\n want \(hex(want))")
            }
        }
        // The inputs on disk are the ones GoldenTraffic describes.
        #expect(try Pcap.read(Self.directory + "/uplink-in.pcap") == GoldenTraffic.uplink.map(\.frame))
        #expect(try Pcap.read(Self.directory + "/backends-in.pcap") == GoldenTraffic.backends.map(\.frame))
    }

    @Test func everyPacketSwitchyardEmitsIsWellFormedForTshark() throws {
        for port in Self.outputs {
            let frames = try Pcap.read(Self.directory + "/expected-\(port)-out.pcap")
            guard port != "exception" else { continue } // passed through untouched: the inputs' own business
            let decoded = try Tshark.assertWellFormed(frames: frames)
            #expect(decoded.count == frames.count)
        }
    }

    @Test func everyInputPacketMetTheFateItsDescriptionGives() throws {
        let workspace = try TemporaryDirectory()
        let (outputs, counters) = try run(in: workspace)
        let uplink = GoldenTraffic.uplink, backends = GoldenTraffic.backends
        let toBackends = uplink.filter { $0.fate.hasSuffix("→ backends") }.count
        let toUplink = (uplink + backends).filter { $0.fate.hasSuffix("→ uplink") }.count
        let toException = (uplink + backends).filter { $0.fate.hasSuffix("→ exception") }.count
        #expect(outputs["backends"]!.count == toBackends)
        #expect(outputs["uplink"]!.count == toUplink)
        #expect(outputs["exception"]!.count == toException)
        // Each named drop happened exactly as often as the descriptions say.
        for fate in (uplink + backends).map(\.fate) where fate.contains("→ drop ") {
            let words = fate.components(separatedBy: "→ drop ")[1].split(separator: " ")
            let stage = String(words[0]), counter = String(words[1])
            let expected = (uplink + backends).filter { $0.fate.contains("→ drop \(stage) \(counter)") }.count
            #expect(counters.total("stage \(stage)", counter) == UInt64(expected), "\(stage) \(counter)")
        }
        // web, dns, web6 and the fragmented web SYN (the peer's flow is adopted)
        #expect(counters.total("stage owner", "opened") == 4)
        #expect(counters.total("stage fragments", "held") == 2)
        #expect(counters.total("stage fragments", "released") == 1)
        #expect(counters.total("stage owner", "miss-adopted") == 1)
        #expect(counters.total("stage owner", "rst") == 1)
        #expect(counters.total("stage encap", "icmp-too-big") == 1)
    }

    @Test func docsConfigurationShowsTheGoldenStagesExactly() throws {
        let golden = try String(contentsOfFile: Self.directory + "/config.yaml", encoding: .utf8)
        let docs = try String(contentsOfFile: Self.directory + "/../../../docs/configuration.md", encoding: .utf8)
        let stages = try #require(golden.range(of: "stages:\n")?.lowerBound)
        let lcores = try #require(golden.range(of: "lcores:\n")?.lowerBound)
        let section = String(golden[stages..<lcores]).trimmingCharacters(in: .newlines)
        #expect(docs.contains("```yaml\n" + section + "\n```"),
                "docs/configuration.md, 'The single-IP-image pipeline': the yaml block must be the stages: section of Tests/Golden/host1/config.yaml")
    }

    func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
}
