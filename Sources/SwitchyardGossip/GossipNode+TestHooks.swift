import Foundation
import SwitchyardCluster

/// Test hooks of the receive path: delay (and jitter) injected before any check, used by the
/// gossip simulation (Benchmarks/GossipSimulation) to model a network's latency on loopback.
/// Loss has its own hook, `injectedReceiveLoss`. Both are off unless a test or tool sets them.
///
///     socket ─► receive ─► delay 0: process now
///                       └► delay > 0: due = the header's send time + delay + jitter (the sender's
///                          wall clock: one machine, one clock); past: process now;
///                          else copy to `held` until then
///     next polls: every held datagram that is due ─► process
///
/// The delay counts from the send time, not from when this node read the datagram, so it adds
/// to the wait in the socket only where it is longer than that wait (as a network's would).
extension GossipNode {
    /// Test hook: hold every received datagram for this long (plus up to `injectedReceiveJitterNs`,
    /// uniform) before it is processed. 0 (the default): no delay. Never set outside tests and tools.
    public var injectedReceiveDelayNs: UInt64 {
        get { lock.withLock { delayHook.delayNs } }
        set { lock.withLock { delayHook.delayNs = newValue } }
    }

    public var injectedReceiveJitterNs: UInt64 {
        get { lock.withLock { delayHook.jitterNs } }
        set { lock.withLock { delayHook.jitterNs = newValue } }
    }

    /// A received datagram: processed now, or held when a delay is injected.
    func deliver(_ bytes: UnsafeRawBufferPointer, from source: GossipEndpoint, now: UInt64) {
        guard delayHook.delayNs > 0 || delayHook.jitterNs > 0 else {
            process(bytes, from: source, now: now)
            return
        }
        let jitter = delayHook.jitterNs > 0 ? UInt64(nextRandomUnit() * Double(delayHook.jitterNs)) : 0
        var sentMicros: UInt64 = 0
        if bytes.count >= GossipWire.headerSize {
            for i in 24..<32 { sentMicros = sentMicros << 8 | UInt64(bytes[i]) }
        }
        let wall = GossipClock.wallMicroseconds()
        let dueMicros = sentMicros &+ (delayHook.delayNs &+ jitter) / 1000
        // Not gossip, or a send time that is not plausible: from now.
        let wait = sentMicros == 0 || sentMicros > wall || wall - sentMicros > 10_000_000
            ? delayHook.delayNs &+ jitter
            : (dueMicros > wall ? (dueMicros - wall) * 1000 : 0)
        guard wait > 0 else {
            process(bytes, from: source, now: now)
            return
        }
        delayHook.held.append((now &+ wait, Array(bytes), source))
    }

    /// Processes the held datagrams whose time has come (in arrival order per deadline).
    func releaseDelayed(now: UInt64) {
        guard !delayHook.held.isEmpty else { return }
        var due: [(UInt64, [UInt8], GossipEndpoint)] = []
        var rest: [(UInt64, [UInt8], GossipEndpoint)] = []
        for item in delayHook.held { if item.0 <= now { due.append(item) } else { rest.append(item) } }
        delayHook.held = rest
        due.sort { $0.0 < $1.0 }
        for (_, bytes, source) in due { bytes.withUnsafeBytes { process($0, from: source, now: now) } }
    }
}

/// The state of the delay hook (empty unless a delay is injected).
struct DelayHook {
    var delayNs: UInt64 = 0
    var jitterNs: UInt64 = 0
    var held: [(UInt64, [UInt8], GossipEndpoint)] = []
}
