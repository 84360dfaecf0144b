import MacSwapStage
import SwitchyardPcap
import SwitchyardTesting
import Testing

@Suite("mac-swap stage")
struct MacSwapTests {
    @Test("swaps destination and source, leaves every other byte alone")
    func swaps() throws {
        let harness = try StageHarness<MacSwap>()
        let frame = PacketBuilder().ipv4(source: [198, 18, 0, 1], destination: [198, 19, 0, 1], transport: .udp,
                                         sourcePort: 1000, destinationPort: 53)
        harness.push([frame])
        let expected = Array(frame[6..<12]) + Array(frame[0..<6]) + Array(frame[12...])
        #expect(harness.output(.out) == [expected])
        try harness.finish()
    }

    @Test("frames shorter than an Ethernet header are dropped and counted as truncated")
    func truncated() throws {
        let harness = try StageHarness<MacSwap>()
        harness.push([[UInt8](repeating: 0xaa, count: 13), [], Array(repeating: 1, count: 14)])
        #expect(harness.output(.drop).count == 2)
        #expect(harness.counter(.truncated) == 2)
        #expect(harness.output(.out) == [Array(repeating: 1, count: 14)])
        try harness.finish()
    }

    @Test("bursts of every size up to and past the burst size")
    func burstSizes() throws {
        let harness = try StageHarness<MacSwap>(burstSize: 32)
        let frames = PacketBuilder().flowMix(count: 100, flows: 10)
        harness.push(frames)
        #expect(harness.output(.out).count == 100)
        #expect(harness.output(.out).map { Array($0[12...]) } == frames.map { Array($0[12...]) })
        try harness.finish()
    }

    @Test("unknown parameters are rejected by name")
    func unknownParameter() throws {
        #expect(throws: (any Error).self) { try StageHarness<MacSwap>(parameters: "colour: blue") }
    }
}
