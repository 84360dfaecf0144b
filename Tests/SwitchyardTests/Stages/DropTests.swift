import DropStage
import SwitchyardPcap
import SwitchyardTesting
import Testing

@Suite("drop stage")
struct DropTests {
    @Test("every packet is dropped and counted")
    func dropsEverything() throws {
        let harness = try StageHarness<Drop>()
        harness.push(PacketBuilder().flowMix(count: 70, flows: 3))
        #expect(harness.output(.drop).count == 70)
        #expect(harness.counter(.dropped) == 70)
        try harness.finish()
    }
}
