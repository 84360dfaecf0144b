/// The largest burst the engine moves at once (`burst_size` at most).
public let maximumBurstSize = 256

/// `burst_size` when the configuration omits it. 64 rather than DPDK's customary 32: the
/// connection table's lookup waits for memory three times per burst (buckets, keys, entries), and
/// with a million live flows a burst of 64 halves that wait per packet (+10 % at 1M flows, the same
/// rate at 4k flows; Benchmarks/README.md). Larger bursts gain nothing more (128) or
/// no longer fit the caches (256: a third slower).
public let defaultBurstSize = 64

/// A vector of mbuf pointers, as DPDK's rx/tx burst functions take them.
public typealias MbufVector = UnsafeMutablePointer<OpaquePointer?>

/// A burst of packets handed to a stage: a borrowed view of `count` mbuf pointers.
///
/// The engine owns the storage; a stage must not keep the burst or its packets past `process`.
@frozen
public struct PacketBurst: RandomAccessCollection {
    public let mbufs: MbufVector
    public let count: Int

    @inlinable @inline(__always)
    public init(mbufs: MbufVector, count: Int) {
        self.mbufs = mbufs
        self.count = count
    }

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { count }

    @inlinable @inline(__always)
    public subscript(index: Int) -> Packet {
        // Slots below `count` always hold an mbuf; the engine fills them.
        Packet(mbufs[index].unsafelyUnwrapped)
    }
}
