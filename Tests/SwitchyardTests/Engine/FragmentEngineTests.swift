import Foundation
import SwitchyardPcap
import Testing

/// Fragments through a real `switchyard run`: the golden host-1 pipeline (which has `fragments: vip`
/// on classify and a `fragments` stage before `owner`) on inputs of its own, net_pcap ports. A 3000-byte UDP datagram to the
/// `game` service arrives as 3 fragments, last first; a lone later fragment never sees its first.
///
///     uplink-in: [frag 2][frag 1][frag 0][lone later fragment]
///        ─► classify ─vip─► fragments ─flow─► owner ─local─► translate-in ─► to-backends ─► backends-out
///                             └─ lone fragment held until shutdown: freed, hold-teardown
@Suite("fragments in a switchyard run", .serialized)
struct FragmentEngineTests {
    static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Golden/host1").standardized.path
    static let client: [UInt8] = [203, 0, 113, 9]

    /// The golden configuration, reading and writing captures of this test.
    static func configuration(uplinkInput: String, backendsInput: String, out: String) throws -> String {
        var text = try String(contentsOfFile: golden + "/config.yaml", encoding: .utf8)
        func replace(_ old: String, _ new: String) {
            precondition(text.contains(old), "the golden configuration changed: \(old)")
            text = text.replacingOccurrences(of: old, with: new)
        }
        replace("GOLDEN_DIR/uplink-in.pcap", uplinkInput)
        replace("GOLDEN_DIR/backends-in.pcap", backendsInput)
        replace("OUT_DIR", out)
        return text
    }

    @Test("reordered fragments reach the backend port whole and translated; a held fragment is freed and counted at shutdown")
    func reorderedThroughTheEngine() throws {
        let workspace = try TemporaryDirectory()
        let link = Frames.Link(source: [2, 0, 0, 0, 0, 1], destination: Frames.netPcapMAC(0))
        let data = payload(3000, seed: 17)
        func fragments(to destination: [UInt8], port: UInt16, link: Frames.Link) -> [[UInt8]] {
            Fragmenter.udp(source: Self.client, destination: destination, sourcePort: 40000, destinationPort: port,
                           payload: data, identification: 321, chunk: 1400).map { frame in
                Frames.ethernet(link: link, etherType: Frames.EtherType.ipv4, payload: Array(frame[14...]))
            }
        }
        let sent = fragments(to: [198, 19, 0, 1], port: 7000, link: link)
        let lone = Frames.ethernet(link: link, etherType: Frames.EtherType.ipv4, payload: Array(Fragmenter.udp(
            source: Self.client, destination: [198, 19, 0, 1], sourcePort: 40001, destinationPort: 7000,
            payload: payload(200, seed: 3), identification: 99, chunk: 64)[1][14...]))
        try Pcap.write([sent[2], sent[1], sent[0], lone], to: workspace.file("uplink-in.pcap"))
        try Pcap.write([], to: workspace.file("backends-in.pcap"))
        let config = try workspace.write("config.yaml", Self.configuration(
            uplinkInput: workspace.file("uplink-in.pcap"), backendsInput: workspace.file("backends-in.pcap"),
            out: workspace.path))
        let result = try SwitchyardBinary.run(["run", "--config", config, "--duration", "1",
                                               "--stats-json", workspace.file("counters.json")])
        try #require(result.status == 0, "switchyard run failed:\n\(result.output)")
        #expect(CounterSnapshot.allMbufsReturned(result.stdout), "\(result.stdout)")
        let counters = try CounterSnapshot(path: workspace.file("counters.json"))
        #expect(counters.conservationError() == nil, "\(counters.conservationError() ?? "")")

        // What the backend would get from the client directly, in the order the stage emits them.
        let backendLink = Frames.Link(source: Frames.netPcapMAC(1), destination: [2, 0, 0, 0, 0x10, 0x11])
        let expected = fragments(to: [198, 18, 100, 11], port: 7700, link: backendLink)
        let out = try Pcap.read(workspace.file("backends-out.pcap"))
        #expect(out == [expected[0], expected[2], expected[1]])
        try Tshark.assertWellFormed(frames: out)

        let stage = "stage fragments"
        #expect(counters.total(stage, "first-fragments") == 1)
        #expect(counters.total(stage, "held") == 3)
        #expect(counters.total(stage, "released") == 2)
        #expect(counters.total(stage, "hold-teardown") == 1)
        #expect(counters.total(stage, "drop") == 1)
        #expect(counters.total(stage, "flow") == 3)
    }
}
