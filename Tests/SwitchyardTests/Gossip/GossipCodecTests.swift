import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardGossip
import SwitchyardTesting
import Testing

/// The wire format: every kind round-trips, the layout is the documented one, and every malformed
/// variant is dropped with its own counter and changes nothing (table, peer state, other counters).
@Suite("gossip wire format", .serialized)
struct GossipCodecTests {
    static func record(_ op: FlowOp, client n: Int, family: UInt8, owner: UInt16) -> FlowRecord {
        let flow = TestFlow(client: n, family: family, udp: n % 2 == 1)
        let backend = flow.backend(owner: Int(owner))
        return FlowRecord(op: op, key: flow.key, owner: owner, backendHigh: op == .open ? backend.high : 0,
                          backendLow: op == .open ? backend.low : 0,
                          backendPortNetworkOrder: UInt16(8080).bigEndian)
    }

    static let samples: [GossipBody] = [
        .heartbeat(Heartbeat(synchronised: true, ownedFlows: 123_456, ownedHash: 0xdead_beef_0bad_cafe)),
        .heartbeat(Heartbeat(synchronised: false, ownedFlows: 0, ownedHash: 0)),
        .flows([record(.open, client: 1, family: 4, owner: 2), record(.close, client: 2, family: 6, owner: 2),
                record(.open, client: 3, family: 6, owner: 2)]),
        .flows([]),
        .digest(Digest(counts: (0..<64).map { UInt32($0 * 3) }, hashes: (0..<64).map { UInt64($0) &* 0x9e37_79b9_7f4a_7c15 })),
        .syncRequest(SyncRequest(requestID: 77, scope: .everything, buckets: ~0)),
        .syncRequest(SyncRequest(requestID: 78, scope: .owned, buckets: 0x8000_0000_0000_0001, cursor: 123_456, window: 7)),
        .syncRequest(SyncRequest(requestID: 79, scope: .ownedAndYours, buckets: 1, cursor: 9, window: 8)),
        .syncRequest(SyncRequest(requestID: 80, scope: .ownedAtStart, buckets: ~0, cursor: 0, window: 1024)),
        .syncResponse(SyncResponse(requestID: 77, last: true, from: 100, to: 4096, expected: 9,
                                   records: [record(.open, client: 9, family: 4, owner: 3)])),
        .syncResponse(SyncResponse(requestID: 77, last: false, windowEnd: true, from: 0, to: 0, records: [])),
        .challenge(Challenge(nonce: 0x0102_0304_0506_0708, answer: 0)),
        .challenge(Challenge(nonce: 0, answer: 0xffff_0000_ffff_0000)),
    ]

    @Test func everyKindRoundTrips() throws {
        let authenticator = GossipAuthenticator(key: TestSender.sharedKey)
        for (index, body) in Self.samples.enumerated() {
            let header = GossipHeader(kind: body.kind.rawValue, sender: 2, incarnation: 0x0123_4567_89ab_cdef,
                                      sequence: UInt64(index + 1), timestamp: 1_700_000_000_000_000)
            var buffer = [UInt8](repeating: 0, count: 2048)
            let length = try #require(buffer.withUnsafeMutableBytes {
                GossipCodec.encode(body, header: header, authenticator: authenticator, into: $0)
            })
            #expect(length <= GossipWire.maxDatagram)
            let decoded = buffer.withUnsafeBytes {
                GossipCodec.decode(UnsafeRawBufferPointer(rebasing: $0[0..<length]), authenticator: authenticator)
            }
            guard case .success(let message) = decoded else {
                Issue.record("\(body.kind) did not decode: \(decoded)")
                continue
            }
            #expect(message.body == body)
            #expect(message.header.sender == 2 && message.header.incarnation == header.incarnation)
            #expect(message.header.sequence == header.sequence && message.header.timestamp == header.timestamp)
            #expect(message.header.payloadLength == length - GossipWire.headerSize - GossipWire.macSize)
        }
    }

    @Test func theLayoutIsTheDocumentedOne() throws {
        var sender = TestSender(host: 0x0102, incarnation: 0x1112_1314_1516_1718)
        let bytes = sender.datagram(.flows([Self.record(.open, client: 0x0a0b0c, family: 4, owner: 0x0102)]),
                                    sequence: 0x2122_2324_2526_2728)
        // Header: "SG", version 2, kind 2, sender, payload length 4 + 24.
        #expect(Array(bytes[0..<8]) == [0x53, 0x47, 2, 2, 0x01, 0x02, 0, 28])
        #expect(Array(bytes[8..<16]) == [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18])
        #expect(Array(bytes[16..<24]) == [0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28])
        // Payload: count 1, reserved; record: op, family, protocol, 0, owner, ports, addresses.
        let flow = TestFlow(client: 0x0a0b0c, family: 4, udp: false)
        let port = UInt16(1024 + 0x0a0b0c % 60000)
        #expect(Array(bytes[32..<36]) == [0, 1, 0, 0])
        #expect(Array(bytes[36..<48]) == [1, 4, 6, 0, 0x01, 0x02, UInt8(port >> 8), UInt8(port & 0xff), 0, 80, 0x1f, 0x90])
        #expect(Array(bytes[48..<52]) == [10, 0x0a, 0x0b, 0x0c])
        #expect(Array(bytes[52..<56]) == [198, 19, 0, 1])
        #expect(Array(bytes[56..<60]) == flow.backend(owner: 0x0102).bytes)
        #expect(bytes.count == 60 + 32)
        // An IPv6 record is 60 bytes.
        #expect(Self.record(.open, client: 1, family: 6, owner: 1).encodedSize == 60)
    }

    @Test func aFlowBatchFillsOneDatagramAndNoMore() throws {
        let authenticator = GossipAuthenticator(key: TestSender.sharedKey)
        for family: UInt8 in [4, 6] {
            let records = (0..<200).map { Self.record(.open, client: $0, family: family, owner: 2) }
            let fit = GossipCodec.recordsThatFit(records, overhead: GossipWire.flowsOverhead)
            #expect(fit == (family == 4 ? 55 : 22))
            let header = GossipHeader(kind: 2, sender: 2, incarnation: 1, sequence: 1, timestamp: 0)
            var buffer = [UInt8](repeating: 0, count: 2048)
            buffer.withUnsafeMutableBytes { raw in
                let full = GossipCodec.encode(.flows(Array(records.prefix(fit))), header: header, authenticator: authenticator, into: raw)
                #expect(full != nil && full! <= GossipWire.maxDatagram)
                #expect(GossipCodec.encode(.flows(Array(records.prefix(fit + 1))), header: header, authenticator: authenticator,
                                           into: raw) == nil)
            }
        }
    }

    // MARK: - Malformed input through a node

    final class Bench {
        let bed: GossipTestbed
        let host: Host
        var sender: TestSender
        let from: GossipEndpoint

        init() throws {
            bed = try GossipTestbed()
            host = try bed.makeNode(host: 1)
            sender = TestSender(host: 2)
            from = bed.endpoint(2)
            sender.verify(with: host.node, from: from)
        }

        /// Feeds `bytes` and checks that it is dropped for `reason` and that nothing but that
        /// counter changed: not the table, not the peers, not any other count.
        func expectDropped(_ bytes: [UInt8], _ reason: GossipDrop, from source: GossipEndpoint? = nil,
                           _ comment: String = "", sourceLocation: SourceLocation = #_sourceLocation)
        {
            let now = GossipClock.monotonicNanoseconds()
            let table = host.snapshot()
            let before = host.node.counters(now: now)
            let result = host.node.handle(bytes, from: source ?? from)
            #expect(result == reason, "\(comment)", sourceLocation: sourceLocation)
            let after = host.node.counters(now: now)
            #expect(after.dropped(reason) == before.dropped(reason) + 1, sourceLocation: sourceLocation)
            for (name, value) in after.values where name != "dropped-" + reason.rawValue {
                #expect(value == before.value(name), "\(name) changed (\(comment))", sourceLocation: sourceLocation)
            }
            #expect(after.peers == before.peers, "peer state changed (\(comment))", sourceLocation: sourceLocation)
            #expect(host.snapshot() == table, "table changed (\(comment))", sourceLocation: sourceLocation)
        }

        func flows(_ clients: [Int]) -> GossipBody {
            .flows(clients.enumerated().map { GossipCodecTests.record(.open, client: $0.element, family: $0.offset % 2 == 0 ? 4 : 6, owner: 2) })
        }

        /// The header bytes of a datagram, with the payload length set to `length`.
        func header(of bytes: [UInt8], payloadLength: Int) -> [UInt8] {
            var header = Array(bytes[0..<GossipWire.headerSize])
            header[6] = UInt8(payloadLength >> 8)
            header[7] = UInt8(payloadLength & 0xff)
            return header
        }

        func payload(of bytes: [UInt8]) -> [UInt8] { Array(bytes[GossipWire.headerSize..<(bytes.count - GossipWire.macSize)]) }
    }

    @Test func malformedDatagramsAreDroppedCountedAndChangeNothing() throws {
        let b = try Bench()
        // Baseline: an authentic batch is applied.
        let first = b.sender.datagram(b.flows([100]))
        #expect(b.host.node.handle(first, from: b.from) == nil)
        #expect(b.host.snapshot()[TestFlow(client: 100)]?.owner == 2)

        // The next authentic message, which every variant below is derived from.
        let next = b.sender.datagram(b.flows([200, 201]))
        b.expectDropped(first, .replayed, "the same datagram again")

        for length in 0..<next.count {
            b.expectDropped(Array(next.prefix(length)), .truncated, "cut to \(length) bytes")
        }
        b.expectDropped(next + [0], .malformed, "a byte past the announced length")
        b.expectDropped(next + [UInt8](repeating: 0, count: GossipWire.maxDatagram + 1 - next.count), .oversized)
        b.expectDropped([UInt8](repeating: 0x41, count: 200), .notGossip)

        var version = next
        version[2] = 3
        b.expectDropped(version, .unknownVersion, "version 3, unsigned")
        b.expectDropped(signedDatagram(header: Array(version[0..<32]), payload: b.payload(of: next)), .unknownVersion,
                        "version 3, signed")
        var version1 = next
        version1[2] = 1
        b.expectDropped(version1, .unknownVersion, "version 1")

        for index in [3, 5, 9, 22, 27, 40, next.count - 40, next.count - 1] {
            var flipped = next
            flipped[index] ^= 0x01
            // Byte 3 is the kind: 2 becomes 3 (a digest), whose length is fixed; byte 5 is the
            // sender's id: 2 becomes 3, whose address this is not; byte 9 is in the incarnation:
            // an older one is stale, one 2⁴⁸ ms newer lies in the future (both checked before
            // the MAC); byte 22 moves the sequence 256 ahead: plausible, so the MAC decides.
            let expected: GossipDrop = switch index {
            case 3: .malformed
            case 5: .unknownSender
            case 9: next[9] & 1 == 1 ? .staleIncarnation : .futureIncarnation
            default: .badMAC
            }
            b.expectDropped(flipped, expected, "bit flipped in byte \(index)")
        }
        var flippedKind = next
        flippedKind[3] = 5 // another valid kind with a variable length: the MAC catches it
        b.expectDropped(flippedKind, .badMAC, "kind changed")
        flippedKind[3] = 4 // a sync request is 20 bytes: caught before the MAC
        b.expectDropped(flippedKind, .malformed, "kind changed to a fixed-length one")
        var wrongKey = TestSender(host: 2, incarnation: b.sender.incarnation, key: [UInt8](repeating: 7, count: 32))
        wrongKey.sequence = b.sender.sequence
        b.expectDropped(wrongKey.datagram(b.flows([300])), .badMAC, "signed with another key")

        // Sender checks: address, port, the header's host id.
        b.expectDropped(next, .unknownSender, from: GossipEndpoint(address: IPAddress("127.0.0.2")!, port: b.from.port))
        b.expectDropped(next, .unknownSender, from: GossipEndpoint(address: IPAddress("127.0.0.1")!, port: 1))
        b.expectDropped(next, .unknownSender, from: b.bed.endpoint(3), "host 2's message from host 3's address")
        var asHost3 = TestSender(host: 3)
        b.expectDropped(asHost3.datagram(.heartbeat(Heartbeat(synchronised: true, ownedFlows: 0, ownedHash: 0))), .unknownSender,
                        from: b.from, "host 3's message from host 2's address")
        var asSelf = TestSender(host: 1)
        b.expectDropped(asSelf.datagram(b.flows([301])), .unknownSender, from: b.from, "claims to be this host")

        // Incarnations.
        var older = TestSender(host: 2, incarnation: b.sender.incarnation - (1 << 16))
        b.expectDropped(older.datagram(b.flows([302])), .staleIncarnation)
        var future = TestSender(host: 2, incarnation: ((GossipClock.wallMicroseconds() / 1000) + 600_000) << 16)
        b.expectDropped(future.datagram(b.flows([303])), .futureIncarnation)

        // Authentic but wrong inside: unknown kind, payload cut anywhere (length and MAC fixed up),
        // bad record fields, a record of another owner.
        let header = b.header(of: next, payloadLength: 16)
        var unknownKind = header
        unknownKind[3] = 9
        b.expectDropped(signedDatagram(header: unknownKind, payload: [UInt8](repeating: 0, count: 16)), .unknownKind)
        let payload = b.payload(of: next)
        for cut in 0..<payload.count {
            b.expectDropped(signedDatagram(header: b.header(of: next, payloadLength: cut), payload: Array(payload.prefix(cut))),
                            .malformed, "payload cut to \(cut) bytes")
        }
        // Payload: [0..<2] count, [2..<4] reserved, then the first record: [4] op, [5] family,
        // [6] protocol, [7] reserved, [8..<10] owner.
        for (index, value, what) in [(5, UInt8(5), "family 5"), (5, 0, "family 0"), (5, 6, "IPv4 record marked IPv6"),
                                     (7, 1, "reserved record byte"), (3, 1, "reserved batch byte"), (1, 3, "count 3 of 2"),
                                     (4, 3, "op 3"), (4, 0, "op 0"), (9, 3, "owner 3 in host 2's batch"),
                                     (8, 0x10, "owner 4098"), (9, 0, "owner 0")] as [(Int, UInt8, String)]
        {
            var changed = payload
            changed[index] = value
            b.expectDropped(signedDatagram(header: b.header(of: next, payloadLength: changed.count), payload: changed),
                            .malformed, what)
        }
        var digest = [UInt8](repeating: 0, count: 4 + 12 * 64)
        digest[1] = 63
        var digestHeader = b.header(of: next, payloadLength: digest.count)
        digestHeader[3] = GossipKind.digest.rawValue
        b.expectDropped(signedDatagram(header: digestHeader, payload: digest), .malformed, "digest of 63 buckets")
        var heartbeatHeader = b.header(of: next, payloadLength: 16)
        heartbeatHeader[3] = GossipKind.heartbeat.rawValue
        b.expectDropped(signedDatagram(header: heartbeatHeader, payload: [2] + [UInt8](repeating: 0, count: 15)), .malformed,
                        "unknown heartbeat flag")

        // None of this moved the peer's state: `next` (sequence 2, never accepted) is still fresh
        // and the incarnation is still the first one.
        #expect(b.host.node.handle(next, from: b.from) == nil)
        let table = b.host.snapshot()
        #expect(table[TestFlow(client: 200)]?.owner == 2)
        #expect(table[TestFlow(client: 201, family: 6, udp: true)]?.owner == 2)
        #expect(table.count == 3)

        // Replay window (1024): far behind the highest, and sequence 0.
        var heartbeat = b.sender
        heartbeat.sequence = 5000
        #expect(b.host.node.handle(heartbeat.datagram(.heartbeat(Heartbeat(synchronised: true, ownedFlows: 1, ownedHash: 1))),
                                   from: b.from) == nil)
        var behind = b.sender
        behind.sequence = 5001 - 1024 - 1
        b.expectDropped(behind.datagram(b.flows([304])), .replayed, "sequence older than the window")
        b.expectDropped(b.sender.datagram(b.flows([305]), sequence: 0), .replayed, "sequence 0")
        #expect(b.host.snapshot() == table)
        // Inside the window and not seen yet: accepted once, then a replay.
        var inside = b.sender
        inside.sequence = 4989
        let late = inside.datagram(b.flows([306]))
        #expect(b.host.node.handle(late, from: b.from) == nil)
        b.expectDropped(late, .replayed, "the late one again")
        #expect(b.host.snapshot()[TestFlow(client: 306)]?.owner == 2)
    }
}
