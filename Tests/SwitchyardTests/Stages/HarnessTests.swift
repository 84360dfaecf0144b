import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// A deliberately broken stage: it gives every second packet no disposition at all.
struct ForgetfulStage: Stage {
    enum Disposition: UInt8, StageDisposition {
        case drop
        case out
    }

    static let kind = "forgetful"
    static let summary = "test stage that forgets packets"

    init(parameters: NoParameters, context: StageContext) {}

    mutating func process(_ burst: PacketBurst, _ out: BurstOutput<ForgetfulStage>) {
        for index in stride(from: 0, to: burst.count, by: 2) { out.send(index, to: .out) }
    }
}

/// A stage that drops without naming a reason.
struct SilentDropStage: Stage {
    enum Disposition: UInt8, StageDisposition {
        case drop
    }

    static let kind = "silent-drop"
    static let summary = "test stage that drops without a reason"

    init(parameters: NoParameters, context: StageContext) {}

    mutating func process(_ burst: PacketBurst, _ out: BurstOutput<SilentDropStage>) {
        out.sendAll(burst.count, to: .drop)
    }
}

@Suite("stage harness")
struct HarnessTests {
    @Test("finish() fails when a stage leaves packets without a disposition, and nothing leaks")
    func missingDisposition() throws {
        let harness = try StageHarness<ForgetfulStage>()
        harness.push(PacketBuilder().flowMix(count: 10, flows: 2))
        #expect(harness.withoutDisposition == 5)
        #expect(harness.output(.out).count == 5)
        #expect(throws: StageHarness<ForgetfulStage>.ConservationError.self) { try harness.finish() }
    }

    @Test("finish() fails when a stage drops packets without a named reason")
    func unexplainedDrops() throws {
        let harness = try StageHarness<SilentDropStage>()
        harness.push(PacketBuilder().flowMix(count: 3, flows: 1))
        #expect(throws: StageHarness<SilentDropStage>.ConservationError.self) { try harness.finish() }
    }
}
