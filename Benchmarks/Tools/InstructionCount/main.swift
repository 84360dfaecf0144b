// InstructionCount: a fixed sequence of bursts through one lcore's graph of the throughput
// pipeline (Throughput/pipeline.yaml), for callgrind. Run by instructions.sh; see README.md.
//
//     4096 frames (4096 flows: TCP ACK and UDP to the VIP, 64 bytes on the wire), 128 bursts of 32
//     warm-up pass: warmUpBurst(...)  ×128   not counted (connections created, first touches)
//     measured:     measuredBurst(...) ×128 × passes   counted (callgrind --toggle-collect=*measuredBurst*)
//
// Each burst is refilled from the pool before it runs (outside both functions): the graph transmits
// its packets to net_null, which frees them, or drops and frees them.
//
//     InstructionCount [--flows N] [--passes P]
import CDPDK
import Foundation
import SwitchyardCore
import SwitchyardClusterPlugin
import SwitchyardEngine
import SwitchyardPcap
import SwitchyardStages

var flows = 4096
var passes = 2
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--flows": flows = Int(arguments.popFirst() ?? "") ?? 0
    case "--passes": passes = Int(arguments.popFirst() ?? "") ?? 0
    default:
        FileHandle.standardError.write("usage: InstructionCount [--flows N] [--passes P]\n".data(using: .utf8)!)
        exit(2)
    }
}
let burstSize = 32
guard flows >= burstSize, flows % burstSize == 0, passes > 0 else {
    FileHandle.standardError.write("InstructionCount: --flows must be a multiple of 32, --passes positive\n".data(using: .utf8)!)
    exit(2)
}

/// Throughput/pipeline.yaml with net_null in place of the pcap port, one lcore, no hugepages.
func configurationText() throws -> String {
    let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    var text = try String(contentsOf: here.appendingPathComponent("../../Throughput/pipeline.yaml"), encoding: .utf8)
    let replacements = [
        ("device: net_pcap0,TRAFFIC,infinite_rx=1", "device: net_null1"),
        ("hugepages: auto", "hugepages: off"),
        ("memory_mb: 3072", "memory_mb: 256"),
        ("mbufs: MBUFS", "mbufs: 8191"),
        ("QUEUES", "1"),
        ("LCORES", "  - { id: 1, cpu: 0, idle: busy, poll: [ { port: wire, queue: 0, to: classify } ] }"),
    ]
    for (from, to) in replacements {
        guard text.contains(from) else { throw EngineError.setup("Throughput/pipeline.yaml has no '\(from)'") }
        text = text.replacingOccurrences(of: from, with: to)
    }
    return text
}

let configuration = try EngineConfiguration.parse(configurationText(), file: "Throughput/pipeline.yaml (instructions)",
                                                  stages: builtinStages, plugins: standardPlugins)
try EAL.initialize(EAL.plan(for: configuration, overrides: ["--log-level=error", "--no-telemetry"]).arguments)
let driver = try LcoreGraphDriver(configuration: configuration)

let frames = PacketBuilder().flowMix(count: flows, flows: flows, tcpFlags: 0x10)
let packets = MbufVector.allocate(capacity: maximumBurstSize)

/// Burst `index` of the sequence: fresh mbufs from the pool with frames index*32 ..< index*32+32.
func fill(burst index: Int) {
    guard sy_pktmbuf_alloc_bulk(driver.mempool, packets, UInt32(burstSize)) == 0 else {
        fatalError("InstructionCount: the pool is empty (mbufs leaked?)")
    }
    for slot in 0..<burstSize {
        let frame = frames[index * burstSize + slot]
        let mbuf = packets[slot]!
        guard let data = sy_pktmbuf_append(mbuf, UInt16(frame.count)) else { fatalError("frame too large") }
        frame.withUnsafeBytes { UnsafeMutableRawPointer(data).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        sy_mbuf_meta(mbuf).initialize(to: sy_meta())
    }
}

/// Packets run by warmUpBurst and by measuredBurst. Updated after the graph returns, so neither
/// function ends in a tail call (callgrind toggles collection on a function's entry and return),
/// and different, so the linker cannot fold the two functions into one.
var warmedPackets = 0
var measuredPackets = 0

/// Not counted: the first pass (connections created).
@inline(never)
func warmUpBurst(_ driver: LcoreGraphDriver, _ packets: MbufVector, _ count: Int) {
    driver.run(packets, count: count)
    warmedPackets &+= count
}

/// Counted: one burst through the graph, every stage, the edges and the tx.
@inline(never)
func measuredBurst(_ driver: LcoreGraphDriver, _ packets: MbufVector, _ count: Int) {
    driver.run(packets, count: count)
    measuredPackets &+= count
}

let bursts = flows / burstSize
for index in 0..<bursts {
    fill(burst: index)
    warmUpBurst(driver, packets, burstSize)
}
for _ in 0..<passes {
    for index in 0..<bursts {
        fill(burst: index)
        measuredBurst(driver, packets, burstSize)
    }
}
print("measured_bursts=\(bursts * passes) measured_packets=\(measuredPackets) stages=\(driver.stageNames.joined(separator: ","))")
print(driver.counters.table())
let leaked = driver.close()
packets.deallocate()
guard leaked == 0 else { fatalError("InstructionCount: \(leaked) mbufs not back in the pool") }
EAL.cleanup()
