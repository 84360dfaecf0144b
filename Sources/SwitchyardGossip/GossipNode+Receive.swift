import CDPDK
import Foundation
import Glibc
import SwitchyardCluster

/// Receiving: read datagrams, check them in order (size, magic, version, sender, HMAC,
/// incarnation, replay window, body) and dispatch what passes; every drop counted by reason.
extension GossipNode {
    func receive(now: UInt64) {
        var budget = settings.maxMessagesPerPoll
        var sockets = [socket]
        if let multicastSocket { sockets.append(multicastSocket) }
        var idle = 0
        var turn = 0
        while budget > 0 && idle < sockets.count {
            let s = sockets[turn % sockets.count]
            turn += 1
            guard let (length, source) = s.receive(into: receiveBuffer) else {
                idle += 1
                continue
            }
            idle = 0
            budget -= 1
            stats.datagramsReceived += 1
            stats.bytesReceived += UInt64(length)
            if length > receiveBuffer.count {
                drop(.oversized)
                continue
            }
            process(UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<length]), from: source, now: now)
        }
        if budget == 0 { stats.pollBudgetExhausted += 1 }
    }

    @discardableResult
    func process(_ datagram: UnsafeRawBufferPointer, from source: GossipEndpoint, now: UInt64) -> GossipDrop? {
        if injectedReceiveLoss > 0 && nextRandomUnit() < injectedReceiveLoss { return drop(.injectedLoss) }
        let header: GossipHeader
        switch GossipCodec.parseHeader(datagram) {
        case .failure(let reason): return drop(reason)
        case .success(let h): header = h
        }
        if header.sender == localHostID && (source == localEndpoint || source == ownMember) {
            stats.ownMessages += 1 // multicast looped back to us
            return nil
        }
        guard let peer = peers.first(where: { $0.endpoint == source }), peer.member.hostID == Int(header.sender) else {
            return drop(.unknownSender)
        }
        guard GossipCodec.authenticate(datagram, header: header, authenticator: authenticator) else { return drop(.badMAC) }
        let newIncarnation = header.incarnation != peer.incarnation
        if peer.incarnation != 0 && header.incarnation < peer.incarnation { return drop(.staleIncarnation) }
        if newIncarnation && header.incarnation >> 16 > GossipClock.wallMicroseconds() / 1000 + UInt64(settings.maxClockSkewMilliseconds) {
            return drop(.futureIncarnation)
        }
        let fresh = newIncarnation || peer.window.isFresh(header.sequence)
        if !fresh || header.sequence == 0 { return drop(.replayed) }
        let body: GossipBody
        switch GossipCodec.decodeBody(datagram, header: header) {
        case .failure(let reason): return drop(reason)
        case .success(let b): body = b
        }
        if let reason = validate(body, from: peer) { return drop(reason) }

        // Accepted: from here on state changes.
        if newIncarnation { peerRestarted(peer, incarnation: header.incarnation) }
        peer.window.accept(header.sequence)
        peer.lastHeard = now
        peer.messages += 1
        if !peer.alive {
            peer.alive = true
            if peer.downSince != nil { stats.peersRecovered += 1 }
            peer.downSince = nil
            peer.forgotten = false
        }
        stats.accepted[Int(header.kind)] += 1
        switch body {
        case .heartbeat(let h):
            peer.synchronised = h.synchronised
            peer.reportedFlows = h.ownedFlows
        case .flows(let records):
            let lag = GossipClock.wallMicroseconds() &- header.timestamp
            recordLag(Int64(bitPattern: lag) < 0 ? 0 : lag, peer: peer)
            for record in records { apply(record, from: peer, mark: peer.sync?.scope == .owned ? peer.sync?.generation : nil) }
        case .digest(let digest):
            compare(digest, of: peer, now: now)
        case .syncRequest(let request):
            stats.syncRequestsReceived += 1
            peer.job = request.buckets == 0 ? nil : SyncJob(requestID: request.requestID, scope: request.scope, buckets: request.buckets)
        case .syncResponse(let response):
            receivePage(response, from: peer, now: now)
        }
        return nil
    }

    /// Rules that need this node's state; checked before anything is applied.
    func validate(_ body: GossipBody, from peer: Peer) -> GossipDrop? {
        let sender = UInt16(peer.member.hostID)
        switch body {
        case .flows(let records):
            if records.contains(where: { $0.owner != sender }) { return .malformed }
        case .syncResponse(let response):
            if let sync = peer.sync, sync.requestID == response.requestID, sync.scope == .owned,
               response.records.contains(where: { $0.owner != sender || $0.op != .open })
            {
                return .malformed
            }
            if response.records.contains(where: { $0.op != .open }) { return .malformed }
        default:
            break
        }
        return nil
    }

    @discardableResult
    func drop(_ reason: GossipDrop) -> GossipDrop {
        stats.dropped[reason, default: 0] += 1
        return reason
    }

    /// A peer with a new incarnation: its flows stay (its backends may well have kept their
    /// connections while its engine restarted); it takes them back by a full sync.
    func peerRestarted(_ peer: Peer, incarnation: UInt64) {
        if peer.incarnation != 0 { stats.restartsSeen += 1 }
        peer.incarnation = incarnation
        peer.window.reset()
        peer.synchronised = false
        peer.job = nil
        if let sync = peer.sync, sync.scope == .owned { peer.sync = nil } // it will answer a new request
    }
}
