import CDPDK

/// One packet: a borrowed view of a DPDK mbuf.
///
/// A `Packet` does not own its mbuf: the engine does, and frees or transmits it exactly once
/// after the stage gives it a disposition. Stages read and rewrite bytes in place.
@frozen
public struct Packet {
    /// The `struct rte_mbuf *`, opaque to Swift.
    public let mbuf: OpaquePointer

    @inlinable @inline(__always)
    public init(_ mbuf: OpaquePointer) { self.mbuf = mbuf }

    /// The first byte of packet data (the start of the Ethernet header on receive).
    @inlinable @inline(__always)
    public var bytes: UnsafeMutableRawPointer { UnsafeMutableRawPointer(sy_mbuf_data(mbuf)) }

    /// Bytes readable at `bytes`: the length of the first segment. Header views check against this.
    @inlinable @inline(__always)
    public var contiguousLength: Int { Int(sy_mbuf_data_len(mbuf)) }

    /// Length of the whole packet, over all segments.
    @inlinable @inline(__always)
    public var length: Int { Int(sy_mbuf_pkt_len(mbuf)) }

    @inlinable @inline(__always)
    public var segmentCount: Int { Int(sy_mbuf_nb_segs(mbuf)) }

    /// The DPDK port the packet arrived on.
    @inlinable @inline(__always)
    public var inputPort: UInt16 { sy_mbuf_port(mbuf) }

    /// The NIC's RSS hash (0 when the device computes none).
    @inlinable @inline(__always)
    public var rssHash: UInt32 {
        get { sy_mbuf_rss_hash(mbuf) }
        nonmutating set { sy_mbuf_set_rss_hash(mbuf, newValue) }
    }

    @inlinable @inline(__always)
    public var headroom: Int { Int(sy_mbuf_headroom(mbuf)) }

    /// What classify learned about this packet (in the mbuf's private area).
    @inlinable @inline(__always)
    public var meta: UnsafeMutablePointer<sy_meta> { sy_mbuf_meta(mbuf) }

    /// Adds `count` bytes in front of the data (for an outer header); nil when headroom is short.
    @inlinable @inline(__always)
    public func prepend(_ count: Int) -> UnsafeMutableRawPointer? {
        sy_pktmbuf_prepend(mbuf, UInt16(truncatingIfNeeded: count)).map { UnsafeMutableRawPointer($0) }
    }

    /// Removes `count` bytes from the front (an outer header); nil when the packet is shorter.
    @inlinable @inline(__always)
    public func removeFront(_ count: Int) -> UnsafeMutableRawPointer? {
        sy_pktmbuf_adj(mbuf, UInt16(truncatingIfNeeded: count)).map { UnsafeMutableRawPointer($0) }
    }
}
