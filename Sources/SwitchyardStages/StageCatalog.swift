import ClassifyStage
import CounterStage
import DecapsulateStage
import DropStage
import EgressTranslateStage
import EncapsulateStage
import ForwardStage
import FragmentStage
import MacSwapStage
import MssClampStage
import OwnershipLookupStage
import SwitchyardCore
import TupleTranslateStage

/// Every stage kind the `switchyard` binary knows, by configuration name.
///
/// Adding a stage: a folder under Stages/ (listed in Package.swift's `stageTargets`) and one line here.
public let builtinStages: [StageDescriptor] = [
    Drop.descriptor,
    MacSwap.descriptor,
    PacketCounter.descriptor,
    Classify.descriptor,
    OwnershipLookup.descriptor,
    TupleTranslate.descriptor,
    Encapsulate.descriptor,
    Decapsulate.descriptor,
    Forward.descriptor,
    Fragments.descriptor,
    MssClamp.descriptor,
    EgressTranslate.descriptor,
    EgressReturn.descriptor,
]
