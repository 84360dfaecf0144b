import CDPDK

/// The client-side flow of a classified packet, as the connection table and consistent hashing
/// see it: (client address, client port, VIP, VIP port, protocol, family).
///
///     ordinary packet     client = IP source,       VIP = IP destination, ports from TCP/UDP
///                         (ICMP echo: the identifier as client port, 0 as VIP port)
///     ICMP error          the quoted packet went VIP → client: client = quoted destination,
///                         VIP = quoted source, ports swapped
public enum FlowKeys {
    /// Fills `key` for the packet at `frame` described by `meta` (classify must have run).
    @inlinable @inline(__always)
    public static func fill(_ key: UnsafeMutablePointer<sy_flow_key>, frame: UnsafeRawPointer, meta: UnsafePointer<sy_meta>) {
        let raw = UnsafeMutableRawPointer(key)
        raw.storeBytes(of: UInt64(0), toByteOffset: 0, as: UInt64.self)
        raw.storeBytes(of: UInt64(0), toByteOffset: 8, as: UInt64.self)
        raw.storeBytes(of: UInt64(0), toByteOffset: 16, as: UInt64.self)
        raw.storeBytes(of: UInt64(0), toByteOffset: 24, as: UInt64.self)
        raw.storeBytes(of: UInt64(0), toByteOffset: 32, as: UInt64.self)
        let m = meta.pointee
        let isError = m.flags & UInt8(SY_META_ICMP_ERROR) != 0
        let l3 = frame + Int(isError ? m.inner_l3 : m.l3)
        let l4 = frame + Int(isError ? m.inner_l4 : m.l4)
        // The client: the source of an ordinary packet, the destination of a quoted one. Fixed-size
        // loads and stores per family (a copy of a variable size would be a call to memcpy).
        if m.family == 4 {
            let client = l3 + (isError ? 16 : 12), vip = l3 + (isError ? 12 : 16)
            raw.storeBytes(of: client.loadUnaligned(as: UInt32.self), as: UInt32.self)
            raw.storeBytes(of: vip.loadUnaligned(as: UInt32.self), toByteOffset: 16, as: UInt32.self)
        } else {
            let client = l3 + (isError ? 24 : 8), vip = l3 + (isError ? 8 : 24)
            raw.storeBytes(of: client.loadUnaligned(as: UInt64.self), as: UInt64.self)
            raw.storeBytes(of: client.loadUnaligned(fromByteOffset: 8, as: UInt64.self), toByteOffset: 8, as: UInt64.self)
            raw.storeBytes(of: vip.loadUnaligned(as: UInt64.self), toByteOffset: 16, as: UInt64.self)
            raw.storeBytes(of: vip.loadUnaligned(fromByteOffset: 8, as: UInt64.self), toByteOffset: 24, as: UInt64.self)
        }
        var clientPort: UInt16 = 0, vipPort: UInt16 = 0
        if m.protocol == 6 || m.protocol == 17 {
            if m.flags & UInt8(SY_META_FRAGMENT) == 0 || l4 != frame {
                let sourcePort = l4.loadUnaligned(as: UInt16.self)
                let destinationPort = l4.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
                clientPort = isError ? destinationPort : sourcePort
                vipPort = isError ? sourcePort : destinationPort
            }
        } else if m.protocol == 1 || m.protocol == 58 {
            clientPort = l4.loadUnaligned(fromByteOffset: 4, as: UInt16.self) // echo identifier
        }
        key.pointee.src_port = clientPort
        key.pointee.dst_port = vipPort
        key.pointee.protocol = m.protocol
        key.pointee.family = m.family
    }

    /// The flow hash: CRC32-C of the key, exactly what the connection table's rte_hash computes.
    @inlinable @inline(__always)
    public static func hash(_ key: UnsafePointer<sy_flow_key>) -> UInt32 {
        sy_hash_crc(key, 40, 0)
    }
}
