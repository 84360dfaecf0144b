import CounterStage
import SwitchyardPcap
import SwitchyardTesting
import Testing

@Suite("counter stage")
struct CounterTests {
    @Test("counts bytes and size classes and passes packets on unchanged")
    func counts() throws {
        let harness = try StageHarness<PacketCounter>()
        let builder = PacketBuilder()
        var frames: [[UInt8]] = builder.flowMix(count: 5, flows: 5, frameLength: 60)
        frames += builder.flowMix(count: 3, flows: 3, frameLength: 100)
        frames += builder.flowMix(count: 2, flows: 2, frameLength: 1514)
        frames += builder.flowMix(count: 1, flows: 1, frameLength: 2000)
        harness.push(frames)
        #expect(harness.output(.out) == frames)
        let expectedBytes: UInt64 = 5 * 60 + 3 * 100 + 2 * 1514 + 2000
        #expect(harness.counter(.bytes) == expectedBytes)
        #expect(harness.counter(.upTo64) == 5)
        #expect(harness.counter(.upTo128) == 3)
        #expect(harness.counter(.upTo512) == 0)
        #expect(harness.counter(.upTo1518) == 2)
        #expect(harness.counter(.jumbo) == 1)
        try harness.finish()
    }
}
