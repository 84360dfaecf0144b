import Foundation
import SwitchyardEngine
import SwitchyardCluster

/// The engine's side of BGP (docs/bgp.md): it runs the rule for every VIP on each control tick and
/// hands the result to the speaker; it withdraws before a graceful stop; `ctl bgp|drain|undrain`.
///
///     SIGINT/SIGTERM ─► withdraw every VIP ─► BIRD confirms (≤ 2 s) ─► drain_seconds, lcores serving
///                    ─► stop lcores ─► stop BIRD
extension ClusterPlugin {
    /// Starts BIRD when the configuration has a `bgp:` section.
    func startBgp() throws {
        guard let settings = configuration.bgp else { return }
        let speaker = BgpSpeaker(settings: settings, engineName: configuration.name, registry: counters, log: log)
        do {
            try speaker.start()
        } catch {
            throw EngineError.setup("bgp: cannot prepare \(speaker.runDirectory): \(error)")
        }
        bgp = speaker
        log("bgp: announcing \(settings.vips.map(\.description).joined(separator: ", ")) to "
            + settings.peers.map { "\($0.address) (AS \($0.asNumber))" }.joined(separator: ", ")
            + " with next hop " + [settings.nextHop, settings.nextHop6].compactMap { $0?.description }.joined(separator: " and ")
            + "; files in \(speaker.runDirectory)")
    }

    /// The host's state as the rule sees it.
    var announcementState: AnnouncementPolicy.HostState {
        AnnouncementPolicy.HostState(running: !stopping, drained: drained, synchronised: gossip?.isSynchronised ?? true)
    }

    func tickBgp(now: Date) {
        guard let bgp, let cluster else { return }
        let state = announcementState, configuration = cluster.configuration, scope = bgp.settings.scope
        bgp.update({ AnnouncementPolicy.decide(vip: $0, cluster: configuration, scope: scope, host: state) }, now: now)
        bgp.tick(now: now)
    }

    /// Withdraws every VIP, waits until BIRD has taken the withdrawal (at most 2 s), then returns
    /// `drain_seconds`, which the engine serves on (lcores running, control ticks) so the routers
    /// move new flows away first.
    public func prepareStop(lcoresFailed: Bool) -> Double {
        guard let bgp else { return 0 }
        stopping = true
        tickBgp(now: Date())
        let start = Date()
        while !bgp.isSettled && Date().timeIntervalSince(start) < 2 {
            usleep(10_000)
            tickBgp(now: Date())
        }
        let wait = lcoresFailed ? 0 : bgp.settings.drainSeconds
        log(String(format: "bgp: withdrawn (%@, %.0f ms); serving %.1f s more (drain_seconds) before stopping",
                   bgp.isSettled ? "BIRD took it" : "BIRD did not confirm", Date().timeIntervalSince(start) * 1000, wait))
        return wait
    }

    /// `ctl bgp`, `ctl drain` and `ctl undrain` answer the same: the speaker's state.
    private func bgpAnswer(_ bgp: BgpSpeaker) -> [String: Any] {
        var answer = bgp.statusAnswer()
        answer["drained"] = drained
        return answer
    }

    func registerBgpCommands() {
        control.register("bgp", summary: "the BGP speaker: state, sessions, each VIP announced or withdrawn, why, since when") {
            [unowned self] _ in
            guard let bgp else { throw ControlError("this engine has no `bgp:` section") }
            bgp.wantSessions()
            return bgpAnswer(bgp)
        }
        control.register("drain", summary: "withdraw every VIP from BGP and keep serving (undo: undrain)") { [unowned self] _ in
            guard let bgp else { throw ControlError("this engine has no `bgp:` section: nothing to withdraw") }
            if !drained { log("bgp: drain asked (ctl drain)") }
            drained = true
            tickBgp(now: Date())
            return bgpAnswer(bgp)
        }
        control.register("undrain", summary: "announce again the VIPs the rule allows (after drain)") { [unowned self] _ in
            guard let bgp else { throw ControlError("this engine has no `bgp:` section: nothing to announce") }
            if drained { log("bgp: undrain asked (ctl undrain)") }
            drained = false
            tickBgp(now: Date())
            return bgpAnswer(bgp)
        }
    }
}
