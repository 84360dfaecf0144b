import CDPDK
import Foundation
import SwitchyardTesting

// AddressSanitizer's manual poisoning (the fuzz build always links the ASan runtime).
@_silgen_name("__asan_poison_memory_region")
func asanPoison(_ address: UnsafeRawPointer, _ size: Int)
@_silgen_name("__asan_unpoison_memory_region")
func asanUnpoison(_ address: UnsafeRawPointer, _ size: Int)

/// Where the fuzz input lies in its mbuf, chosen per input by its selector byte.
///
///     roomy   [ headroom 128: guard bytes | packet | tailroom: guard bytes ]   writes outside are caught
///     tight   [ headroom: poisoned        | packet ]| 16 poisoned bytes        reads and writes outside are
///                                                                              caught by ASan at once
public enum Layout {
    /// The usual headroom and tailroom, filled with a pattern that is checked after the stage.
    case roomy
    /// The packet ends at the end of the buffer, and everything around it is ASan-poisoned: a
    /// read one byte past the packet or before it faults. Stages that would grow the packet find
    /// no tailroom (their no-room path).
    case tight
}

/// One packet in a real mbuf, with the bytes around it watched.
///
///     let packet = bench.load(frame, layout: .roomy, port: 0)
///     runner.run(...)                 // the stage under test
///     bench.check(packet)             // nothing written outside the packet (original or final extent)
///     bench.release(packet)           // frees it; bench.checkPool() proves every mbuf came back
public final class PacketBench {
    public let pool: OpaquePointer
    public let poolSize: Int

    public init(poolSize: Int = 63) {
        TestEAL.start()
        pool = TestEAL.makePool(size: poolSize)
        self.poolSize = poolSize
        guard sy_thread_ensure_lcore() == 0 else { violated("no free lcore id for the fuzz thread") }
    }

    /// A loaded packet and what is needed to check the bytes around it afterwards.
    public struct Loaded {
        public let mbuf: OpaquePointer
        public let layout: Layout
        let bufferStart: UnsafeMutableRawPointer
        let bufferLength: Int
        /// The packet's extent when loaded, as offsets into the buffer.
        let originalStart: Int
        let originalEnd: Int
        let poisonedHead: Int
    }

    /// The largest frame a layout takes (longer inputs are cut to it).
    public static func maximumLength(_ layout: Layout) -> Int { layout == .roomy ? 2048 : 2176 }

    /// Copies `frame` into a fresh mbuf laid out as `layout`, arriving on `port`, with an empty `sy_meta`.
    public func load(_ frame: UnsafeRawBufferPointer, layout: Layout, port: UInt16) -> Loaded {
        guard let mbuf = sy_pktmbuf_alloc(pool) else { violated("mempool exhausted: an mbuf was not returned") }
        let data = UnsafeMutableRawPointer(sy_mbuf_data(mbuf)!)
        let headroom = Int(sy_mbuf_headroom(mbuf)), tailroom = Int(sy_mbuf_tailroom(mbuf))
        let bufferStart = data - headroom
        let bufferLength = headroom + tailroom
        let length = min(frame.count, Self.maximumLength(layout))
        switch layout {
        case .roomy:
            _ = sy_pktmbuf_append(mbuf, UInt16(length))
        case .tight:
            // Fill the whole data room, then take the front away: the packet ends at the buffer's end.
            _ = sy_pktmbuf_append(mbuf, UInt16(tailroom))
            if length <= tailroom {
                _ = sy_pktmbuf_adj(mbuf, UInt16(tailroom - length))
            } else {
                _ = sy_pktmbuf_prepend(mbuf, UInt16(length - tailroom))
            }
        }
        let start = UnsafeMutableRawPointer(sy_mbuf_data(mbuf)!)
        if length > 0 { start.copyMemory(from: frame.baseAddress!, byteCount: length) }
        sy_mbuf_set_port(mbuf, port)
        sy_mbuf_meta(mbuf)!.initialize(to: sy_meta())
        let originalStart = start - bufferStart
        var poisonedHead = 0
        switch layout {
        case .roomy:
            for offset in 0..<bufferLength where offset < originalStart || offset >= originalStart + length {
                bufferStart.storeBytes(of: Self.guardByte(offset), toByteOffset: offset, as: UInt8.self)
            }
        case .tight:
            poisonedHead = originalStart & ~7
            if poisonedHead > 0 { asanPoison(bufferStart, poisonedHead) }
            asanPoison(bufferStart + bufferLength, 16)
        }
        return Loaded(mbuf: mbuf, layout: layout, bufferStart: bufferStart, bufferLength: bufferLength,
                      originalStart: originalStart, originalEnd: originalStart + length, poisonedHead: poisonedHead)
    }

    @inline(__always)
    static func guardByte(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 37 &+ 0xa5) }

    /// After the stage: one segment, within the buffer, and (roomy) every byte of the buffer
    /// outside both the original and the final extent of the packet still holds its guard value.
    /// Also lifts the poison of a tight layout, so the packet can be read and freed.
    public func check(_ packet: Loaded, stage: String) {
        if packet.layout == .tight {
            if packet.poisonedHead > 0 { asanUnpoison(packet.bufferStart, packet.poisonedHead) }
            asanUnpoison(packet.bufferStart + packet.bufferLength, 16)
        }
        let mbuf = packet.mbuf
        guard sy_mbuf_nb_segs(mbuf) == 1, sy_mbuf_pkt_len(mbuf) == UInt32(sy_mbuf_data_len(mbuf)) else {
            violated("\(stage): a one-segment packet came back with \(sy_mbuf_nb_segs(mbuf)) segments, "
                     + "pkt_len \(sy_mbuf_pkt_len(mbuf)), data_len \(sy_mbuf_data_len(mbuf))")
        }
        let start = UnsafeMutableRawPointer(sy_mbuf_data(mbuf)!) - packet.bufferStart
        let end = start + Int(sy_mbuf_data_len(mbuf))
        guard start >= 0, end <= packet.bufferLength else {
            violated("\(stage): the packet [\(start), \(end)) lies outside its buffer of \(packet.bufferLength) bytes")
        }
        guard packet.layout == .roomy else { return }
        for offset in 0..<packet.bufferLength {
            if (offset >= packet.originalStart && offset < packet.originalEnd) || (offset >= start && offset < end) { continue }
            let byte = packet.bufferStart.load(fromByteOffset: offset, as: UInt8.self)
            if byte != Self.guardByte(offset) {
                violated("\(stage): byte \(offset) of the mbuf buffer was written outside the packet "
                         + "(packet was [\(packet.originalStart), \(packet.originalEnd)), is [\(start), \(end)))")
            }
        }
    }

    /// The packet's bytes now.
    public func bytes(_ packet: Loaded) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(sy_mbuf_pkt_len(packet.mbuf)))
        if !bytes.isEmpty { _ = sy_pktmbuf_read(packet.mbuf, 0, UInt32(bytes.count), &bytes) }
        return bytes
    }

    public func release(_ packet: Loaded) { sy_pktmbuf_free(packet.mbuf) }

    /// Every mbuf is back in the pool.
    public func checkPool() {
        let available = Int(sy_mempool_avail(pool)), size = Int(sy_mempool_size(pool))
        if available != size { violated("\(size - available) mbufs not returned to the pool") }
    }
}

/// An invariant does not hold: says which on stderr and aborts, so libFuzzer keeps the input as a
/// crash file (`crash-<sha1>`).
public func violated(_ message: String) -> Never {
    FileHandle.standardError.write("INVARIANT VIOLATED: \(message)\n".data(using: .utf8)!)
    abort()
}
