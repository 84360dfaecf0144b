import Foundation
import SwitchyardPcap

/// The mac-swap example (`switchyard run --example mac-swap`): the smallest configuration that
/// moves packets, on virtual devices only, so it runs on any Debian 12 machine.
///
///     example.pcap ──► net_pcap (replayed forever) ──► count-in ──► reflect ──► net_null
///                      port "wire"                     (counter)    (mac-swap)  port "sink"
enum MacSwapExample {
    static func text(capture: String, cpu: Int) -> String {
        """
        # Switchyard example: replay a capture through two stages into a null device.
        eal:
          hugepages: auto        # hugepages when reserved, else --no-huge
          memory_mb: 512
        ports:
          - name: wire
            device: net_pcap0,rx_pcap=\(capture),infinite_rx=1
            tx_queues: 0
          - name: sink
            device: net_null0
            rx_queues: 0
        stages:
          - name: count-in
            kind: counter
            next: { out: reflect }
          - name: reflect
            kind: mac-swap
            next: { out: port:sink }
        lcores:
          - id: 1
            cpu: \(cpu)
            idle: busy
            poll:
              - { port: wire, queue: 0, to: count-in }

        """
    }

    /// Writes the capture and the configuration into `directory`; returns the configuration's path.
    static func materialise(in directory: String) throws -> String {
        let capture = directory + "/example.pcap"
        try Pcap.write(PacketBuilder().flowMix(count: 1024, flows: 256), to: capture)
        let cpu = min(1, ProcessInfo.processInfo.activeProcessorCount - 1)
        let path = directory + "/switchyard.yaml"
        try text(capture: capture, cpu: cpu).write(toFile: path, atomically: false, encoding: .utf8)
        return path
    }
}
