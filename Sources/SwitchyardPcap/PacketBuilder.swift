import SwitchyardHeaders

/// Builds well-formed Ethernet frames (IPv4/IPv6, UDP/TCP) with correct checksums, for example
/// traffic, tests and benchmarks. Addresses default to the RFC 2544 benchmark range.
public struct PacketBuilder {
    public var sourceMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01]
    public var destinationMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02]

    public init() {}

    public enum Transport {
        case udp, tcp

        /// UDP 17, TCP 6.
        public var protocolNumber: UInt8 { self == .udp ? IPProtocol.udp : IPProtocol.tcp }
    }

    /// An IPv4 packet; `frameLength` pads the payload so the frame (without FCS) has that length.
    public func ipv4(source: [UInt8], destination: [UInt8], transport: Transport, sourcePort: UInt16,
                     destinationPort: UInt16, frameLength: Int = 60, tcpFlags: UInt8 = TCPHeader.syn) -> [UInt8]
    {
        let l4Header = transport == .udp ? UDPHeader.size : TCPHeader.size
        let payload = max(0, frameLength - EthernetHeader.size - IPv4Header.size - l4Header)
        let totalLength = IPv4Header.size + l4Header + payload
        var ip: [UInt8] = [0x45, 0, UInt8(totalLength >> 8), UInt8(totalLength & 0xff), 0, 1, 0x40, 0, 64,
                           transport.protocolNumber, 0, 0] + source + destination
        let ipSum = Self.checksum(ip)
        ip[10] = UInt8(ipSum >> 8); ip[11] = UInt8(ipSum & 0xff)
        let pseudo = source + destination + [0, transport.protocolNumber, UInt8((l4Header + payload) >> 8),
                                             UInt8((l4Header + payload) & 0xff)]
        let l4 = transportHeader(transport, sourcePort, destinationPort, payload, pseudo: pseudo, tcpFlags: tcpFlags)
        return ethernet(type: EtherType.ipv4) + ip + l4
    }

    /// An IPv6 packet with the same conventions.
    public func ipv6(source: [UInt8], destination: [UInt8], transport: Transport, sourcePort: UInt16,
                     destinationPort: UInt16, frameLength: Int = 78, tcpFlags: UInt8 = TCPHeader.syn) -> [UInt8]
    {
        let l4Header = transport == .udp ? UDPHeader.size : TCPHeader.size
        let payload = max(0, frameLength - EthernetHeader.size - IPv6Header.size - l4Header)
        let l4Length = l4Header + payload
        let ip: [UInt8] = [0x60, 0, 0, 0, UInt8(l4Length >> 8), UInt8(l4Length & 0xff),
                           transport.protocolNumber, 64] + source + destination
        let pseudo = source + destination + [0, 0, UInt8(l4Length >> 8), UInt8(l4Length & 0xff), 0, 0, 0,
                                             transport.protocolNumber]
        let l4 = transportHeader(transport, sourcePort, destinationPort, payload, pseudo: pseudo, tcpFlags: tcpFlags)
        return ethernet(type: EtherType.ipv6) + ip + l4
    }

    func ethernet(type: UInt16) -> [UInt8] {
        destinationMAC + sourceMAC + [UInt8(type >> 8), UInt8(type & 0xff)]
    }

    func transportHeader(_ transport: Transport, _ sport: UInt16, _ dport: UInt16, _ payload: Int,
                         pseudo: [UInt8], tcpFlags: UInt8) -> [UInt8]
    {
        let body = (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        var header: [UInt8]
        let sumOffset: Int
        switch transport {
        case .udp:
            let length = 8 + payload
            header = [UInt8(sport >> 8), UInt8(sport & 0xff), UInt8(dport >> 8), UInt8(dport & 0xff),
                      UInt8(length >> 8), UInt8(length & 0xff), 0, 0]
            sumOffset = 6
        case .tcp:
            header = [UInt8(sport >> 8), UInt8(sport & 0xff), UInt8(dport >> 8), UInt8(dport & 0xff),
                      0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcpFlags, 0xff, 0xff, 0, 0, 0, 0]
            sumOffset = 16
        }
        var sum = Self.checksum(pseudo + header + body)
        if transport == .udp && sum == 0 { sum = 0xffff }
        header[sumOffset] = UInt8(sum >> 8); header[sumOffset + 1] = UInt8(sum & 0xff)
        return header + body
    }

    /// The Internet checksum (RFC 1071) of `bytes`.
    public static func checksum(_ bytes: [UInt8]) -> UInt16 { Frames.internetChecksum(bytes) }

    /// `count` packets over `flows` distinct UDP/TCP flows (alternating) from 198.18.0.0/16 clients
    /// to `vip`, the example and benchmark traffic.
    public func flowMix(count: Int, flows: Int, vip: [UInt8] = [198, 19, 0, 1], frameLength: Int = 60,
                        tcpFlags: UInt8 = TCPHeader.syn, firstFlow: Int = 0) -> [[UInt8]] {
        (0..<count).map { index in
            let flow = firstFlow + index % max(flows, 1)
            let client: [UInt8] = [198, 18, UInt8((flow >> 8) & 0xff), UInt8(flow & 0xff)]
            return ipv4(source: client, destination: vip, transport: flow % 2 == 0 ? .udp : .tcp,
                        sourcePort: UInt16(1024 + (flow >> 16)), destinationPort: flow % 2 == 0 ? 53 : 80,
                        frameLength: frameLength, tcpFlags: tcpFlags)
        }
    }
}
