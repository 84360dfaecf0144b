import ClassifyStage
import CounterStage
import DropStage
import MacSwapStage
import SwitchyardCore

/// Every stage kind the `switchyard` binary knows, by configuration name.
///
/// Adding a stage: a folder under Stages/ (listed in Package.swift's `stageTargets`) and one line here.
public let builtinStages: [StageDescriptor] = [
    Drop.descriptor,
    MacSwap.descriptor,
    PacketCounter.descriptor,
    Classify.descriptor,
]
