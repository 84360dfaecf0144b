import CDPDK
import Foundation
import Glibc
import SwitchyardCluster

/// Receiving: read datagrams, check them in order (size, magic, version, sender, HMAC,
/// incarnation, replay window, body) and dispatch what passes; every drop counted by reason.
extension GossipNode {
    /// Reads the sockets until they are empty, `max_messages_per_poll` datagrams have been
    /// read, or `receive_budget_ms` has passed. Stopping with datagrams still waiting, or a
    /// kernel drop count that grew, marks an overflow (see `checkLiveness`).
    func receive(now: UInt64) {
        releaseDelayed(now: now)
        var budget = settings.maxMessagesPerPoll
        var sockets = [socket]
        if let multicastSocket { sockets.append(multicastSocket) }
        let deadline = now &+ receiveBudgetNs
        var empty = [Bool](repeating: false, count: sockets.count)
        var turn = 0
        while budget > 0 && empty.contains(false) {
            let index = turn % sockets.count
            turn += 1
            if empty[index] { continue }
            let wanted = min(budget, ReceiveBatch.capacity)
            let count = sockets[index].receive(into: receiveBatch, max: wanted)
            if count == 0 {
                empty[index] = true
                continue
            }
            for i in 0..<count {
                let (bytes, length, source) = receiveBatch.datagram(i)
                stats.datagramsReceived += 1
                stats.bytesReceived += UInt64(length)
                if index == 1 { stats.multicastReceived += 1 } // sockets[1]: the group's
                budget -= 1
                guard let bytes else {
                    drop(.oversized)
                    continue
                }
                deliver(bytes, from: source, now: now)
            }
            if count < wanted { empty[index] = true }
            if GossipClock.monotonicNanoseconds() >= deadline { break }
        }
        let drops = sockets.reduce(UInt64(0)) { $0 + UInt64($1.kernelDrops) }
        if empty.contains(false) {
            stats.pollBudgetExhausted += 1
            lastOverflow = now
            overflowSeen = true
        }
        if drops != kernelDropsSeen {
            kernelDropsSeen = drops
            lastOverflow = now
            overflowSeen = true
        }
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
        // Reads of the peer's state only, before the MAC: what they drop could not have changed
        // anything, so a bogus datagram that fails them costs a few compares, not a MAC.
        if peer.verified && header.incarnation < peer.incarnation { return drop(.staleIncarnation) }
        if header.sequence == 0 { return drop(.replayed) }
        let current = peer.verified && header.incarnation == peer.incarnation
        let isChallenge = header.kind == GossipKind.challenge.rawValue
        if current {
            if !peer.window.isFresh(header.sequence) { return drop(.replayed) }
            if header.sequence > peer.window.highest && header.sequence - peer.window.highest > GossipWire.maxSequenceJump {
                // Far ahead of anything seen: a guess, or this host missed that many messages.
                // Either way the peer is asked to prove its sequence again: only a CHALLENGE
                // (its answer restarts the window) goes on, a few per poll.
                if !isChallenge || !spendChallengeCheck(peer) {
                    challenge(peer, now: now)
                    return drop(.implausibleSequence)
                }
            }
        } else {
            if header.incarnation >> 16 > GossipClock.wallMicroseconds() / 1000 + UInt64(settings.maxClockSkewMilliseconds) {
                return drop(.futureIncarnation)
            }
            // An incarnation not proven live: only a CHALLENGE can change anything (its answer
            // may prove it). Anything else, and CHALLENGEs past a few per poll, go without a MAC.
            if !isChallenge || !spendChallengeCheck(peer) {
                challenge(peer, now: now)
                return drop(.unverified)
            }
        }
        guard GossipCodec.authenticate(datagram, header: header, authenticator: authenticator) else { return drop(.badMAC) }
        let body: GossipBody
        switch GossipCodec.decodeBody(datagram, header: header) {
        case .failure(let reason): return drop(reason)
        case .success(let b): body = b
        }
        if let reason = validate(body, from: peer) { return drop(reason) }
        if case .challenge(let challenge) = body {
            return receiveChallenge(challenge, header: header, from: peer, current: current, now: now)
        }

        // Accepted: from here on state changes.
        accepted(peer, header: header, now: now)
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
            peer.job = request.buckets == 0
                ? nil
                : SyncJob(requestID: request.requestID, scope: request.scope, buckets: request.buckets,
                          cursor: min(Int(request.cursor), table.positions), window: Int(request.window))
        case .syncResponse(let response):
            receivePage(response, from: peer, now: now)
        case .challenge:
            break
        case .listeners(let announcement):
            receiveListeners(announcement, header: header, from: peer)
        }
        return nil
    }

    /// Whether one more CHALLENGE of an unverified incarnation or an implausible sequence may have
    /// its MAC checked in this poll (`unverifiedChecksPerPoll` per peer).
    func spendChallengeCheck(_ peer: Peer) -> Bool {
        if peer.unverifiedPoll != stats.polls {
            peer.unverifiedPoll = stats.polls
            peer.unverifiedChecksInPoll = 0
        }
        guard peer.unverifiedChecksInPoll < Self.unverifiedChecksPerPoll else { return false }
        peer.unverifiedChecksInPoll += 1
        return true
    }

    /// A message that passed every check: the sequence number is marked, the peer is alive.
    func accepted(_ peer: Peer, header: GossipHeader, now: UInt64) {
        peer.window.accept(header.sequence)
        peer.lastHeard = now
        peer.messages += 1
        peer.downDeferred = false
        if !peer.alive {
            peer.alive = true
            if peer.downSince != nil { stats.peersRecovered += 1 }
            peer.downSince = nil
            peer.forgotten = false
        }
        stats.accepted[Int(header.kind)] += 1
    }

    /// Asks `peer` to prove its current incarnation live (at most once per heartbeat interval).
    /// A verified peer is asked at most once per heartbeat interval even after it answered: else
    /// a flood spoofed with its header would make this host challenge it after every answer, and
    /// the peer answer every poll (seen in the gossip simulation: 70 challenges per second).
    func challenge(_ peer: Peer, now: UInt64) {
        if peer.verified && peer.challengeSentAt != 0 && now &- peer.challengeSentAt < heartbeatNs { return }
        if peer.challengeNonce == 0 {
            repeat { peer.challengeNonce = UInt64.random(in: 1...UInt64.max) } while peer.challengeNonce == 0
        } else if peer.challengeSentAt != 0 && now &- peer.challengeSentAt < heartbeatNs {
            return
        }
        peer.challengeSentAt = now
        unicast(.challenge(Challenge(nonce: peer.challengeNonce, answer: 0)), to: peer)
        stats.challengesSent += 1
    }

    /// A CHALLENGE (authenticated, of any incarnation that is not stale): an answer to this
    /// host's nonce proves the sender's incarnation live as of the answer's sequence number; a
    /// question is answered (once per poll), with a question of this host's own when it has not
    /// verified the sender.
    func receiveChallenge(_ challenge: Challenge, header: GossipHeader, from peer: Peer, current: Bool, now: UInt64) -> GossipDrop? {
        stats.challengesReceived += 1
        var result: GossipDrop?
        if challenge.answer != 0 {
            if challenge.answer == peer.challengeNonce {
                if peer.incarnation != 0 && peer.incarnation != header.incarnation {
                    peerRestarted(peer, incarnation: header.incarnation)
                }
                peer.incarnation = header.incarnation
                peer.verified = true
                peer.challengeNonce = 0
                peer.window.start(at: header.sequence)
                stats.peersVerified += 1
                if var sync = peer.sync, sync.sent {
                    sync.sent = false // its request may have been dropped as unverified: ask again now
                    peer.sync = sync
                }
                accepted(peer, header: header, now: now)
            } else {
                result = drop(.staleAnswer)
            }
        } else if current {
            accepted(peer, header: header, now: now)
        }
        if challenge.nonce != 0 && peer.answeredInPoll != stats.polls {
            peer.answeredInPoll = stats.polls
            let verified = peer.verified && peer.incarnation == header.incarnation
            if !verified && peer.challengeNonce == 0 {
                repeat { peer.challengeNonce = UInt64.random(in: 1...UInt64.max) } while peer.challengeNonce == 0
            }
            if !verified { peer.challengeSentAt = now; stats.challengesSent += 1 }
            unicast(.challenge(Challenge(nonce: verified ? 0 : peer.challengeNonce, answer: challenge.nonce)), to: peer)
            stats.challengesAnswered += 1
        }
        return result
    }

    /// Rules that need this node's state; checked before anything is applied.
    func validate(_ body: GossipBody, from peer: Peer) -> GossipDrop? {
        let sender = UInt16(peer.member.hostID)
        switch body {
        case .flows(let records):
            if records.contains(where: { $0.owner != sender }) { return .malformed }
        case .syncResponse(let response):
            if let sync = peer.sync, sync.requestID == response.requestID, sync.scope.ownedOnly,
               response.records.contains(where: { $0.owner != sender || $0.op != .open })
            {
                return .malformed
            }
            if let sync = peer.sync, sync.requestID == response.requestID, sync.scope == .ownedAndYours,
               response.records.contains(where: { $0.owner != sender && $0.owner != localHostID })
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

    /// A peer with a new incarnation (proven live): its flows stay (its backends may well have
    /// kept their connections while its engine restarted); it takes them back by a full sync.
    func peerRestarted(_ peer: Peer, incarnation: UInt64) {
        if peer.incarnation != 0 { stats.restartsSeen += 1 }
        peer.incarnation = incarnation
        peer.synchronised = false
        peer.job = nil
        if let sync = peer.sync, sync.scope == .owned { peer.sync = nil } // it will answer a new request
    }
}
