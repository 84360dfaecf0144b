import CDPDK
import Foundation
import Glibc
import SwitchyardGossip

/// A flood of bogus datagrams: a gossip header of host 2 (magic, version, HEARTBEAT, sender 2, a
/// made-up incarnation, rising sequence numbers) with a zero MAC, spoofed from host 2's address
/// and port through a raw IP socket (root), sent to every other node in turn at `rate` per second.
/// Without root (no raw socket) it sends the same bytes from a port of its own, which the nodes
/// drop as `unknown-sender`.
final class Flood: @unchecked Sendable {
    let rate: Int
    let fromPort: UInt16
    let targets: [UInt16]
    private let stopFlag = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private let done = DispatchSemaphore(value: 0)
    private(set) var sent = 0
    private(set) var spoofed = false

    init(rate: Int, fromPort: UInt16, targets: [UInt16]) {
        self.rate = rate
        self.fromPort = fromPort
        self.targets = targets
        stopFlag.initialize(to: 0)
    }

    deinit { stopFlag.deallocate() }

    func start() {
        guard rate > 0, !targets.isEmpty else {
            done.signal()
            return
        }
        let thread = Thread { [self] in
            run()
            done.signal()
        }
        thread.start()
    }

    func stop() {
        sy_atomic_store_u64(stopFlag, 1)
        done.wait()
    }

    private func run() {
        let raw = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_RAW))
        spoofed = raw >= 0
        let fd = raw >= 0 ? raw : socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let payload = GossipWire.headerSize + 16 + GossipWire.macSize
        let size = (spoofed ? 28 : 0) + payload
        var packet = [UInt8](repeating: 0, count: size)
        let incarnation = (GossipClock.wallMicroseconds() / 1000) << 16 | 0xbad
        var sequence: UInt64 = 1 << 30
        var next = 0
        let start = GossipClock.monotonicNanoseconds()
        while sy_atomic_load_u64(stopFlag) == 0 {
            // Pacing: as many datagrams as the rate allows by now, then a short sleep.
            let due = Int(Double(GossipClock.monotonicNanoseconds() - start) / 1e9 * Double(rate))
            if sent >= due {
                usleep(200)
                continue
            }
            let port = targets[next % targets.count]
            next += 1
            sequence += 1
            packet.withUnsafeMutableBufferPointer { p in
                var o = 0
                if spoofed {
                    p[0] = 0x45; p[2] = UInt8(size >> 8); p[3] = UInt8(size & 0xff); p[8] = 64; p[9] = 17
                    p[12] = 127; p[15] = 1; p[16] = 127; p[19] = 1
                    p[20] = UInt8(fromPort >> 8); p[21] = UInt8(fromPort & 0xff)
                    p[22] = UInt8(port >> 8); p[23] = UInt8(port & 0xff)
                    p[24] = UInt8((8 + payload) >> 8); p[25] = UInt8((8 + payload) & 0xff)
                    o = 28
                }
                p[o] = 0x53; p[o + 1] = 0x47; p[o + 2] = GossipWire.version; p[o + 3] = GossipKind.heartbeat.rawValue
                p[o + 5] = 2; p[o + 7] = 16
                for b in 0..<8 {
                    p[o + 8 + b] = UInt8(truncatingIfNeeded: incarnation >> (56 - 8 * UInt64(b)))
                    p[o + 16 + b] = UInt8(truncatingIfNeeded: sequence >> (56 - 8 * UInt64(b)))
                }
            }
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = inet_addr("127.0.0.1")
            let rc = packet.withUnsafeBytes { b in
                withUnsafePointer(to: &sin) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, b.baseAddress, b.count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            if rc > 0 { sent += 1 } else { usleep(100) }
        }
    }
}
