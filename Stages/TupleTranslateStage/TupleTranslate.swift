import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore

/// tuple-translate: rewrites classified packets between the public tuple (VIP, port) and the
/// bypass tuple (backend address, port) of the global address translation map (seeds 000/001),
/// keeping every checksum correct by incremental updates (RFC 1624).
///
///                  client ─► VIP:80                                   client ─► 10.1.0.1:8080
///     inbound      meta.has_target ? target : Maglev pick(flow_hash) ──► dst address, dst port
///
///                  10.1.0.1:8080 ─► client                            VIP:80 ─► client
///     reply        meta.backend ─► its service's VIP and port ───────► src address, src port
///
///     ICMP error   inbound: outer dst VIP → backend, quoted src VIP:80 → backend:8080
///                  reply:   outer src backend → VIP, quoted dst backend:8080 → VIP:80
///
///     in ──► out    (translated; IPv4 header, TCP/UDP, quoted and ICMP checksums updated)
///        └─► drop   (not-classified, no-backend, truncated)
public struct TupleTranslate: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// The translated packet.
        case out
    }

    public enum Counter: Int, StageCounter {
        case inbound
        case reply
        case icmpError
        case picked
        case noBackend
        case notClassified
        case truncated

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .inbound: .info("inbound", "packets translated from the VIP to a backend (ICMP errors among them)")
            case .reply: .info("reply", "packets translated from a backend back to the VIP (ICMP errors among them)")
            case .icmpError: .info("icmp-error", "ICMP errors translated by the tuple they quote (both directions)")
            case .picked: .info("picked", "inbound packets whose backend was chosen here by consistent hashing")
            case .noBackend: .drop("no-backend", "inbound packets of a service whose backends all have weight 0")
            case .notClassified: .drop("not-classified", "packets without a service (or a reply without a backend) in their metadata")
            case .truncated: .drop("truncated", "the headers to rewrite are not all within the first segment and the IP packet")
            }
        }
    }

    public static let kind = "tuple-translate"
    public static let summary = "rewrite between the public tuple (VIP, port) and a backend's bypass tuple"

    /// Keeps the memory `view` points into alive.
    @usableFromInline let directory: ServiceDirectory
    @usableFromInline let view: ServiceView
    @usableFromInline let serviceCount: Int
    @usableFromInline let backendCount: Int

    /// No keys of its own; the stage needs the `cluster:` section (the translation map).
    public struct Parameters: StageParameters {
        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            _ = try stage.requireCluster(map, kind: TupleTranslate.kind)
        }
    }

    public init(parameters: Parameters, context: StageContext) throws {
        directory = try context.requireCluster(kind: Self.kind).directory
        view = directory.view
        serviceCount = directory.serviceCount
        backendCount = directory.backendCount
    }

    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<TupleTranslate>) {
        var inbound: UInt64 = 0, replies: UInt64 = 0, errors: UInt64 = 0, picked: UInt64 = 0
        for index in 0..<burst.count {
            let packet = burst[index]
            let meta = packet.meta
            let service = Int(meta.pointee.service)
            let family = meta.pointee.family
            let protocolNumber = meta.pointee.protocol
            guard service != 0, service <= serviceCount, protocolNumber == 6 || protocolNumber == 17,
                  view.services[service - 1].vip.family == family
            else {
                out.drop(index, reason: .notClassified)
                continue
            }
            let isError = meta.pointee.flags & UInt8(SY_META_ICMP_ERROR) != 0
            let isReply = meta.pointee.flags & UInt8(SY_META_REPLY) != 0
            let backend = Int(meta.pointee.backend)
            if isReply, backend == 0 || backend > backendCount || view.backends[backend - 1].address.family != family {
                out.drop(index, reason: .notClassified)
                continue
            }
            let layout = Layout(meta: meta, contiguousLength: packet.contiguousLength)
            guard isError ? layout.fitsError : layout.fitsPacket else {
                out.drop(index, reason: .truncated)
                continue
            }
            let frame = packet.bytes

            if isReply {
                let record = view.backends[backend - 1]
                let owner = view.services[Int(record.service)]
                if isError {
                    Self.translateErrorReply(frame, layout, backend: record.address, vip: owner.vip,
                                             port: owner.portNetworkOrder)
                    errors &+= 1
                } else {
                    Self.translatePacket(frame, layout, source: true, address: owner.vip, port: owner.portNetworkOrder)
                }
                replies &+= 1
                out.send(index, to: .out)
                continue
            }

            let address: IPAddress, port: UInt16
            if meta.pointee.has_target == 1 {
                address = IPAddress(family: family, high: meta.pointee.target_high, low: meta.pointee.target_low)
                port = meta.pointee.target_port
            } else {
                guard let chosen = view.pick(service: service - 1, flowHash: meta.pointee.flow_hash) else {
                    out.drop(index, reason: .noBackend)
                    continue
                }
                let record = view.backends[Int(chosen)]
                address = record.address
                port = record.portNetworkOrder
                meta.pointee.backend = UInt16(truncatingIfNeeded: chosen + 1)
                meta.pointee.target_high = address.high
                meta.pointee.target_low = address.low
                meta.pointee.target_port = port
                meta.pointee.has_target = 1
                picked &+= 1
            }
            if isError {
                Self.translateErrorInbound(frame, layout, address: address, port: port)
                errors &+= 1
            } else {
                Self.translatePacket(frame, layout, source: false, address: address, port: port)
            }
            inbound &+= 1
            out.send(index, to: .out)
        }
        if inbound > 0 { out.count(.inbound, inbound) }
        if replies > 0 { out.count(.reply, replies) }
        if errors > 0 { out.count(.icmpError, errors) }
        if picked > 0 { out.count(.picked, picked) }
    }

    // MARK: - Layout

    /// Where the headers to rewrite are, and whether they all lie within the first segment and
    /// the IP packet (`l3_end`).
    ///
    ///     [eth][vlan?][IP l3 ... ][TCP/UDP l4 ...]                         ordinary packet
    ///     [eth][vlan?][IP l3 ... ][ICMP l4][quoted IP inner_l3][ports inner_l4 ...]   ICMP error
    @frozen @usableFromInline
    struct Layout {
        @usableFromInline let l3: Int
        @usableFromInline let l4: Int
        @usableFromInline let innerL3: Int
        @usableFromInline let innerL4: Int
        @usableFromInline let end: Int
        @usableFromInline let family: UInt8
        @usableFromInline let protocolNumber: UInt8
        @usableFromInline let fragment: Bool

        @inlinable @inline(__always)
        init(meta: UnsafeMutablePointer<sy_meta>, contiguousLength: Int) {
            l3 = Int(meta.pointee.l3)
            l4 = Int(meta.pointee.l4)
            innerL3 = Int(meta.pointee.inner_l3)
            innerL4 = Int(meta.pointee.inner_l4)
            end = min(Int(meta.pointee.l3_end), contiguousLength)
            family = meta.pointee.family
            protocolNumber = meta.pointee.protocol
            fragment = meta.pointee.flags & UInt8(SY_META_FRAGMENT) != 0
        }

        /// Bytes of the fixed IP header.
        @inlinable var ipHeaderLength: Int { family == 4 ? 20 : 40 }
        @inlinable var sourceOffset: Int { family == 4 ? 12 : 8 }
        @inlinable var destinationOffset: Int { family == 4 ? 16 : 24 }
        /// Offset of the checksum in the TCP or UDP header, and the bytes up to its end.
        @inlinable var transportChecksumOffset: Int { protocolNumber == 6 ? 16 : 6 }

        /// An ordinary packet: the IP header, and the ports and checksum of the transport header
        /// unless this is a non-first fragment (`l4` 0: only the address is rewritten).
        @inlinable var fitsPacket: Bool {
            guard l3 != 0, l3 + ipHeaderLength <= end else { return false }
            if l4 == 0 { return fragment }
            return l4 >= l3 + ipHeaderLength && l4 + transportChecksumOffset + 2 <= end
        }

        /// An ICMP error: the outer IP header, the ICMP checksum, the quoted IP header and the
        /// quoted ports (the quoted transport checksum is fixed only when it was quoted).
        @inlinable var fitsError: Bool {
            l3 != 0 && l3 + ipHeaderLength <= end && l4 >= l3 + ipHeaderLength && innerL3 >= l4 + 8
                && innerL3 + ipHeaderLength <= end && innerL4 >= innerL3 + ipHeaderLength && innerL4 + 4 <= end
        }

        /// Whether the quoted transport checksum is among the quoted bytes.
        @inlinable var quotedChecksumPresent: Bool { innerL4 + transportChecksumOffset + 2 <= end }
    }

    // MARK: - Rewrites

    /// What one address rewrite changed (for checksums that cover the header it is in).
    @frozen @usableFromInline
    struct AddressEdit {
        @usableFromInline var old: IPAddress
        @usableFromInline var oldHeaderCheck: UInt16 = 0
        @usableFromInline var newHeaderCheck: UInt16 = 0

        @inlinable init(old: IPAddress) { self.old = old }
    }

    /// What one port rewrite changed.
    @frozen @usableFromInline
    struct PortEdit {
        @usableFromInline var old: UInt16
        @usableFromInline var oldCheck: UInt16 = 0
        @usableFromInline var newCheck: UInt16 = 0

        @inlinable init(old: UInt16) { self.old = old }
    }

    /// Writes `address` at `offset` of the IP header at `ip`; fixes the IPv4 header checksum.
    @inlinable @inline(__always)
    static func rewriteAddress(ip: UnsafeMutableRawPointer, offset: Int, to address: IPAddress) -> AddressEdit {
        var edit = AddressEdit(old: IPAddress(family: address.family, at: ip + offset))
        address.store(to: ip + offset)
        if address.family == 4 {
            edit.oldHeaderCheck = ip.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
            edit.newHeaderCheck = Checksum.adjust(edit.oldHeaderCheck, old: edit.old, new: address)
            ip.storeBytes(of: edit.newHeaderCheck, toByteOffset: 10, as: UInt16.self)
        }
        return edit
    }

    /// Writes `port` at `offset` (0 source, 2 destination) of the TCP/UDP header at `transport` and,
    /// when `checksumPresent`, updates its checksum for the port and the pseudo-header address
    /// change `address`. A zero UDP checksum (none computed) stays zero; a UDP checksum that comes
    /// out as zero is written 0xffff.
    @inlinable @inline(__always)
    static func rewritePort(transport: UnsafeMutableRawPointer, offset: Int, to port: UInt16, layout: Layout,
                            checksumPresent: Bool, address: AddressEdit, newAddress: IPAddress) -> PortEdit
    {
        var edit = PortEdit(old: transport.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
        transport.storeBytes(of: port, toByteOffset: offset, as: UInt16.self)
        guard checksumPresent else { return edit }
        let checkOffset = layout.transportChecksumOffset
        edit.oldCheck = transport.loadUnaligned(fromByteOffset: checkOffset, as: UInt16.self)
        let isUDP = layout.protocolNumber == 17
        if isUDP && edit.oldCheck == 0 { return edit }
        var check = Checksum.adjust(edit.oldCheck, old: address.old, new: newAddress)
        check = Checksum.adjust(check, old: edit.old, new: port)
        if isUDP && check == 0 { check = 0xffff }
        edit.newCheck = check
        transport.storeBytes(of: check, toByteOffset: checkOffset, as: UInt16.self)
        return edit
    }

    /// An ordinary packet: the destination (inbound) or source (reply) address and port.
    @inlinable @inline(__always)
    static func translatePacket(_ frame: UnsafeMutableRawPointer, _ layout: Layout, source: Bool, address: IPAddress,
                                port: UInt16)
    {
        let ip = frame + layout.l3
        let edit = rewriteAddress(ip: ip, offset: source ? layout.sourceOffset : layout.destinationOffset, to: address)
        guard layout.l4 != 0 else { return } // a non-first fragment: its ports and checksum are in the first
        _ = rewritePort(transport: frame + layout.l4, offset: source ? 0 : 2, to: port, layout: layout,
                        checksumPresent: true, address: edit, newAddress: address)
    }

    /// An ICMP error about a packet VIP:port → client, sent to the VIP: the outer destination and
    /// the quoted source become the backend's, then the ICMP checksum follows every change.
    @inlinable @inline(__always)
    static func translateErrorInbound(_ frame: UnsafeMutableRawPointer, _ layout: Layout, address: IPAddress,
                                      port: UInt16)
    {
        let outer = rewriteAddress(ip: frame + layout.l3, offset: layout.destinationOffset, to: address)
        let quoted = rewriteAddress(ip: frame + layout.innerL3, offset: layout.sourceOffset, to: address)
        let quotedPort = rewritePort(transport: frame + layout.innerL4, offset: 0, to: port, layout: layout,
                                     checksumPresent: layout.quotedChecksumPresent, address: quoted,
                                     newAddress: address)
        fixICMPChecksum(frame, layout, outer: layout.family == 6 ? outer : nil, outerNew: address, quoted: quoted,
                        quotedNew: address, port: quotedPort, portNew: port)
    }

    /// An ICMP error from a backend about a packet client → backend:port: the outer source (when
    /// it is the backend itself) and the quoted destination become the VIP's.
    @inlinable @inline(__always)
    static func translateErrorReply(_ frame: UnsafeMutableRawPointer, _ layout: Layout, backend: IPAddress,
                                    vip: IPAddress, port: UInt16)
    {
        let ip = frame + layout.l3
        var outer: AddressEdit?
        if IPAddress(family: layout.family, at: ip + layout.sourceOffset) == backend {
            outer = rewriteAddress(ip: ip, offset: layout.sourceOffset, to: vip)
        }
        let quoted = rewriteAddress(ip: frame + layout.innerL3, offset: layout.destinationOffset, to: vip)
        let quotedPort = rewritePort(transport: frame + layout.innerL4, offset: 2, to: port, layout: layout,
                                     checksumPresent: layout.quotedChecksumPresent, address: quoted, newAddress: vip)
        fixICMPChecksum(frame, layout, outer: layout.family == 6 ? outer : nil, outerNew: vip, quoted: quoted,
                        quotedNew: vip, port: quotedPort, portNew: port)
    }

    /// The ICMP checksum after the quoted address, header checksum, port and transport checksum
    /// changed, and for ICMPv6 the outer address in its pseudo-header (`outer`, nil if unchanged).
    @inlinable @inline(__always)
    static func fixICMPChecksum(_ frame: UnsafeMutableRawPointer, _ layout: Layout, outer: AddressEdit?,
                                outerNew: IPAddress, quoted: AddressEdit, quotedNew: IPAddress, port: PortEdit,
                                portNew: UInt16)
    {
        let icmp = frame + layout.l4
        var check = icmp.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        check = Checksum.adjust(check, old: quoted.old, new: quotedNew)
        check = Checksum.adjust(check, old: quoted.oldHeaderCheck, new: quoted.newHeaderCheck)
        check = Checksum.adjust(check, old: port.old, new: portNew)
        check = Checksum.adjust(check, old: port.oldCheck, new: port.newCheck)
        if let outer { check = Checksum.adjust(check, old: outer.old, new: outerNew) }
        icmp.storeBytes(of: check, toByteOffset: 2, as: UInt16.self)
    }
}
