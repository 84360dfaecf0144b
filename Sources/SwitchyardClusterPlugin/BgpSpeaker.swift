import Foundation
import SwitchyardEngine
import SwitchyardCluster

/// The engine's BGP speaker: a BIRD 2 child process that announces the VIPs the
/// `AnnouncementPolicy` allows (docs/bgp.md). Control thread only; nothing here blocks.
///
///     control thread, every tick (10 ms)
///       update(decisions) ── set changed? ──► write vips.conf ──► birdc configure (child, polled)
///       tick(now)         ── waitpid(WNOHANG) on bird and birdc ──► exited? log, count, restart
///                                                                   after 1, 2, 4 ... 30 s
///     bird -f (child, own process group, SIGKILLed by the kernel if the engine dies: setpriv
///     --pdeathsig KILL), BGP + BFD over a kernel interface ──► routers
///
/// BIRD reads vips.conf when it starts, so a restarted BIRD announces the current set at once.
public final class BgpSpeaker {
    public let settings: BgpSettings
    public let runDirectory: String
    let engineName: String
    let log: (String) -> Void
    let counters: CounterBlock

    /// Counter positions in `counters` (`ClusterCounters.bgp`).
    enum Counter: Int {
        case speakerStarts, speakerExits, configureRuns, configureFailures, announcements, withdrawals,
             vipsAnnounced, speakerUp
    }

    /// One VIP: what the rule says, what BIRD was last told, since when.
    public struct VipState {
        public var vip: IPAddress
        public var decision: AnnouncementPolicy.Decision
        public var since: Date
        /// True when BIRD's configuration (confirmed by a successful start or `configure`) has the route.
        public var inSpeaker: Bool
    }

    public private(set) var vips: [VipState]
    /// The generation of vips.conf written and the one BIRD has read.
    private var writtenGeneration = 0
    private var appliedGeneration = 0
    private var writtenSet: [IPAddress] = []
    private var appliedSet: [IPAddress] = []

    private(set) var bird: ChildProcess?
    private(set) var birdStartedAt: Date?
    private var configure: (child: ChildProcess, generation: Int, set: [IPAddress])?
    private var nextBirdStart = Date.distantPast
    private var nextConfigure = Date.distantPast
    private var birdBackoff: Double = 1
    private var configureBackoff: Double = 0.2
    public private(set) var lastProblem: (text: String, at: Date)?
    private var stopped = false
    /// The `birdc show protocols` table, refreshed every 5 s, every 2 s while `ctl bgp` is being asked.
    private var sessions: (child: ChildProcess, startedAt: Date)?
    public private(set) var sessionTable: (text: String, at: Date)?
    private var sessionsWanted = Date.distantPast

    public init(settings: BgpSettings, engineName: String, registry: CounterRegistry, log: @escaping (String) -> Void) {
        self.settings = settings
        self.engineName = engineName
        self.log = log
        runDirectory = settings.runDirectory(name: engineName)
        counters = registry.makeBlock(scope: "bgp", kind: "bgp", lcore: 0, counters: ClusterCounters.bgp)
        let now = Date()
        vips = settings.vips.map {
            VipState(vip: $0, decision: .init(announce: false, reason: "starting"), since: now, inSpeaker: false)
        }
    }

    var socketPath: String { runDirectory + "/bird.ctl" }
    var configPath: String { runDirectory + "/bird.conf" }
    var vipsPath: String { runDirectory + "/vips.conf" }

    /// Writes both files (nothing announced yet) and starts BIRD.
    public func start() throws {
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        try Self.writeAtomically(Self.birdConfiguration(settings, runDirectory: runDirectory, engineName: engineName),
                                 to: configPath)
        try Self.writeAtomically(Self.vipsConfiguration([], ipv6: settings.announcesIPv6), to: vipsPath)
        startBird(now: Date())
    }

    /// Takes the rule's decision for every VIP; a changed set is written to vips.conf at once and
    /// sent to BIRD by the next `tick`.
    public func update(_ decide: (IPAddress) -> AnnouncementPolicy.Decision, now: Date = Date()) {
        guard !stopped else { return }
        for index in vips.indices {
            let decision = decide(vips[index].vip)
            guard decision != vips[index].decision else { continue }
            if decision.announce != vips[index].decision.announce {
                counters.add(decision.announce ? Counter.announcements.rawValue : Counter.withdrawals.rawValue, 1)
                log("bgp: \(decision.announce ? "announce" : "withdraw") \(vips[index].vip): \(decision.reason)")
                vips[index].since = now
            }
            vips[index].decision = decision
        }
        let wanted = vips.filter(\.decision.announce).map(\.vip)
        if wanted != writtenSet {
            do {
                try Self.writeAtomically(Self.vipsConfiguration(wanted, ipv6: settings.announcesIPv6), to: vipsPath)
                writtenSet = wanted
                writtenGeneration += 1
                nextConfigure = now // a change goes out now, whatever the backoff of a failure
            } catch {
                problem("cannot write \(vipsPath): \(error)", now: now)
            }
        }
    }

    /// Reaps and restarts BIRD, finishes and starts `birdc configure`; never waits.
    public func tick(now: Date = Date()) {
        guard !stopped else { return }
        if let child = bird, let status = child.reap() {
            bird = nil
            counters.add(Counter.speakerExits.rawValue, 1)
            counters.set(Counter.speakerUp.rawValue, 0)
            nextBirdStart = now.addingTimeInterval(birdBackoff)
            problem("BIRD (pid \(child.pid)) \(status); restarting in \(Int(birdBackoff)) s (see \(runDirectory)/bird.out)", now: now)
            birdBackoff = min(birdBackoff * 2, 30)
            markWithdrawnInSpeaker()
        }
        if bird == nil, now >= nextBirdStart { startBird(now: now) }
        if let birdStartedAt, bird != nil, now.timeIntervalSince(birdStartedAt) > 60 { birdBackoff = 1 }
        finishConfigure(now: now)
        // A BIRD just started makes its control socket within milliseconds: wait for it (2 s at
        // most; after that, a failing `configure` is counted and retried like any other).
        let socketReady = access(socketPath, F_OK) == 0 || now.timeIntervalSince(birdStartedAt ?? now) > 2
        if configure == nil, bird != nil, socketReady, writtenGeneration != appliedGeneration, now >= nextConfigure {
            startConfigure(now: now)
        }
        refreshSessions(now: now)
    }

    /// Stops BIRD: SIGTERM (it closes its sessions with a Cease notification, so routers withdraw at
    /// once), SIGKILL after `timeout` seconds.
    public func stop(timeout: Double = 2) {
        guard !stopped else { return }
        stopped = true
        configure?.child.kill(SIGKILL)
        _ = configure?.child.wait(timeout: 1)
        sessions?.child.kill(SIGKILL)
        _ = sessions?.child.wait(timeout: 1)
        configure = nil
        sessions = nil
        if let child = bird {
            child.kill(SIGTERM)
            if child.wait(timeout: timeout) == nil {
                child.kill(SIGKILL)
                _ = child.wait(timeout: 1)
            }
            bird = nil
            log("bgp: BIRD stopped")
        }
        counters.set(Counter.speakerUp.rawValue, 0)
        markWithdrawnInSpeaker()
    }

    /// True when BIRD runs and has every route the rule asks for, and no other.
    public var isSettled: Bool { bird != nil && configure == nil && writtenGeneration == appliedGeneration }

    /// Asks for the sessions table (`birdc show protocols`), read in the background.
    public func wantSessions(now: Date = Date()) { sessionsWanted = now }

    // MARK: - Children

    private func startBird(now: Date) {
        let arguments = ["-f", "-c", configPath, "-s", socketPath]
        do {
            // BIRD reads vips.conf as it starts: what is written now is what it announces.
            let generation = writtenGeneration, set = writtenSet
            unlink(socketPath) // a killed BIRD leaves its socket behind
            let child = try ChildProcess.spawn(settings.birdPath, arguments, output: runDirectory + "/bird.out",
                                               dieWithParent: true)
            bird = child
            birdStartedAt = now
            appliedGeneration = generation
            appliedSet = set
            markInSpeaker(set)
            counters.add(Counter.speakerStarts.rawValue, 1)
            counters.set(Counter.speakerUp.rawValue, 1)
            log("bgp: BIRD started (pid \(child.pid)): \(settings.birdPath) \(arguments.joined(separator: " "))")
        } catch {
            counters.add(Counter.speakerExits.rawValue, 1)
            nextBirdStart = now.addingTimeInterval(birdBackoff)
            problem("cannot start BIRD: \(error); retrying in \(Int(birdBackoff)) s", now: now)
            birdBackoff = min(birdBackoff * 2, 30)
        }
    }

    private func startConfigure(now: Date) {
        do {
            let child = try ChildProcess.spawn(settings.birdcPath, ["-s", socketPath, "configure"],
                                               output: runDirectory + "/birdc.out", dieWithParent: false)
            configure = (child, writtenGeneration, writtenSet)
            counters.add(Counter.configureRuns.rawValue, 1)
        } catch {
            configureFailed("cannot run birdc: \(error)", now: now)
        }
    }

    private func finishConfigure(now: Date) {
        guard let running = configure else { return }
        guard let status = running.child.reap() else {
            if now.timeIntervalSince(running.child.startedAt) > 5 {
                running.child.kill(SIGKILL)
                _ = running.child.wait(timeout: 1)
                configure = nil
                configureFailed("birdc configure took more than 5 s: killed", now: now)
            }
            return
        }
        configure = nil
        let output = (try? String(contentsOfFile: runDirectory + "/birdc.out", encoding: .utf8)) ?? ""
        // birdc exits 0 when it could talk to BIRD; BIRD's answer says whether the file was taken.
        if status.succeeded, output.contains("Reconfigur"), !output.lowercased().contains("error") {
            appliedGeneration = running.generation
            appliedSet = running.set
            markInSpeaker(running.set)
            configureBackoff = 0.2
        } else {
            let answer = output.split(separator: "\n").filter { !$0.hasPrefix("BIRD ") }.joined(separator: " / ")
            configureFailed("birdc configure \(status): \(answer.isEmpty ? "no answer" : answer)", now: now)
        }
    }

    private func configureFailed(_ text: String, now: Date) {
        counters.add(Counter.configureFailures.rawValue, 1)
        nextConfigure = now.addingTimeInterval(configureBackoff)
        problem(text + "; retrying in \(String(format: "%.1f", configureBackoff)) s", now: now)
        configureBackoff = min(configureBackoff * 2, 10)
    }

    private func refreshSessions(now: Date) {
        if let running = sessions {
            if running.child.reap() != nil {
                sessions = nil
                let text = (try? String(contentsOfFile: runDirectory + "/sessions.out", encoding: .utf8)) ?? ""
                sessionTable = (text, now)
            } else if now.timeIntervalSince(running.startedAt) > 5 {
                running.child.kill(SIGKILL)
                _ = running.child.wait(timeout: 1)
                sessions = nil
            }
            return
        }
        // Every 5 s; every 2 s while `ctl bgp` is being asked (and at once on its first request).
        let interval: Double = now.timeIntervalSince(sessionsWanted) < 10 ? 2 : 5
        let last = sessionTable?.at ?? .distantPast
        guard bird != nil, now.timeIntervalSince(last) >= interval || (sessionsWanted > last && now.timeIntervalSince(last) >= 0.5)
        else { return }
        if let child = try? ChildProcess.spawn(settings.birdcPath, ["-s", socketPath, "show", "protocols"],
                                               output: runDirectory + "/sessions.out", dieWithParent: false)
        {
            sessions = (child, now)
        }
    }

    private func markInSpeaker(_ set: [IPAddress]) {
        for index in vips.indices { vips[index].inSpeaker = set.contains(vips[index].vip) }
        counters.set(Counter.vipsAnnounced.rawValue, UInt64(set.count))
    }

    private func markWithdrawnInSpeaker() {
        for index in vips.indices { vips[index].inSpeaker = false }
        counters.set(Counter.vipsAnnounced.rawValue, 0)
    }

    private func problem(_ text: String, now: Date) {
        lastProblem = (text, now)
        log("bgp: " + text)
    }

    // MARK: - ctl bgp

    /// The answer of `ctl bgp`.
    public func statusAnswer(now: Date = Date()) -> [String: Any] {
        var answer: [String: Any] = [
            "speaker": bird != nil ? "running" : (stopped ? "stopped" : "down"),
            "run_dir": runDirectory, "local_as": Int(settings.localAS), "router_id": settings.routerID.description,
            "next_hop": settings.nextHop?.description ?? "none", "next_hop6": settings.nextHop6?.description ?? "none",
            "peers": settings.peers.map { ["address": $0.address.description, "as": Int($0.asNumber)] as [String: Any] },
            "settled": isSettled,
            "bfd": settings.bfd.map { ["interval_ms": $0.intervalMilliseconds, "multiplier": $0.multiplier] as [String: Any] }
                ?? "off",
            "hold_time": settings.holdTime, "drain_seconds": settings.drainSeconds, "backends": settings.scope.rawValue,
        ]
        if let bird { answer["pid"] = Int(bird.pid) }
        if let birdStartedAt, bird != nil { answer["speaker_since_s"] = now.timeIntervalSince(birdStartedAt) }
        if let lastProblem {
            answer["last_problem"] = ["text": lastProblem.text, "age_s": now.timeIntervalSince(lastProblem.at)] as [String: Any]
        }
        answer["vips"] = vips.map { state -> [String: Any] in
            ["vip": state.vip.description,
             "state": state.decision.announce ? (state.inSpeaker ? "announced" : "announcing")
                 : (state.inSpeaker ? "withdrawing" : "withdrawn"),
             "reason": state.decision.reason, "since_s": now.timeIntervalSince(state.since)]
        }
        if let sessionTable {
            answer["sessions"] = Self.parseProtocols(sessionTable.text)
            answer["sessions_age_s"] = now.timeIntervalSince(sessionTable.at)
        }
        return answer
    }

    /// The BGP rows of `birdc show protocols`: name, state, since, info (Established, Active, ...).
    static func parseProtocols(_ text: String) -> [[String: String]] {
        text.split(separator: "\n").compactMap { line -> [String: String]? in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            guard fields.count >= 5, fields[1] == "BGP" else { return nil }
            return ["name": fields[0], "state": fields[3], "since": fields[4],
                    "info": fields.dropFirst(5).joined(separator: " ")]
        }
    }
}
