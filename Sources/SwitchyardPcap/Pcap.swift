import Foundation

/// Classic pcap files (microsecond timestamps, Ethernet link type): what net_pcap reads and
/// writes, and what tshark decodes.
public enum Pcap {
    static let magic: UInt32 = 0xa1b2_c3d4
    static let magicSwapped: UInt32 = 0xd4c3_b2a1
    static let magicNanosecond: UInt32 = 0xa1b2_3c4d
    static let linkTypeEthernet: UInt32 = 1

    /// Writes `packets` as a pcap file, timestamps 1 µs apart.
    public static func write(_ packets: [[UInt8]], to path: String) throws {
        var data = Data(capacity: 24 + packets.reduce(0) { $0 + 16 + $1.count })
        func put32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
        func put16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
        put32(magic); put16(2); put16(4); put32(0); put32(0); put32(65535); put32(linkTypeEthernet)
        for (index, packet) in packets.enumerated() {
            put32(UInt32(index / 1_000_000)); put32(UInt32(index % 1_000_000))
            put32(UInt32(packet.count)); put32(UInt32(packet.count))
            data.append(contentsOf: packet)
        }
        try data.write(to: URL(fileURLWithPath: path))
    }

    public enum ReadError: Error, CustomStringConvertible {
        case notPcap(String)
        case truncated(String, packet: Int)
        public var description: String {
            switch self {
            case .notPcap(let path): "\(path): not a pcap file"
            case .truncated(let path, let packet): "\(path): truncated in packet \(packet)"
            }
        }
    }

    /// Reads every packet of a pcap file (either byte order, µs or ns timestamps).
    public static func read(_ path: String) throws -> [[UInt8]] {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        guard bytes.count >= 24 else { throw ReadError.notPcap(path) }
        let raw = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
        let swapped: Bool
        switch raw {
        case magic, magicNanosecond: swapped = false
        case magicSwapped, magicNanosecond.byteSwapped: swapped = true
        default: throw ReadError.notPcap(path)
        }
        func u32(_ offset: Int) -> UInt32 {
            let v = UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
                | UInt32(bytes[offset + 3]) << 24
            return swapped ? v.byteSwapped : v
        }
        var packets: [[UInt8]] = []
        var offset = 24
        while offset < bytes.count {
            guard offset + 16 <= bytes.count else { throw ReadError.truncated(path, packet: packets.count) }
            let length = Int(u32(offset + 8))
            offset += 16
            guard offset + length <= bytes.count else { throw ReadError.truncated(path, packet: packets.count) }
            packets.append(Array(bytes[offset..<offset + length]))
            offset += length
        }
        return packets
    }
}
