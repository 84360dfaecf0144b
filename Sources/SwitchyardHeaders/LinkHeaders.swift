/// Ethernet II header.
///
///      0            6            12
///     ┌────────────┬────────────┬───────────┐
///     │ destination│ source     │ EtherType │  (0x8100: an 802.1Q tag follows, then the real type)
///     └────────────┴────────────┴───────────┘
@frozen
public struct EthernetHeader: HeaderView {
    @inlinable public static var size: Int { 14 }
    @inlinable public static var etherTypeOffset: Int { 12 }
    /// ff:ff:ff:ff:ff:ff as a MAC word.
    @inlinable public static var broadcast: UInt64 { 0xffff_ffff_ffff }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    /// MACs as the low 48 bits of a word, memory order (`NeighborView`'s layout).
    @inlinable public var destination: UInt64 {
        @inline(__always) get { raw._mac(0) }
        @inline(__always) nonmutating set { raw._setMAC(0, newValue) }
    }
    @inlinable public var source: UInt64 {
        @inline(__always) get { raw._mac(6) }
        @inline(__always) nonmutating set { raw._setMAC(6, newValue) }
    }
    @inlinable public var etherType: UInt16 {
        @inline(__always) get { raw._be16(12) }
        @inline(__always) nonmutating set { raw._setBE16(12, newValue) }
    }
    /// The EtherType as it lies in memory (big-endian).
    @inlinable public var etherTypeRaw: UInt16 { raw._raw16(12) }
    /// Whether the EtherType is `type`. Compared in memory order: the constant is swapped when
    /// the code is compiled, the packet's field never is. Two or more compares of `etherType`
    /// would share one byte swap per packet that the compiler keeps (two instructions).
    @inlinable @inline(__always)
    public func hasEtherType(_ type: UInt16) -> Bool { etherTypeRaw == type.bigEndian }
    /// Broadcast or multicast destination (the group bit).
    @inlinable public var isGroupDestination: Bool { raw._u8(0) & 1 != 0 }

    /// Swaps source and destination (a packet sent back where it came from).
    @inlinable @inline(__always)
    public func swapAddresses() {
        let destination = self.destination
        self.destination = source
        source = destination
    }
}

/// One 802.1Q tag, the 4 bytes after the Ethernet header's 0x8100: TCI, then the inner EtherType.
///
///     12      14          16
///     │ 8100  │ PCP|DEI|VID│ EtherType │
@frozen
public struct VLANTag: HeaderView {
    @inlinable public static var size: Int { 4 }
    /// Where the tag's fields start in a frame (right after the Ethernet header).
    @inlinable public static var offset: Int { 14 }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    @inlinable public var tci: UInt16 {
        @inline(__always) get { raw._be16(0) }
        @inline(__always) nonmutating set { raw._setBE16(0, newValue) }
    }
    @inlinable public var vlanID: UInt16 { tci & 0x0fff }
    @inlinable public var etherType: UInt16 {
        @inline(__always) get { raw._be16(2) }
        @inline(__always) nonmutating set { raw._setBE16(2, newValue) }
    }
    /// The inner EtherType as it lies in memory (big-endian).
    @inlinable public var etherTypeRaw: UInt16 { raw._raw16(2) }
}

/// Where the network header of an Ethernet frame starts: after the Ethernet header and at most
/// one 802.1Q tag.
@frozen
public struct LinkLayer {
    /// The EtherType after the tag, if any, as it lies in memory (big-endian).
    public let etherTypeRaw: UInt16
    /// 14, or 18 with a tag.
    public let l3: Int

    @inlinable @inline(__always)
    public init(etherTypeRaw: UInt16, l3: Int) {
        self.etherTypeRaw = etherTypeRaw
        self.l3 = l3
    }

    /// The EtherType after the tag, if any, host order.
    @inlinable public var etherType: UInt16 { UInt16(bigEndian: etherTypeRaw) }

    /// Whether the EtherType is `type`, compared in memory order (`EthernetHeader.hasEtherType`):
    /// no byte swap per packet, however many types are tried.
    @inlinable @inline(__always)
    public func hasEtherType(_ type: UInt16) -> Bool { etherTypeRaw == type.bigEndian }

    /// The link layer of `packet`, or nil when its Ethernet header (or tag) is cut short.
    @inlinable @inline(__always)
    public init?(_ packet: PacketBytes) {
        guard let ethernet = packet.ethernet() else { return nil }
        if ethernet.hasEtherType(EtherType.vlan) {
            guard let tag = packet.header(VLANTag.self, at: VLANTag.offset) else { return nil }
            self.init(etherTypeRaw: tag.etherTypeRaw, l3: EthernetHeader.size + VLANTag.size)
        } else {
            self.init(etherTypeRaw: ethernet.etherTypeRaw, l3: EthernetHeader.size)
        }
    }
}

/// ARP for IPv4 over Ethernet (RFC 826): 28 bytes.
///
///      0      2      4    5    6     8            14         18           24
///     │ htype│ ptype│hlen│plen│ oper │ sender MAC  │ sender IP│ target MAC  │ target IP │
@frozen
public struct ARPHeader: HeaderView {
    @inlinable public static var size: Int { 28 }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    @inlinable public var hardwareType: UInt16 { raw._be16(0) }
    @inlinable public var protocolType: UInt16 { raw._be16(2) }
    @inlinable public var hardwareLength: UInt8 { raw._u8(4) }
    @inlinable public var protocolLength: UInt8 { raw._u8(5) }
    @inlinable public var operation: UInt16 {
        @inline(__always) get { raw._be16(6) }
        @inline(__always) nonmutating set { raw._setBE16(6, newValue) }
    }
    /// Ethernet / IPv4 / 6 / 4.
    @inlinable public var isEthernetIPv4: Bool {
        hardwareType == ARPValue.hardwareEthernet && protocolType == EtherType.ipv4
            && hardwareLength == ARPValue.ethernetAddressLength && protocolLength == ARPValue.ipv4AddressLength
    }
    @inlinable public var senderMAC: UInt64 {
        @inline(__always) get { raw._mac(8) }
        @inline(__always) nonmutating set { raw._setMAC(8, newValue) }
    }
    /// Raw word, memory order.
    @inlinable public var senderAddress: UInt32 {
        @inline(__always) get { raw._raw32(14) }
        @inline(__always) nonmutating set { raw._setRaw32(14, newValue) }
    }
    @inlinable public var targetMAC: UInt64 {
        @inline(__always) get { raw._mac(18) }
        @inline(__always) nonmutating set { raw._setMAC(18, newValue) }
    }
    @inlinable public var targetAddress: UInt32 {
        @inline(__always) get { raw._raw32(24) }
        @inline(__always) nonmutating set { raw._setRaw32(24, newValue) }
    }

    /// Writes the fixed part of an Ethernet/IPv4 ARP message: types, lengths and `operation`.
    @inlinable @inline(__always)
    public func setEthernetIPv4(operation: UInt16) {
        raw._setBE16(0, ARPValue.hardwareEthernet)
        raw._setBE16(2, EtherType.ipv4)
        raw._setU8(4, ARPValue.ethernetAddressLength)
        raw._setU8(5, ARPValue.ipv4AddressLength)
        self.operation = operation
    }
}

extension LinkLayer {
    /// Writes the EtherType that names the header at `l3` (14: the Ethernet header's; 18: the
    /// VLAN tag's), the two bytes just before it.
    @inlinable @inline(__always)
    public static func setEtherType(_ type: UInt16, before l3: Int, in frame: UnsafeMutableRawPointer) {
        frame._setBE16(l3 - 2, type)
    }
}
