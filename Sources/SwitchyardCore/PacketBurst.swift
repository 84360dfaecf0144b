/// The largest burst the engine moves at once. Bursts are usually 32 packets (`burst_size`).
public let maximumBurstSize = 256

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
