import CDPDK
import Crypto
import Foundation
import SwitchyardCluster

/// The gossip wire format, version 2 (docs/gossip.md has the byte diagrams). Version 2 added
/// CHALLENGE (replay protection across restarts) and cursor-based sync pages.
///
///     0       2   3   4       6       8                16               24               32
///     ┌───────┬───┬───┬───────┬───────┬────────────────┬────────────────┬────────────────┐
///     │ "SG"  │ver│knd│sender │paylen │  incarnation   │   sequence     │ timestamp (µs) │
///     ├───────┴───┴───┴───────┴───────┴────────────────┴────────────────┴────────────────┤
///     │ payload (paylen bytes, by kind)                                                  │
///     ├──────────────────────────────────────────────────────────────────────────────────┤
///     │ HMAC-SHA256(key, header + payload)  32 bytes                                     │
///     └──────────────────────────────────────────────────────────────────────────────────┘
///
/// Every multi-byte field is big-endian (ports are copied as they are in the packet, which is
/// big-endian too). A datagram is at most `maxDatagram` bytes, so it never fragments.
public enum GossipWire {
    public static let magic: UInt16 = 0x5347 // "SG"
    public static let version: UInt8 = 2
    public static let headerSize = 32
    public static let macSize = 32
    public static let maxDatagram = 1400
    public static let maxPayload = maxDatagram - headerSize - macSize
    /// Digests split each owner's flows into this many buckets by key digest.
    public static let buckets = 64
    public static let flowsOverhead = 4
    public static let syncResponseOverhead = 20
    /// Sync response pages a requester asks for in one SYNC_REQUEST (flow control: it asks for
    /// the next window when the last page of this one has arrived).
    public static let syncWindowPages = 1024
    /// A sequence number further than this ahead of the highest one seen from the sender's
    /// current incarnation is not checked (`implausible-sequence`); the sender is challenged.
    public static let maxSequenceJump: UInt64 = 1 << 20

    /// The payload length a kind must have (nil: variable, at least `minimumPayload`). Checked
    /// before the MAC, so a bogus datagram costs a few compares.
    public static func exactPayload(_ kind: GossipKind) -> Int? {
        switch kind {
        case .heartbeat: 16
        case .digest: 4 + 12 * buckets
        case .syncRequest: 20
        case .challenge: 16
        case .flows, .syncResponse, .listeners: nil
        }
    }

    public static func minimumPayload(_ kind: GossipKind) -> Int {
        switch kind {
        case .flows: flowsOverhead
        case .syncResponse: syncResponseOverhead
        case .listeners: ListenerAnnouncement.overhead
        default: exactPayload(kind)!
        }
    }
}

public enum GossipKind: UInt8, Sendable, CaseIterable {
    case heartbeat = 1
    case flows = 2
    case digest = 3
    case syncRequest = 4
    case syncResponse = 5
    case challenge = 6
    /// The sender's whole listener set (GossipMessage+Listeners.swift).
    case listeners = 7
}

/// Why a datagram was dropped; each is a counter.
public enum GossipDrop: String, CaseIterable, Sendable, Error {
    /// Shorter than its header and MAC, or than the payload length it announces.
    case truncated
    /// Longer than `GossipWire.maxDatagram`.
    case oversized
    /// Does not start with the magic number.
    case notGossip = "not-gossip"
    case unknownVersion = "unknown-version"
    /// Source address and port are not a member's, or not the member the header names.
    case unknownSender = "unknown-sender"
    case badMAC = "bad-mac"
    /// The sender's incarnation is older than the one already known.
    case staleIncarnation = "stale-incarnation"
    /// The sender's incarnation lies further ahead than `max_clock_skew_ms`.
    case futureIncarnation = "future-incarnation"
    /// Sequence number already seen or older than the replay window.
    case replayed
    case unknownKind = "unknown-kind"
    /// Authentic but inconsistent: trailing bytes, bad record fields, records of a foreign owner;
    /// or a payload length that the kind cannot have (checked before the MAC).
    case malformed
    /// Authentic, but of a sender incarnation this host has not yet proven live by a challenge
    /// (after this host's start, a peer's restart, or forgetting the peer).
    case unverified
    /// Further than `GossipWire.maxSequenceJump` ahead of the highest sequence number seen.
    case implausibleSequence = "implausible-sequence"
    /// A CHALLENGE answering a nonce this host did not ask (or no longer asks) that peer.
    case staleAnswer = "stale-answer"
    /// Dropped by the test hook `GossipNode.injectedReceiveLoss` before any processing.
    case injectedLoss = "injected-loss"
}

public struct GossipHeader: Equatable, Sendable {
    public var kind: UInt8
    public var sender: UInt16
    public var payloadLength: Int
    public var incarnation: UInt64
    public var sequence: UInt64
    /// The sender's wall clock when it sent the message, microseconds since 1970.
    public var timestamp: UInt64

    public init(kind: UInt8, sender: UInt16, payloadLength: Int = 0, incarnation: UInt64, sequence: UInt64, timestamp: UInt64) {
        self.kind = kind
        self.sender = sender
        self.payloadLength = payloadLength
        self.incarnation = incarnation
        self.sequence = sequence
        self.timestamp = timestamp
    }
}

public enum FlowOp: UInt8, Sendable {
    /// The owner holds this flow (a new connection, or a state transfer).
    case open = 1
    /// The owner no longer holds it.
    case close = 2
}

/// One flow on the wire: 24 bytes for IPv4, 60 for IPv6.
///
///     0    1     2     3    4      6        8       10       12
///     ┌────┬─────┬─────┬────┬──────┬────────┬────────┬────────┬────────┬────────┬─────────┐
///     │ op │ fam │proto│ 0  │owner │cl.port │vip port│be.port │ client │  VIP   │ backend │
///     └────┴─────┴─────┴────┴──────┴────────┴────────┴────────┴────────┴────────┴─────────┘
///                                                               4 or 16 bytes each (by fam)
public struct FlowRecord: Equatable, Sendable {
    public var op: FlowOp
    /// The flow as the connection table keys it (client side).
    public var key: sy_flow_key
    public var owner: UInt16
    /// The bypass tuple the owner chose (as `FlowEntry` keeps it); zero in closes.
    public var backendHigh: UInt64
    public var backendLow: UInt64
    public var backendPortNetworkOrder: UInt16

    public init(op: FlowOp, key: sy_flow_key, owner: UInt16, backendHigh: UInt64 = 0, backendLow: UInt64 = 0,
                backendPortNetworkOrder: UInt16 = 0)
    {
        self.op = op
        self.key = key
        self.owner = owner
        self.backendHigh = backendHigh
        self.backendLow = backendLow
        self.backendPortNetworkOrder = backendPortNetworkOrder
    }

    public var encodedSize: Int { key.family == 4 ? 24 : 60 }

    public static func == (a: FlowRecord, b: FlowRecord) -> Bool {
        var ka = a.key, kb = b.key
        return a.op == b.op && a.owner == b.owner && a.backendHigh == b.backendHigh && a.backendLow == b.backendLow
            && a.backendPortNetworkOrder == b.backendPortNetworkOrder && memcmp(&ka, &kb, 40) == 0
    }
}

/// Liveness, and a summary of what the sender owns.
///
///     0      1    2      4              8                16
///     ┌──────┬────┬──────┬──────────────┬────────────────┐
///     │flags │ 0  │  0   │ owned flows  │  owned hash    │   flags bit 0: synchronised
///     └──────┴────┴──────┴──────────────┴────────────────┘
public struct Heartbeat: Equatable, Sendable {
    public var synchronised: Bool
    public var ownedFlows: UInt32
    public var ownedHash: UInt64
    public init(synchronised: Bool, ownedFlows: UInt32, ownedHash: UInt64) {
        self.synchronised = synchronised
        self.ownedFlows = ownedFlows
        self.ownedHash = ownedHash
    }
}

/// The sender's own flows, per bucket: count and the wrapping sum of the key digests.
///
///     0        2      4                                   4 + 12 × 64 = 772
///     ┌────────┬──────┬──────────┬────────────┬─────┬──────────┬────────────┐
///     │buckets │  0   │ count[0] │  hash[0]   │ ... │count[63] │ hash[63]   │
///     │  (64)  │      │   u32    │    u64     │     │          │            │
///     └────────┴──────┴──────────┴────────────┴─────┴──────────┴────────────┘
public struct Digest: Equatable, Sendable {
    public var counts: [UInt32]
    public var hashes: [UInt64]
    public init(counts: [UInt32], hashes: [UInt64]) {
        self.counts = counts
        self.hashes = hashes
    }
}

/// What a sync request asks for.
public enum SyncScope: UInt8, Sendable {
    /// Everything the responder's table holds: its own flows and what it learned of others (join).
    case everything = 0
    /// Only the responder's own flows (anti-entropy repair after a digest mismatch).
    case owned = 1
    /// The responder's own flows and the flows it holds of the requester: a host that starts with
    /// `replicate: exceptions` asks this of two peers (`GossipNode.yoursPeers`), which give it
    /// back its own exceptions besides their own.
    case ownedAndYours = 2
    /// Only the responder's own flows, as a sync at start: a host that starts with
    /// `replicate: exceptions` asks this of its other peers (every owner's exceptions once).
    case ownedAtStart = 3

    /// A sync at start (scope everything, owned-and-yours or owned-at-start), not a repair.
    public var isFull: Bool { self != .owned }
    /// The responder sends only the flows it owns.
    public var ownedOnly: Bool { self == .owned || self == .ownedAtStart }
}

///     0              4       5    6        8                16           20
///     ┌──────────────┬───────┬────┬────────┬────────────────┬────────────┐
///     │  request id  │ scope │ 0  │ window │  bucket mask   │   cursor   │
///     └──────────────┴───────┴────┴────────┴────────────────┴────────────┘
/// `cursor`: the responder's table position to scan from (where the last in-order page ended);
/// `window`: at most this many pages answer this request.
public struct SyncRequest: Equatable, Sendable {
    public var requestID: UInt32
    public var scope: SyncScope
    public var buckets: UInt64
    public var cursor: UInt32
    public var window: UInt16
    public init(requestID: UInt32, scope: SyncScope, buckets: UInt64, cursor: UInt32 = 0, window: UInt16 = 1024) {
        self.requestID = requestID
        self.scope = scope
        self.buckets = buckets
        self.cursor = cursor
        self.window = window
    }
}

/// One page of the answer to a sync request: every held flow of the requested buckets at the
/// responder's table positions `from..<to`. Pages of one request are contiguous (a page's `from`
/// is the previous page's `to`), so the requester resumes at the `to` of the last page it got
/// in order, whatever was lost after it.
///
///     0              4       5    6        8        12       16         20
///     ┌──────────────┬───────┬────┬────────┬────────┬────────┬──────────┬───────────┐
///     │  request id  │ flags │ 0  │ count  │  from  │   to   │ expected │ records…  │
///     └──────────────┴───────┴────┴────────┴────────┴────────┴──────────┴───────────┘
///     flags bit 0: last (the scan reached the end of the table); bit 1: the request's window is used up
///     expected: the entries in scope the responder holds (a progress estimate)
public struct SyncResponse: Equatable, Sendable {
    public var requestID: UInt32
    public var last: Bool
    public var windowEnd: Bool
    public var from: UInt32
    public var to: UInt32
    public var expected: UInt32
    public var records: [FlowRecord]
    public init(requestID: UInt32, last: Bool, windowEnd: Bool = false, from: UInt32, to: UInt32, expected: UInt32 = 0,
                records: [FlowRecord])
    {
        self.requestID = requestID
        self.last = last
        self.windowEnd = windowEnd
        self.from = from
        self.to = to
        self.expected = expected
        self.records = records
    }
}

/// Replay protection across restarts: a receiver proves a sender incarnation live by sending it
/// a fresh random nonce; the answer, MACed like every message, carries the nonce back.
///
///     0                8                16
///     ┌────────────────┬────────────────┐
///     │     nonce      │     answer     │   nonce: a question (0: none); answer: the nonce answered (0: none)
///     └────────────────┴────────────────┘
public struct Challenge: Equatable, Sendable {
    public var nonce: UInt64
    public var answer: UInt64
    public init(nonce: UInt64, answer: UInt64) {
        self.nonce = nonce
        self.answer = answer
    }
}

public enum GossipBody: Equatable, Sendable {
    case heartbeat(Heartbeat)
    /// A batch of opens and closes of the sender's own flows.
    ///
    ///     0        2      4
    ///     ┌────────┬──────┬───────────┐
    ///     │ count  │  0   │ records…  │
    ///     └────────┴──────┴───────────┘
    case flows([FlowRecord])
    case digest(Digest)
    case syncRequest(SyncRequest)
    case syncResponse(SyncResponse)
    case challenge(Challenge)
    case listeners(ListenerAnnouncement)

    public var kind: GossipKind {
        switch self {
        case .heartbeat: .heartbeat
        case .flows: .flows
        case .digest: .digest
        case .syncRequest: .syncRequest
        case .syncResponse: .syncResponse
        case .challenge: .challenge
        case .listeners: .listeners
        }
    }
}

public struct GossipMessage: Equatable, Sendable {
    public var header: GossipHeader
    public var body: GossipBody
}

/// HMAC-SHA256 under the shared key; the keyed state is computed once.
public struct GossipAuthenticator: @unchecked Sendable {
    private let keyed: HMAC<SHA256>

    public init(key: [UInt8]) {
        keyed = HMAC<SHA256>(key: SymmetricKey(data: key))
    }

    /// Writes the MAC of `bytes[0..<length]` at `bytes + length`.
    public func sign(_ bytes: UnsafeMutableRawPointer, length: Int) {
        var mac = keyed
        mac.update(data: UnsafeRawBufferPointer(start: bytes, count: length))
        let code = mac.finalize()
        code.withUnsafeBytes { (bytes + length).copyMemory(from: $0.baseAddress!, byteCount: GossipWire.macSize) }
    }

    /// Whether the 32 bytes after `bytes[0..<length]` are its MAC (constant-time comparison).
    public func verify(_ bytes: UnsafeRawPointer, length: Int) -> Bool {
        var mac = keyed
        mac.update(data: UnsafeRawBufferPointer(start: bytes, count: length))
        let code = mac.finalize()
        return code.withUnsafeBytes { computed in
            var difference: UInt64 = 0
            for word in 0..<(GossipWire.macSize / 8) {
                difference |= computed.loadUnaligned(fromByteOffset: word * 8, as: UInt64.self)
                    ^ (bytes + length).loadUnaligned(fromByteOffset: word * 8, as: UInt64.self)
            }
            return difference == 0 // every word compared: constant time
        }
    }
}

/// Encoding into a caller's buffer, and decoding with every length checked.
public enum GossipCodec {
    // MARK: Encoding

    /// Encodes and signs a message into `buffer` (at least `GossipWire.maxDatagram` bytes);
    /// returns its length, or nil when the body does not fit one datagram.
    public static func encode(_ body: GossipBody, header: GossipHeader, authenticator: GossipAuthenticator,
                              into buffer: UnsafeMutableRawBufferPointer) -> Int?
    {
        precondition(buffer.count >= GossipWire.maxDatagram, "gossip buffers hold a whole datagram")
        let base = buffer.baseAddress!
        var w = Writer(base: base + GossipWire.headerSize, limit: GossipWire.maxPayload)
        switch body {
        case .heartbeat(let h):
            w.u8(h.synchronised ? 1 : 0); w.u8(0); w.u16(0); w.u32(h.ownedFlows); w.u64(h.ownedHash)
        case .flows(let records):
            guard records.count <= Int(UInt16.max) else { return nil }
            w.u16(UInt16(records.count)); w.u16(0)
            for record in records { w.record(record) }
        case .digest(let d):
            guard d.counts.count == GossipWire.buckets, d.hashes.count == GossipWire.buckets else { return nil }
            w.u16(UInt16(GossipWire.buckets)); w.u16(0)
            for i in 0..<GossipWire.buckets { w.u32(d.counts[i]); w.u64(d.hashes[i]) }
        case .syncRequest(let r):
            w.u32(r.requestID); w.u8(r.scope.rawValue); w.u8(0); w.u16(r.window); w.u64(r.buckets); w.u32(r.cursor)
        case .syncResponse(let r):
            guard r.records.count <= Int(UInt16.max), r.from <= r.to else { return nil }
            w.u32(r.requestID); w.u8((r.last ? 1 : 0) | (r.windowEnd ? 2 : 0)); w.u8(0); w.u16(UInt16(r.records.count))
            w.u32(r.from); w.u32(r.to); w.u32(r.expected)
            for record in r.records { w.record(record) }
        case .challenge(let c):
            w.u64(c.nonce); w.u64(c.answer)
        case .listeners(let a):
            encodeListeners(a, &w)
        }
        guard !w.overflow else { return nil }
        var h = Writer(base: base, limit: GossipWire.headerSize)
        h.u16(GossipWire.magic); h.u8(GossipWire.version); h.u8(body.kind.rawValue); h.u16(header.sender)
        h.u16(UInt16(w.offset)); h.u64(header.incarnation); h.u64(header.sequence); h.u64(header.timestamp)
        let length = GossipWire.headerSize + w.offset
        authenticator.sign(base, length: length)
        return length + GossipWire.macSize
    }

    /// How many of `records` fit one message whose payload starts with `overhead` bytes.
    public static func recordsThatFit<C: Collection>(_ records: C, overhead: Int) -> Int where C.Element == FlowRecord {
        var room = GossipWire.maxPayload - overhead, count = 0
        for record in records {
            room -= record.encodedSize
            if room < 0 || count == Int(UInt16.max) { break }
            count += 1
        }
        return count
    }

    // MARK: Decoding

    /// Checks sizes, magic, version, the kind and the payload length the kind allows; nothing
    /// else (no MAC yet). Every check is a compare on the first 32 bytes.
    public static func parseHeader(_ datagram: UnsafeRawBufferPointer) -> Result<GossipHeader, GossipDrop> {
        let size = datagram.count
        if size > GossipWire.maxDatagram { return .failure(.oversized) }
        if size < GossipWire.headerSize + GossipWire.macSize { return .failure(.truncated) }
        var r = Reader(datagram: datagram, offset: 0, end: GossipWire.headerSize)
        if r.u16() != GossipWire.magic { return .failure(.notGossip) }
        if r.u8() != GossipWire.version { return .failure(.unknownVersion) }
        let kind = r.u8()!, sender = r.u16()!, length = Int(r.u16()!)
        let header = GossipHeader(kind: kind, sender: sender, payloadLength: length, incarnation: r.u64()!,
                                  sequence: r.u64()!, timestamp: r.u64()!)
        let expected = GossipWire.headerSize + length + GossipWire.macSize
        if size < expected { return .failure(.truncated) }
        if size > expected { return .failure(.malformed) }
        guard let known = GossipKind(rawValue: kind) else { return .failure(.unknownKind) }
        if let exact = GossipWire.exactPayload(known), length != exact { return .failure(.malformed) }
        if length < GossipWire.minimumPayload(known) { return .failure(.malformed) }
        return .success(header)
    }

    /// Whether the datagram carries a valid MAC (the header must have parsed).
    public static func authenticate(_ datagram: UnsafeRawBufferPointer, header: GossipHeader,
                                    authenticator: GossipAuthenticator) -> Bool
    {
        authenticator.verify(datagram.baseAddress!, length: GossipWire.headerSize + header.payloadLength)
    }

    /// Decodes the payload of an authenticated datagram.
    public static func decodeBody(_ datagram: UnsafeRawBufferPointer, header: GossipHeader) -> Result<GossipBody, GossipDrop> {
        guard let kind = GossipKind(rawValue: header.kind) else { return .failure(.unknownKind) }
        var r = Reader(datagram: datagram, offset: GossipWire.headerSize,
                       end: GossipWire.headerSize + header.payloadLength)
        let body: GossipBody?
        switch kind {
        case .heartbeat:
            body = decodeHeartbeat(&r)
        case .flows:
            body = decodeFlows(&r)
        case .digest:
            body = decodeDigest(&r)
        case .syncRequest:
            body = decodeSyncRequest(&r)
        case .syncResponse:
            body = decodeSyncResponse(&r)
        case .challenge:
            body = r.u64().flatMap { nonce in r.u64().map { Challenge(nonce: nonce, answer: $0) } }.map { .challenge($0) }
        case .listeners:
            body = decodeListeners(&r)
        }
        guard let body, r.offset == r.end else { return .failure(.malformed) }
        return .success(body)
    }

    /// The whole check without sender or replay state: header, MAC, body.
    public static func decode(_ datagram: UnsafeRawBufferPointer, authenticator: GossipAuthenticator)
        -> Result<GossipMessage, GossipDrop>
    {
        switch parseHeader(datagram) {
        case .failure(let drop): return .failure(drop)
        case .success(let header):
            guard authenticate(datagram, header: header, authenticator: authenticator) else { return .failure(.badMAC) }
            return decodeBody(datagram, header: header).map { GossipMessage(header: header, body: $0) }
        }
    }

    private static func decodeHeartbeat(_ r: inout Reader) -> GossipBody? {
        guard let flags = r.u8(), flags & ~1 == 0, r.u8() == 0, r.u16() == 0, let count = r.u32(), let hash = r.u64()
        else { return nil }
        return .heartbeat(Heartbeat(synchronised: flags & 1 != 0, ownedFlows: count, ownedHash: hash))
    }

    private static func decodeFlows(_ r: inout Reader) -> GossipBody? {
        guard let count = r.u16(), r.u16() == 0 else { return nil }
        var records: [FlowRecord] = []
        records.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let record = r.record() else { return nil }
            records.append(record)
        }
        return .flows(records)
    }

    private static func decodeDigest(_ r: inout Reader) -> GossipBody? {
        guard r.u16() == UInt16(GossipWire.buckets), r.u16() == 0 else { return nil }
        var counts: [UInt32] = [], hashes: [UInt64] = []
        counts.reserveCapacity(GossipWire.buckets)
        hashes.reserveCapacity(GossipWire.buckets)
        for _ in 0..<GossipWire.buckets {
            guard let count = r.u32(), let hash = r.u64() else { return nil }
            counts.append(count)
            hashes.append(hash)
        }
        return .digest(Digest(counts: counts, hashes: hashes))
    }

    private static func decodeSyncRequest(_ r: inout Reader) -> GossipBody? {
        guard let id = r.u32(), let scope = r.u8().flatMap(SyncScope.init(rawValue:)), r.u8() == 0, let window = r.u16(),
              window > 0, let buckets = r.u64(), let cursor = r.u32()
        else { return nil }
        return .syncRequest(SyncRequest(requestID: id, scope: scope, buckets: buckets, cursor: cursor, window: window))
    }

    private static func decodeSyncResponse(_ r: inout Reader) -> GossipBody? {
        guard let id = r.u32(), let flags = r.u8(), flags & ~3 == 0, r.u8() == 0, let count = r.u16(),
              let from = r.u32(), let to = r.u32(), from <= to, let expected = r.u32()
        else { return nil }
        var records: [FlowRecord] = []
        records.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let record = r.record() else { return nil }
            records.append(record)
        }
        return .syncResponse(SyncResponse(requestID: id, last: flags & 1 != 0, windowEnd: flags & 2 != 0, from: from, to: to,
                                          expected: expected, records: records))
    }

    // MARK: Cursors

    /// Big-endian writer; sets `overflow` instead of writing past `limit`.
    struct Writer {
        let base: UnsafeMutableRawPointer
        let limit: Int
        var offset = 0
        var overflow = false

        init(base: UnsafeMutableRawPointer, limit: Int) {
            self.base = base
            self.limit = limit
        }

        mutating func room(_ n: Int) -> Bool {
            if overflow || offset + n > limit {
                overflow = true
                return false
            }
            return true
        }
        mutating func u8(_ v: UInt8) { if room(1) { base.storeBytes(of: v, toByteOffset: offset, as: UInt8.self); offset += 1 } }
        mutating func u16(_ v: UInt16) { if room(2) { base.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt16.self); offset += 2 } }
        mutating func u32(_ v: UInt32) { if room(4) { base.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt32.self); offset += 4 } }
        mutating func u64(_ v: UInt64) { if room(8) { base.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt64.self); offset += 8 } }
        /// Raw bytes as they are in memory (addresses, ports: already network order).
        mutating func raw(_ pointer: UnsafeRawPointer, _ n: Int) {
            if room(n) { (base + offset).copyMemory(from: pointer, byteCount: n); offset += n }
        }

        mutating func record(_ record: FlowRecord) {
            var key = record.key
            let size = key.family == 4 ? 4 : 16
            u8(record.op.rawValue); u8(key.family); u8(key.protocol); u8(0); u16(record.owner)
            withUnsafeBytes(of: &key.src_port) { raw($0.baseAddress!, 2) }
            withUnsafeBytes(of: &key.dst_port) { raw($0.baseAddress!, 2) }
            var port = record.backendPortNetworkOrder
            withUnsafeBytes(of: &port) { raw($0.baseAddress!, 2) }
            withUnsafeBytes(of: &key.src) { raw($0.baseAddress!, size) }
            withUnsafeBytes(of: &key.dst) { raw($0.baseAddress!, size) }
            var backend = (record.backendHigh, record.backendLow)
            withUnsafeBytes(of: &backend) { raw($0.baseAddress!, size) }
        }
    }

    /// Big-endian reader over `datagram[offset..<end]`; nil past the end.
    struct Reader {
        let datagram: UnsafeRawBufferPointer
        var offset: Int
        let end: Int

        mutating func take(_ n: Int) -> UnsafeRawPointer? {
            guard end - offset >= n else { return nil }
            defer { offset += n }
            return datagram.baseAddress! + offset
        }
        mutating func u8() -> UInt8? { take(1)?.load(as: UInt8.self) }
        mutating func u16() -> UInt16? { take(2).map { UInt16(bigEndian: $0.loadUnaligned(as: UInt16.self)) } }
        mutating func u32() -> UInt32? { take(4).map { UInt32(bigEndian: $0.loadUnaligned(as: UInt32.self)) } }
        mutating func u64() -> UInt64? { take(8).map { UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self)) } }

        mutating func record() -> FlowRecord? {
            guard let opByte = u8(), let op = FlowOp(rawValue: opByte), let family = u8(), family == 4 || family == 6,
                  let proto = u8(), u8() == 0, let owner = u16(), (1...4095).contains(owner)
            else { return nil }
            let size = family == 4 ? 4 : 16
            guard let ports = take(6), let addresses = take(3 * size) else { return nil }
            var key = sy_flow_key()
            key.family = family
            key.protocol = proto
            key.src_port = ports.loadUnaligned(as: UInt16.self)
            key.dst_port = ports.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
            withUnsafeMutableBytes(of: &key.src) { $0.baseAddress!.copyMemory(from: addresses, byteCount: size) }
            withUnsafeMutableBytes(of: &key.dst) { $0.baseAddress!.copyMemory(from: addresses + size, byteCount: size) }
            var backend: (UInt64, UInt64) = (0, 0)
            withUnsafeMutableBytes(of: &backend) { $0.baseAddress!.copyMemory(from: addresses + 2 * size, byteCount: size) }
            return FlowRecord(op: op, key: key, owner: owner, backendHigh: backend.0, backendLow: backend.1,
                              backendPortNetworkOrder: ports.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        }
    }
}

/// The digest of a flow key, identical on every host: the 40 key bytes read as five
/// little-endian 64-bit words, each mixed in with the SplitMix64 finaliser.
public enum FlowDigest {
    @inlinable
    public static func of(_ key: UnsafePointer<sy_flow_key>) -> UInt64 {
        let raw = UnsafeRawPointer(key)
        var h: UInt64 = 0x5357_4954_4348_5944 // "SWITCHYD"
        for word in 0..<5 {
            h = mix(h ^ mix(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: word * 8, as: UInt64.self)) &+ UInt64(word)))
        }
        return h
    }

    /// Which of the `GossipWire.buckets` buckets a digest falls into (its top 6 bits).
    @inlinable
    public static func bucket(_ digest: UInt64) -> Int { Int(digest >> 58) }

    @inlinable
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
