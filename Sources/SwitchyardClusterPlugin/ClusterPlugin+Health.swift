import CDPDK
import Foundation
import SwitchyardEngine
import Glibc
import SwitchyardCluster

/// Health checks (issue 11 item 2; docs/configuration.md `health_check`): the control thread of
/// the host that owns a backend checks it, never an lcore; a backend that fails is marked down
/// through listener registration (a new version of this host's set, gossiped), so every host
/// gives it weight 0; one that recovers is marked up again.
///
///     every tick (~10 ms), per backend of this host with a health_check:
///       due? ─► non-blocking connect (kernel socket) ─► tcp: connected = ok
///                                                  └─► http: GET path, status line = status? ok
///       in flight ─► poll(0): connected / answered / refused / timeout
///       passive: tuple-translate's counters (RST answering a SYN, ICMP unreachable) grew ─► check now
///       result ─► BackendHealth (rise, fall, flap damping) ─► changed? ─► book.setDown ─► republish
final class HealthChecker {
    /// One checked backend.
    final class Probe {
        let backend: ListenerBook.Listener
        let service: String
        var settings: HealthCheckSettings
        var isFileBackend: Bool
        /// `backends[].check_address`, when the check goes elsewhere than the bypass tuple's address.
        var checkAddress: IPAddress?
        var health: BackendHealth
        var nextDue: Double
        var fd: Int32 = -1
        var startedAt = 0.0
        var connected = false
        var response: [UInt8] = []
        /// The directory whose passive counters `seen` refers to (held, so it cannot be confused
        /// with a later one at the same address), and the backend's index there.
        var directory: ServiceDirectory?
        var index = 0
        var seen: (refused: UInt64, unreachable: UInt64) = (0, 0)
        var passive: (refused: UInt64, unreachable: UInt64) = (0, 0)

        init(backend: ListenerBook.Listener, service: String, settings: HealthCheckSettings, isFileBackend: Bool, now: Double) {
            self.backend = backend
            self.service = service
            self.settings = settings
            self.isFileBackend = isFileBackend
            health = BackendHealth(now: now)
            nextDue = now
        }

        deinit { if fd >= 0 { close(fd) } }
    }

    var probes: [String: Probe] = [:]

    static func key(_ l: ListenerBook.Listener) -> String {
        "\(l.vip) \(l.protocolNumber) \(l.servicePort) \(l.address) \(l.port)"
    }
}

extension ClusterPlugin {
    /// Checks what is due, collects results and passive signals, marks backends down or up.
    func tickHealth(book: ListenerBook) {
        guard let cluster else { return }
        let checker = listenerState.health
        let now = Date().timeIntervalSince(listenerState.startedAt)
        let local = cluster.configuration.localHostID
        // The backends this host checks: its own, of services with a health_check, not withdrawn.
        var wanted = Set<String>()
        var index = 0
        for (s, service) in cluster.configuration.services.enumerated() {
            defer { index += service.backends.count }
            guard let settings = service.healthCheck else { continue }
            for (b, backend) in service.backends.enumerated() where backend.hostID == local {
                let record = ListenerBook.Listener(vip: service.vip, protocolNumber: service.transport.number,
                                                   servicePort: service.port, address: backend.address, port: backend.port,
                                                   weight: 0)
                let own = book.own.listeners.first { $0.isSameBackend(record) }
                if own?.withdrawn == true { continue }
                let isFile: Bool
                if case .listen = cluster.origins[s][b] { isFile = false } else { isFile = true }
                let key = HealthChecker.key(record)
                wanted.insert(key)
                let probe = checker.probes[key] ?? {
                    let p = HealthChecker.Probe(backend: record, service: service.name, settings: settings, isFileBackend: isFile, now: now)
                    checker.probes[key] = p
                    return p
                }()
                probe.settings = settings
                probe.isFileBackend = isFile
                probe.checkAddress = backend.checkAddress
                readPassive(probe, directory: cluster.directory, index: index + b, now: now)
            }
        }
        for key in checker.probes.keys where !wanted.contains(key) { checker.probes[key] = nil }

        for probe in checker.probes.values {
            if probe.fd < 0 && now >= probe.nextDue { start(probe, now: now) }
            if probe.fd >= 0, let (success, detail) = advance(probe, now: now) {
                close(probe.fd)
                probe.fd = -1
                finish(probe, success: success, detail: detail, now: now)
            }
            // The set says what the checks say (also after a listen or a reload rewrote the record).
            let down = probe.health.state == .down
            let held = book.own.listeners.first { $0.isSameBackend(probe.backend) }?.down ?? false
            if held != down && book.setDown(probe.backend, down: down, isFileBackend: probe.isFileBackend) {
                gossip?.announceListenersSoon()
            }
        }
    }

    /// Records a check's result; a change of state is logged.
    private func finish(_ probe: HealthChecker.Probe, success: Bool, detail: String, now: Double) {
        guard probe.health.record(success: success, detail: detail, now: now, settings: probe.settings) else { return }
        let h = probe.health
        log("health: \(probe.service) \(Self.endpointText(probe.backend.address, probe.backend.port)) \(h.state.rawValue)"
            + " (\(detail); \(h.state == .down ? "\(probe.settings.fall) failure(s)" : "\(probe.settings.rise) success(es)")"
            + (h.suppressed ? ", suppressed: flapping" : "") + ")")
    }

    /// Passive signals since the last look: counted, and the backend is checked at once.
    private func readPassive(_ probe: HealthChecker.Probe, directory: ServiceDirectory, index: Int, now: Double) {
        let refused = sy_atomic_load_u64(directory.passiveSignals + 2 * index)
        let unreachable = sy_atomic_load_u64(directory.passiveSignals + 2 * index + 1)
        if probe.directory !== directory || probe.index != index {
            probe.directory = directory
            probe.index = index
            probe.seen = (0, 0)
        }
        let new = (refused &- probe.seen.refused, unreachable &- probe.seen.unreachable)
        probe.seen = (refused, unreachable)
        guard new.0 > 0 || new.1 > 0 else { return }
        probe.passive.refused += new.0
        probe.passive.unreachable += new.1
        if probe.fd < 0 { probe.nextDue = min(probe.nextDue, now) }
    }

    /// Opens the check's connection (non-blocking).
    private func start(_ probe: HealthChecker.Probe, now: Double) {
        probe.startedAt = now
        probe.nextDue = now + Double(probe.settings.intervalMilliseconds) / 1000
        probe.connected = false
        probe.response = []
        let address = probe.checkAddress ?? probe.backend.address
        let port = probe.settings.port ?? probe.backend.port
        let family = address.family == 4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            finish(probe, success: false, detail: "socket: \(String(cString: strerror(errno)))", now: now)
            return
        }
        var rc: Int32
        if address.family == 4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = UInt32(truncatingIfNeeded: address.high)
            rc = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        } else {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            let bytes = address.bytes
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: bytes) }
            rc = withUnsafePointer(to: &sin6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
        if rc != 0 && errno != EINPROGRESS {
            let reason = String(cString: strerror(errno))
            close(fd)
            finish(probe, success: false, detail: reason, now: now)
            return
        }
        probe.fd = fd
    }

    /// One look at a check in flight: its result, or nil while it goes on.
    private func advance(_ probe: HealthChecker.Probe, now: Double) -> (Bool, String)? {
        if now - probe.startedAt > Double(probe.settings.timeoutMilliseconds) / 1000 {
            return (false, probe.connected ? "timeout waiting for the status line" : "timeout")
        }
        var pfd = pollfd(fd: probe.fd, events: Int16(probe.connected ? POLLIN : POLLOUT), revents: 0)
        guard poll(&pfd, 1, 0) > 0 else { return nil }
        if !probe.connected {
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(probe.fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 { return (false, String(cString: strerror(error))) }
            probe.connected = true
            guard probe.settings.kind == .http else { return (true, "connected") }
            let request = "GET \(probe.settings.path) HTTP/1.0\r\nHost: \(probe.checkAddress ?? probe.backend.address)\r\n"
                + "User-Agent: switchyard-health-check\r\nConnection: close\r\n\r\n"
            let sent = request.utf8CString.withUnsafeBufferPointer { send(probe.fd, $0.baseAddress, $0.count - 1, Int32(MSG_NOSIGNAL)) }
            if sent != request.utf8.count { return (false, "send: \(String(cString: strerror(errno)))") }
            return nil
        }
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = recv(probe.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        if count < 0 { return errno == EAGAIN ? nil : (false, "recv: \(String(cString: strerror(errno)))") }
        probe.response += buffer.prefix(count)
        if let end = probe.response.firstIndex(of: 13) ?? (count == 0 ? probe.response.endIndex : nil) {
            let line = String(decoding: probe.response[..<end], as: UTF8.self)
            let words = line.split(separator: " ")
            guard words.count >= 2, words[0].hasPrefix("HTTP/"), let code = Int(words[1]) else {
                return (false, "no HTTP status line")
            }
            return code == probe.settings.status ? (true, "status \(code)") : (false, "status \(code)")
        }
        if probe.response.count > 4096 { return (false, "no HTTP status line") }
        return nil
    }
}
