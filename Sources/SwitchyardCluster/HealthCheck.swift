import Glibc
import SwitchyardConfig

/// `services[].health_check`: how the host that owns a backend checks it (docs/configuration.md).
///
///     health_check: { kind: http, path: /health, status: 200, interval_ms: 1000, timeout_ms: 500,
///                     rise: 2, fall: 3, flap_half_life_s: 60, flap_suppress: 3, flap_reuse: 1.5 }
public struct HealthCheckSettings: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// A TCP connect to the backend: up when it completes within the timeout.
        case tcp
        /// An HTTP/1.0 GET of `path`: up when the status line's code is `status`.
        case http
    }

    public var kind: Kind = .tcp
    public var intervalMilliseconds = 2000
    public var timeoutMilliseconds = 1000
    public var rise = 2
    public var fall = 3
    public var path = "/"
    public var status = 200
    /// Check this port instead of the backend's (nil: the backend's).
    public var port: UInt16?
    /// Flap damping: each fall adds 1 to a penalty that halves every `flapHalfLifeSeconds`; at
    /// `flapSuppress` the backend stays down, whatever its checks say, until the penalty is back
    /// under `flapReuse`.
    public var flapHalfLifeSeconds = 60.0
    public var flapSuppress = 3.0
    public var flapReuse = 1.5
    public var line = 0

    public init() {}

    static func parse(_ value: ConfigValue, service: String) throws -> HealthCheckSettings {
        let map = try value.within("service '\(service)' health_check").map()
        var s = HealthCheckSettings()
        s.kind = Kind(rawValue: try map.choice("kind", ["tcp", "http"], default: "tcp"))!
        s.intervalMilliseconds = try map.int("interval_ms", default: s.intervalMilliseconds, in: 10...3_600_000)
        s.timeoutMilliseconds = try map.int("timeout_ms", default: min(s.timeoutMilliseconds, s.intervalMilliseconds),
                                            in: 1...3_600_000)
        if s.timeoutMilliseconds > s.intervalMilliseconds {
            throw map.error("\(s.timeoutMilliseconds) is longer than interval_ms (\(s.intervalMilliseconds)): one check at a time", key: "timeout_ms")
        }
        s.rise = try map.int("rise", default: s.rise, in: 1...100)
        s.fall = try map.int("fall", default: s.fall, in: 1...100)
        if map.has("port") { s.port = UInt16(try map.int("port", in: 1...65535)) }
        if map.has("path") || map.has("status") {
            guard s.kind == .http else { throw map.error("applies to kind: http only", key: map.has("path") ? "path" : "status") }
        }
        s.path = try map.string("path", default: "/")
        guard s.path.hasPrefix("/"), !s.path.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" }) else {
            throw map.error("'\(s.path)' is not an absolute path without spaces", key: "path")
        }
        s.status = try map.int("status", default: 200, in: 100...599)
        s.flapHalfLifeSeconds = try map.double("flap_half_life_s", default: s.flapHalfLifeSeconds, in: 1...86400)
        s.flapSuppress = try map.double("flap_suppress", default: s.flapSuppress, in: 1...1000)
        s.flapReuse = try map.double("flap_reuse", default: min(s.flapReuse, s.flapSuppress), in: 0.01...1000)
        if s.flapReuse > s.flapSuppress {
            throw map.error("\(s.flapReuse) is above flap_suppress (\(s.flapSuppress))", key: "flap_reuse")
        }
        s.line = map.line
        try map.finish()
        return s
    }
}

/// The health of one backend as its owner sees it: consecutive results, `rise` / `fall`, and
/// flap damping. A pure state machine (no clock of its own, no I/O): the engine feeds it results.
///
///     up ──fall consecutive failures──► down (penalty + 1; at flap_suppress: suppressed)
///     down ──rise consecutive successes, and not suppressed──► up
///     suppressed ──penalty halves every flap_half_life_s──► below flap_reuse: no longer suppressed
public struct BackendHealth: Sendable {
    public enum State: String, Sendable {
        case up, down
    }

    /// A backend starts up: a restart of the checking host must not withdraw healthy backends.
    public private(set) var state: State = .up
    /// When the state last changed (the caller's clock, seconds).
    public private(set) var since: Double
    public private(set) var successes = 0
    public private(set) var failures = 0
    public private(set) var penalty = 0.0
    public private(set) var suppressed = false
    public private(set) var checks: UInt64 = 0
    public private(set) var failedChecks: UInt64 = 0
    public private(set) var transitions: UInt64 = 0
    /// The last check's result in words ("ok", "connection refused", "status 503", "timeout").
    public private(set) var lastResult = "not checked yet"
    public private(set) var lastCheckAt: Double?
    private var penaltyAt: Double

    public init(now: Double) {
        since = now
        penaltyAt = now
    }

    /// The penalty as of `now` (it decays between results too).
    public func penalty(at now: Double, halfLife: Double) -> Double {
        penalty * pow2(-(now - penaltyAt) / halfLife)
    }

    /// Records one check's result; returns true when the state changed.
    @discardableResult
    public mutating func record(success: Bool, detail: String, now: Double, settings: HealthCheckSettings) -> Bool {
        penalty = penalty(at: now, halfLife: settings.flapHalfLifeSeconds)
        penaltyAt = now
        checks += 1
        lastResult = detail
        lastCheckAt = now
        if success {
            successes += 1
            failures = 0
        } else {
            failures += 1
            successes = 0
            failedChecks += 1
        }
        if suppressed && penalty < settings.flapReuse { suppressed = false }
        switch state {
        case .up where failures >= settings.fall:
            state = .down
            penalty += 1
            if penalty >= settings.flapSuppress { suppressed = true }
        case .down where successes >= settings.rise && !suppressed:
            state = .up
        default:
            return false
        }
        since = now
        transitions += 1
        return true
    }

    private func pow2(_ x: Double) -> Double { exp2(x) }
}
