import Foundation
import Testing

/// A short run of the gossip simulation (Benchmarks/GossipSimulation/README.md): 8 real gossip
/// nodes in one child process on 127.0.0.1, with 1 % loss, 1 ms ± 1 ms delay and a flood, for
/// 2 s. Asserted: it converges, the restarted host synchronises, no peer is declared down, and
/// the output ends with the measured line for 8 hosts and the extrapolated one for 64 × 10 M.
/// No figure is asserted against a time bound (a busy machine would fail it for reasons that
/// are not the gossip's).
@Suite("gossip simulation", .serialized)
struct GossipSimulationTests {
    static var path: String {
        URL(fileURLWithPath: SwitchyardBinary.path).deletingLastPathComponent().appendingPathComponent("gossip-simulation").path
    }

    /// `k=v k=v …` → [k: v] (values with a trailing % keep their number).
    static func fields(_ line: Substring) -> [String: Double] {
        var result: [String: Double] = [:]
        for pair in line.split(separator: " ") {
            let kv = pair.split(separator: "=")
            if kv.count == 2, let v = Double(kv[1].replacingOccurrences(of: "%", with: "")) { result[String(kv[0])] = v }
        }
        return result
    }

    @Test(.enabled(if: getuid() == 0, "needs root (DPDK's EAL, the flood's raw socket)"), .timeLimit(.minutes(3)))
    func eightNodesRunAndTheSummaryLinesFollow() throws {
        let result = try ExternalCommand.run([Self.path, "--hosts", "8", "--connections", "200", "--seconds", "2",
                                              "--flood", "2000"], timeout: 170)
        let output = result.stdout + result.stderr
        #expect(result.status == 0, "gossip-simulation exited with \(result.status):\n\(output)")
        let lines = result.stdout.split(separator: "\n")
        try #require(lines.count >= 2, "\(output)")
        let measured = Self.fields(lines[lines.count - 2]), target = Self.fields(lines[lines.count - 1])
        let keys = ["hosts", "connections_per_host", "gossip_mbps_per_host", "link_share_10g", "propagation_p99_ms", "sync_s",
                    "memory_mb_per_host"]
        #expect(Set(measured.keys) == Set(keys), "\(lines[lines.count - 2])")
        #expect(Set(target.keys) == Set(keys), "\(lines[lines.count - 1])")
        #expect(measured["hosts"] == 8 && measured["connections_per_host"] == 200)
        #expect(target["hosts"] == 64 && target["connections_per_host"] == 10_000_000)
        #expect((measured["sync_s"] ?? -1) >= 0, "the restarted host did not synchronise:\n\(output)")
        #expect((measured["gossip_mbps_per_host"] ?? 0) > 0)
        #expect(output.contains("filled: every table holds 1600 entries"), "\(output)")
        #expect(output.contains("peers-down 0,"), "a peer was declared down under the flood:\n\(output)")
        print(output)
    }
}

extension GossipSimulationTests {
    /// The same with `--replicate exceptions`: every host opens the flows the table picks for it
    /// (none is sent), a backend is added at half time, and every exception reaches every peer;
    /// the last line is the extrapolation of the exceptions design.
    @Test(.enabled(if: getuid() == 0, "needs root (DPDK's EAL, the flood's raw socket)"), .timeLimit(.minutes(3)))
    func exceptionsRunAnnouncesTheFlowsATableChangeMoves() throws {
        let result = try ExternalCommand.run([Self.path, "--hosts", "8", "--connections", "200", "--seconds", "2",
                                              "--flood", "2000", "--replicate", "exceptions"], timeout: 170)
        let output = result.stdout + result.stderr
        #expect(result.status == 0, "gossip-simulation exited with \(result.status):\n\(output)")
        let lines = result.stdout.split(separator: "\n")
        try #require(lines.count >= 2, "\(output)")
        let measured = Self.fields(lines[lines.count - 2]), target = Self.fields(lines[lines.count - 1])
        #expect(measured["hosts"] == 8 && target["hosts"] == 64 && target["connections_per_host"] == 10_000_000)
        #expect((measured["sync_s"] ?? -1) >= 0, "the restarted host did not synchronise:\n\(output)")
        #expect(output.contains("filled: every table holds 200 entries"), "\(output)")
        #expect(output.contains("0 not everywhere at the end"), "an exception did not reach every peer:\n\(output)")
        #expect(output.contains("replicate: exceptions, one table change per connection lifetime"), "\(output)")
        #expect(output.contains("peers-down 0,"), "a peer was declared down under the flood:\n\(output)")
        print(output)
    }
}
