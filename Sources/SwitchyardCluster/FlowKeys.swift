import CDPDK
import SwitchyardHeaders

/// The client-side flow of a classified packet, as the connection table and consistent hashing
/// see it: (client address, client port, VIP, VIP port, protocol, family).
///
///     ordinary packet     client = IP source,       VIP = IP destination, ports from TCP/UDP
///                         (ICMP echo: the identifier as client port, 0 as VIP port)
///     ICMP error          the quoted packet went VIP → client: client = quoted destination,
///                         VIP = quoted source, ports swapped
///
/// `sy_flow_key` (shim.h), 40 bytes compared bytewise:
///
///      0                16               32       34       36    37     38
///     │ client (16)    │ VIP (16)       │ c port │ v port │proto│family│ zero │
public enum FlowKeys {
    /// Byte offsets in `sy_flow_key` (shim.h). Addresses and ports are stored as they lie in the packet.
    @inlinable public static var clientOffset: Int { 0 }
    @inlinable public static var vipOffset: Int { 16 }
    /// Client port then VIP port: one 32-bit word, the two ports as a TCP/UDP header holds them.
    @inlinable public static var portsOffset: Int { 32 }
    @inlinable public static var protocolOffset: Int { 36 }
    @inlinable public static var familyOffset: Int { 37 }

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
        let bytes = UnsafeMutableRawPointer(mutating: frame)
        let l3 = bytes + Int(isError ? m.inner_l3 : m.l3)
        let l4 = bytes + Int(isError ? m.inner_l4 : m.l4)
        // The client: the source of an ordinary packet, the destination of a quoted one. Fixed-size
        // loads and stores per family (a copy of a variable size would be a call to memcpy).
        if m.family == 4 {
            let ip = IPv4Header(unchecked: l3)
            raw.storeBytes(of: isError ? ip.destination : ip.source, toByteOffset: clientOffset, as: UInt32.self)
            raw.storeBytes(of: isError ? ip.source : ip.destination, toByteOffset: vipOffset, as: UInt32.self)
        } else {
            let ip = IPv6Header(unchecked: l3)
            raw.storeBytes(of: isError ? ip.destinationHigh : ip.sourceHigh, toByteOffset: clientOffset, as: UInt64.self)
            raw.storeBytes(of: isError ? ip.destinationLow : ip.sourceLow, toByteOffset: clientOffset + 8, as: UInt64.self)
            raw.storeBytes(of: isError ? ip.sourceHigh : ip.destinationHigh, toByteOffset: vipOffset, as: UInt64.self)
            raw.storeBytes(of: isError ? ip.sourceLow : ip.destinationLow, toByteOffset: vipOffset + 8, as: UInt64.self)
        }
        var clientPort: UInt16 = 0, vipPort: UInt16 = 0
        if IPProtocol.isTCPOrUDP(m.protocol) {
            if m.flags & UInt8(SY_META_FRAGMENT) == 0 || l4 != bytes {
                let ports = TransportPorts(unchecked: l4)
                let sourcePort = ports.sourcePortRaw
                let destinationPort = ports.destinationPortRaw
                clientPort = isError ? destinationPort : sourcePort
                vipPort = isError ? sourcePort : destinationPort
            }
        } else if m.protocol == IPProtocol.icmp || m.protocol == IPProtocol.icmpv6 {
            clientPort = ICMPHeader(unchecked: l4).identifierRaw // echo identifier
        }
        key.pointee.src_port = clientPort
        key.pointee.dst_port = vipPort
        key.pointee.protocol = m.protocol
        key.pointee.family = m.family
    }

    /// Fills the key of an IPv4 TCP/UDP packet from client to VIP into a zeroed `key` (a fresh
    /// `sy_meta`'s): only the non-zero bytes are written. Addresses and `ports` (client port,
    /// VIP port: `TransportPorts.bothRaw`) as they lie in the packet.
    @inlinable @inline(__always)
    public static func fillZeroed(_ key: UnsafeMutablePointer<sy_flow_key>, ipv4Client client: UInt32, vip: UInt32,
                                  ports: UInt32, protocolNumber: UInt8)
    {
        let raw = UnsafeMutableRawPointer(key)
        raw.storeBytes(of: client, toByteOffset: clientOffset, as: UInt32.self)
        raw.storeBytes(of: vip, toByteOffset: vipOffset, as: UInt32.self)
        raw.storeBytes(of: ports, toByteOffset: portsOffset, as: UInt32.self)
        raw.storeBytes(of: protocolNumber, toByteOffset: protocolOffset, as: UInt8.self)
        raw.storeBytes(of: UInt8(4), toByteOffset: familyOffset, as: UInt8.self)
    }

    /// The IPv6 form of `fillZeroed(_:ipv4Client:vip:ports:protocolNumber:)`: addresses as two raw words each.
    @inlinable @inline(__always)
    public static func fillZeroed(_ key: UnsafeMutablePointer<sy_flow_key>, ipv6ClientHigh clientHigh: UInt64,
                                  clientLow: UInt64, vipHigh: UInt64, vipLow: UInt64, ports: UInt32,
                                  protocolNumber: UInt8)
    {
        let raw = UnsafeMutableRawPointer(key)
        raw.storeBytes(of: clientHigh, toByteOffset: clientOffset, as: UInt64.self)
        raw.storeBytes(of: clientLow, toByteOffset: clientOffset + 8, as: UInt64.self)
        raw.storeBytes(of: vipHigh, toByteOffset: vipOffset, as: UInt64.self)
        raw.storeBytes(of: vipLow, toByteOffset: vipOffset + 8, as: UInt64.self)
        raw.storeBytes(of: ports, toByteOffset: portsOffset, as: UInt32.self)
        raw.storeBytes(of: protocolNumber, toByteOffset: protocolOffset, as: UInt8.self)
        raw.storeBytes(of: UInt8(6), toByteOffset: familyOffset, as: UInt8.self)
    }

    /// The flow hash: CRC32-C of the key, exactly what the connection table's rte_hash computes.
    @inlinable @inline(__always)
    public static func hash(_ key: UnsafePointer<sy_flow_key>) -> UInt32 {
        sy_hash_crc(key, 40, 0)
    }

    /// `hash` of the key `fillZeroed(_:ipv4Client:vip:ports:protocolNumber:)` writes, computed from
    /// the values in registers: the same five 8-byte CRC steps over the same 40 bytes. Reading the
    /// key back from memory right after writing it made every packet wait for its stores (a load
    /// that spans two stores cannot be forwarded from them).
    @inlinable @inline(__always)
    public static func hash(ipv4Client client: UInt32, vip: UInt32, ports: UInt32, protocolNumber: UInt8) -> UInt32 {
        var crc = sy_hash_crc_8byte(UInt64(client), 0)
        crc = sy_hash_crc_8byte(0, crc)
        crc = sy_hash_crc_8byte(UInt64(vip), crc)
        crc = sy_hash_crc_8byte(0, crc)
        return sy_hash_crc_8byte(lastWord(ports: ports, protocolNumber: protocolNumber, family: 4), crc)
    }

    /// `hash` of the key the IPv6 `fillZeroed` writes, from the values in registers.
    @inlinable @inline(__always)
    public static func hash(ipv6ClientHigh clientHigh: UInt64, clientLow: UInt64, vipHigh: UInt64, vipLow: UInt64,
                            ports: UInt32, protocolNumber: UInt8) -> UInt32
    {
        var crc = sy_hash_crc_8byte(clientHigh, 0)
        crc = sy_hash_crc_8byte(clientLow, crc)
        crc = sy_hash_crc_8byte(vipHigh, crc)
        crc = sy_hash_crc_8byte(vipLow, crc)
        return sy_hash_crc_8byte(lastWord(ports: ports, protocolNumber: protocolNumber, family: 6), crc)
    }

    /// Bytes 32..<40 of a key as one little-endian word: ports, protocol, family, two zero bytes.
    @inlinable @inline(__always)
    static func lastWord(ports: UInt32, protocolNumber: UInt8, family: UInt8) -> UInt64 {
        UInt64(ports) | UInt64(protocolNumber) << 32 | UInt64(family) << 40
    }
}
