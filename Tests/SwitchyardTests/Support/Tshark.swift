import Foundation
import SwitchyardPcap

/// One frame as tshark decoded it.
struct TsharkFrame {
    /// 0-based index of the frame in the list given to tshark.
    var index: Int
    /// `frame.protocols`, e.g. "eth:ethertype:vlan:ethertype:ip:tcp".
    var protocols: String
    /// Every requested field, with all its occurrences (outer layer first), as tshark prints them.
    var fields: [String: [String]]
    /// Expert infos: severity ("error", "warning", "note", "chat", "comment") and message.
    var expert: [(severity: String, message: String)]
    /// Why the frame is not well formed; empty when it is.
    var problems: [String]

    /// The first (outermost) value of `field`, nil when absent.
    func field(_ name: String) -> String? { fields[name]?.first }

    /// All values of `field` (outer layer first), empty when absent.
    func values(_ name: String) -> [String] { fields[name] ?? [] }
}

/// Decodes frames with tshark, an independent dissector, with checksum validation on for IPv4,
/// TCP and UDP (ICMP and ICMPv6 checksums are always checked). A frame is not well formed when
/// tshark marks it malformed, finds a bad or illegal checksum, or raises an expert error.
///
///     let decoded = try Tshark.assertWellFormed(frames: [frame], decodeAs: [Tshark.gue(port: 6080)])
///     #expect(decoded[0].protocols == "eth:ethertype:ip:udp:gue:ip:udp:data")
enum Tshark {
    /// Fields always extracted, for callers' checks.
    static let defaultFields = [
        "eth.src", "eth.dst", "vlan.id", "ip.src", "ip.dst", "ip.proto", "ipv6.src", "ipv6.dst", "ipv6.nxt",
        "tcp.srcport", "tcp.dstport", "tcp.flags", "udp.srcport", "udp.dstport", "vxlan.vni", "gue.proto",
        "icmp.type", "icmp.code", "icmpv6.type", "icmpv6.code", "arp.opcode", "gre.proto", "esp.spi", "data.data",
    ]

    /// Checksum status fields: 0 = bad, 1 = good, 2 = unverified, 3 = not present, 4 = illegal.
    static let checksumStatusFields = [
        "ip.checksum.status", "tcp.checksum.status", "udp.checksum.status", "icmp.checksum.status",
        "icmpv6.checksum.status", "gre.checksum.status",
    ]

    /// Preferences: checksum validation on; TCP sequence analysis off, so each frame is judged alone.
    static let preferences = [
        "ip.check_checksum:TRUE", "tcp.check_checksum:TRUE", "udp.check_checksum:TRUE",
        "tcp.analyze_sequence_numbers:FALSE",
    ]

    /// A decode-as rule for GUE (variant 0, a dissector this file adds to tshark) on UDP `port`.
    static func gue(port: UInt16) -> String { "udp.port==\(port),gue" }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Decodes `frames` (written to a pcap with `Pcap.write`). `decodeAs` takes tshark `-d`
    /// rules such as "udp.port==6080,gue" or "udp.port==8472,vxlan"; `fields` are extracted on top
    /// of `defaultFields`.
    static func decode(frames: [[UInt8]], decodeAs: [String] = [], fields: [String] = []) throws -> [TsharkFrame] {
        let directory = try TemporaryDirectory()
        try Pcap.write(frames, to: directory.file("frames.pcap"))
        let decoded = try decode(pcap: directory.file("frames.pcap"), decodeAs: decodeAs, fields: fields,
                                 scratch: directory)
        guard decoded.count == frames.count else {
            throw Failure(description: "tshark decoded \(decoded.count) frames, expected \(frames.count)")
        }
        return decoded
    }

    /// Decodes every frame of the pcap file at `path`.
    static func decode(pcap path: String, decodeAs: [String] = [], fields: [String] = []) throws -> [TsharkFrame] {
        try decode(pcap: path, decodeAs: decodeAs, fields: fields, scratch: TemporaryDirectory())
    }

    /// Decodes `frames` and throws a `Failure` naming each frame that is malformed, has a bad
    /// checksum or an expert error; returns the decoded frames for further checks.
    @discardableResult
    static func assertWellFormed(frames: [[UInt8]], decodeAs: [String] = [],
                                 fields: [String] = []) throws -> [TsharkFrame]
    {
        let decoded = try decode(frames: frames, decodeAs: decodeAs, fields: fields)
        let bad = decoded.filter { !$0.problems.isEmpty }
        guard bad.isEmpty else {
            let lines = bad.map { frame in
                "frame \(frame.index) (\(frame.protocols)): \(frame.problems.joined(separator: "; "))"
                    + "\n    bytes: \(frames[frame.index].map { String(format: "%02x", $0) }.joined())"
            }
            throw Failure(description: "tshark: \(bad.count) of \(frames.count) frames not well formed:\n"
                + lines.joined(separator: "\n"))
        }
        return decoded
    }

    private static func decode(pcap path: String, decodeAs: [String], fields: [String],
                               scratch: TemporaryDirectory) throws -> [TsharkFrame]
    {
        let lua = try scratch.write("gue.lua", gueDissector)
        let wanted = ["frame.number", "frame.protocols", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message"]
            + checksumStatusFields + defaultFields + fields
        var command = ["tshark", "-n", "-r", path, "-X", "lua_script:\(lua)", "-T", "json"]
        command += preferences.flatMap { ["-o", $0] }
        command += decodeAs.flatMap { ["-d", $0] }
        command += Array(Set(wanted)).sorted().flatMap { ["-e", $0] }
        let result = try ExternalCommand.run(command, timeout: 60)
        guard result.status == 0 else {
            throw Failure(description: "tshark exited with \(result.status): \(result.stderr)")
        }
        guard let packets = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]] else {
            throw Failure(description: "tshark printed no JSON list: \(result.stdout.prefix(500))")
        }
        return packets.enumerated().map { index, packet in
            let layers = (packet["_source"] as? [String: Any])?["layers"] as? [String: Any] ?? [:]
            var values: [String: [String]] = [:]
            for (key, value) in layers { values[key] = value as? [String] ?? [String(describing: value)] }
            return frame(index: index, values)
        }
    }

    private static func frame(index: Int, _ values: [String: [String]]) -> TsharkFrame {
        let severities = (values["_ws.expert.severity"] ?? []).map { severityName(Int($0) ?? 0) }
        let expert = Array(zip(severities, values["_ws.expert.message"] ?? [])).map { (severity: $0, message: $1) }
        var problems: [String] = []
        if values["_ws.malformed"] != nil { problems.append("malformed") }
        for field in checksumStatusFields {
            let name = field.replacingOccurrences(of: ".checksum.status", with: "")
            for status in values[field] ?? [] where status == "0" || status == "4" {
                problems.append("\(name) checksum \(status == "0" ? "bad" : "illegal")")
            }
        }
        problems += expert.filter { $0.severity == "error" }.map { "expert error: \($0.message)" }
        return TsharkFrame(index: index, protocols: values["frame.protocols"]?.first ?? "", fields: values,
                           expert: expert, problems: problems)
    }

    /// Wireshark's expert severities (epan/proto.h).
    private static func severityName(_ value: Int) -> String {
        switch value {
        case 0x0080_0000: "error"
        case 0x0060_0000: "warning"
        case 0x0040_0000: "note"
        case 0x0020_0000: "chat"
        case 0x0010_0000: "comment"
        default: "severity \(value)"
        }
    }

    /// GUE variant 0 (draft-ietf-intarea-gue) for tshark, which has no GUE dissector: the 4-byte
    /// header (plus hlen words of options), then the IPv4 (proto 4) or IPv6 (proto 41) packet.
    /// Offered for decode-as on UDP ports; anything else raises an expert error.
    static let gueDissector = """
        local gue = Proto("gue", "Generic UDP Encapsulation")
        local f_version = ProtoField.uint8("gue.version", "Version", base.DEC, nil, 0xc0)
        local f_control = ProtoField.bool("gue.control", "Control", 8, nil, 0x20)
        local f_hlen = ProtoField.uint8("gue.hlen", "Header length (words)", base.DEC, nil, 0x1f)
        local f_proto = ProtoField.uint8("gue.proto", "Protocol", base.DEC)
        local f_flags = ProtoField.uint16("gue.flags", "Flags", base.HEX)
        gue.fields = { f_version, f_control, f_hlen, f_proto, f_flags }
        local bad_header = ProtoExpert.new("gue.bad_header", "Unsupported GUE header",
                                           expert.group.MALFORMED, expert.severity.ERROR)
        gue.experts = { bad_header }
        function gue.dissector(buffer, pinfo, tree)
            pinfo.cols.protocol = "GUE"
            local subtree = tree:add(gue, buffer(0, math.min(4, buffer:len())))
            if buffer:len() < 4 then
                subtree:add_proto_expert_info(bad_header, "shorter than 4 bytes")
                return
            end
            subtree:add(f_version, buffer(0, 1))
            subtree:add(f_control, buffer(0, 1))
            subtree:add(f_hlen, buffer(0, 1))
            subtree:add(f_proto, buffer(1, 1))
            subtree:add(f_flags, buffer(2, 2))
            local first = buffer(0, 1):uint()
            local proto = buffer(1, 1):uint()
            local hlen = bit32.band(first, 0x1f) * 4
            if bit32.band(first, 0xe0) ~= 0 or buffer:len() <= 4 + hlen then
                subtree:add_proto_expert_info(bad_header, "not variant 0 data, or nothing after the header")
                return
            end
            local next = (proto == 4 and "ip") or (proto == 41 and "ipv6") or nil
            if next == nil then
                subtree:add_proto_expert_info(bad_header, "proto " .. proto .. " is neither 4 nor 41")
                return
            end
            Dissector.get(next):call(buffer(4 + hlen):tvb(), pinfo, tree)
        end
        DissectorTable.get("udp.port"):add_for_decode_as(gue)
        """
}
