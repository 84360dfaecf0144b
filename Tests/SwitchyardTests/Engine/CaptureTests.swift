import Foundation
import SwitchyardPcap
import Testing

/// `switchyard ctl capture` against a real engine on virtual devices (--no-huge): the file that
/// tshark reads back holds exactly the packets that crossed the edge, with comments saying where.
///
///     test ──header──► FIFO ──► net_pcap rx ──► count ──► swap ──out──► port:wire (tx_pcap)
///          (capture armed)          ▲                        └─drop (truncated frames)
///     test ──packets─► FIFO ────────┘        ctl capture --at swap:out ──► FILE.pcapng ──► tshark
///
/// The input comes through a FIFO, so the capture is armed before the first packet arrives and
/// its file can be compared with the engine's counters for the same, finite, traffic.
@Suite("capture at a stage edge", .serialized)
struct CaptureTests {
    /// Frames shorter than two MAC addresses: mac-swap drops them (reason `truncated`).
    static let truncated: [[UInt8]] = (0..<6).map { index in [UInt8](repeating: UInt8(index), count: 10) }

    /// The run's input: the engine tests' 200 frames, with the truncated ones among them.
    static func input() -> [[UInt8]] {
        var frames = EngineRunTests.traffic(seed: 3)
        for (index, frame) in truncated.enumerated() { frames.insert(frame, at: index * 30 + 5) }
        return frames
    }

    static func configuration(device: String, next: String = "port:wire") -> String {
        """
        eal:
          hugepages: off
        ports:
          - name: wire
            device: \(device)
          - name: sink
            device: net_null0
            rx_queues: 0
        stages:
          - name: count
            kind: counter
            next: { out: swap }
          - name: swap
            kind: mac-swap
            next: { out: \(next) }
        lcores:
          - id: 1
            cpu: 1
            idle: backoff
            poll:
              - { port: wire, queue: 0, to: count }

        """
    }

    /// An engine running in the background with its control socket.
    final class RunningEngine {
        let process: BackgroundCommand
        let socket: String

        init(config: String, seconds: Double, directory: TemporaryDirectory, extra: [String] = []) throws {
            socket = directory.file("control.sock")
            process = try BackgroundCommand([SwitchyardBinary.path, "run", "--control-socket", socket,
                                             "--config", config, "--duration", String(seconds),
                                             "--stats-json", directory.file("stats.json")] + extra)
            let deadline = Date().addingTimeInterval(20)
            while !FileManager.default.fileExists(atPath: socket) && process.isRunning && Date() < deadline {
                Thread.sleep(forTimeInterval: 0.05)
            }
        }

        /// `switchyard ctl capture ARGS` (in the foreground).
        func capture(_ arguments: [String]) throws -> ExternalCommand.Result {
            try ExternalCommand.run([SwitchyardBinary.path, "ctl", "capture", "--socket", socket] + arguments, timeout: 30)
        }

        func capture(inBackground arguments: [String]) throws -> BackgroundCommand {
            try BackgroundCommand([SwitchyardBinary.path, "ctl", "capture", "--socket", socket] + arguments)
        }

        func wait() -> ExternalCommand.Result { process.wait(timeout: 60) }
    }

    /// A pcap fed to net_pcap through a FIFO: the header now (the engine opens the file at start),
    /// the packets when `release()` is called, then end of file.
    final class FIFOFeed {
        let path: String
        private let fd: Int32
        private let packets: Data

        init(frames: [[UInt8]], directory: TemporaryDirectory) throws {
            path = directory.file("input.fifo")
            try Pcap.write(frames, to: directory.file("input.pcap"))
            let bytes = try Data(contentsOf: URL(fileURLWithPath: directory.file("input.pcap")))
            guard mkfifo(path, 0o600) == 0 else { throw Tshark.Failure(description: "mkfifo \(path) failed") }
            fd = open(path, O_RDWR) // does not wait for the reader; EOF comes when it is closed
            packets = bytes.dropFirst(24)
            Self.write(fd, bytes.prefix(24))
        }

        func release() {
            Self.write(fd, packets)
            close(fd)
        }

        private static func write(_ fd: Int32, _ data: Data) {
            data.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n <= 0 { return }
                    offset += n
                }
            }
        }
    }

    /// The frames of a pcapng file (converted to pcap by tshark's editcap) and their comments.
    static func read(pcapng path: String, directory: TemporaryDirectory) throws -> (frames: [[UInt8]], comments: [String]) {
        let converted = directory.file("converted-\(UUID().uuidString.prefix(6)).pcap")
        try ExternalCommand.check(["editcap", "-F", "pcap", path, converted])
        let fields = try ExternalCommand.check(["tshark", "-r", path, "-T", "fields", "-e", "frame.comment"])
        let comments = fields.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        return (try Pcap.read(converted), comments)
    }

    /// Runs the FIFO engine, captures with `arguments` while the input passes, returns the capture.
    func captureFinite(_ arguments: [String], directory: TemporaryDirectory) throws
        -> (summary: ExternalCommand.Result, run: ExternalCommand.Result, frames: [[UInt8]], comments: [String],
            counters: CounterSnapshot, output: [[UInt8]])
    {
        let feed = try FIFOFeed(frames: Self.input(), directory: directory)
        let config = try directory.write("capture.yaml", Self.configuration(
            device: "net_pcap0,rx_pcap=\(feed.path),tx_pcap=\(directory.file("out.pcap"))"))
        let engine = try RunningEngine(config: config, seconds: 6, directory: directory)
        let file = directory.file("capture.pcapng")
        let ctl = try engine.capture(inBackground: arguments + ["--seconds", "3", "--count", "100000", "--output", file])
        // The engine writes the file's header when the capture starts, just before arming the tap.
        let deadline = Date().addingTimeInterval(10)
        while ((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0) == 0 && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
        }
        Thread.sleep(forTimeInterval: 0.2)
        feed.release()
        let summary = ctl.wait(timeout: 20)
        let run = engine.wait()
        let (frames, comments) = try Self.read(pcapng: file, directory: directory)
        return (summary, run, frames, comments, try CounterSnapshot(path: directory.file("stats.json")),
                try Pcap.read(directory.file("out.pcap")))
    }

    @Test("a capture at a holding stage (fragments) follows the packets it holds and releases: the golden pipeline's counters add up, every mbuf returns")
    func captureAtAHoldingStage() throws {
        let directory = try TemporaryDirectory()
        let golden = GoldenCaptureTests.directory
        let feed = try FIFOFeed(frames: GoldenTraffic.uplink.map(\.frame), directory: directory)
        let template = try String(contentsOfFile: golden + "/config.yaml", encoding: .utf8)
        let config = try directory.write("golden.yaml", template
            .replacingOccurrences(of: "rx_pcap=GOLDEN_DIR/uplink-in.pcap", with: "rx_pcap=\(feed.path)")
            .replacingOccurrences(of: "GOLDEN_DIR", with: golden).replacingOccurrences(of: "OUT_DIR", with: directory.path))
        let engine = try RunningEngine(config: config, seconds: 5, directory: directory)
        let file = directory.file("fragments.pcapng")
        let ctl = try engine.capture(inBackground: ["--at", "fragments", "--seconds", "2", "--count", "100000",
                                                    "--output", file])
        let deadline = Date().addingTimeInterval(10)
        while ((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0) == 0 && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
        }
        Thread.sleep(forTimeInterval: 0.2)
        feed.release()
        let summary = ctl.wait(timeout: 20)
        let run = engine.wait()
        #expect(summary.status == 0, "\(summary.stdout)\(summary.stderr)")
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(CounterSnapshot.allMbufsReturned(run.stdout), "\(run.stdout)")
        let counters = try CounterSnapshot(path: directory.file("stats.json"))
        if let error = counters.conservationError() { Issue.record("counters do not add up: \(error)") }
        // What left the stage while the capture ran (every disposition; held packets leave later).
        let (frames, _) = try Self.read(pcapng: file, directory: directory)
        let left = counters.blocks.filter { $0.scope == "stage fragments" }
            .reduce(UInt64(0)) { total, block in block.dispositions.reduce(total) { $0 + (block.counters[$1] ?? 0) } }
        #expect(UInt64(frames.count) + counters.total("stage fragments", "hold-teardown") == left,
                "\(frames.count) captured, \(left) left the stage")
    }

    @Test("--at swap:out holds exactly the packets that crossed that edge, each commented with lcore, stage, disposition")
    func stageDisposition() throws {
        let directory = try TemporaryDirectory()
        let result = try captureFinite(["--at", "swap:out"], directory: directory)
        #expect(result.summary.status == 0, "\(result.summary.stderr)")
        #expect(result.run.status == 0, "\(result.run.stderr)")
        let expected = Self.input().filter { $0.count >= 12 }.map(EngineRunTests.macSwapped)
        #expect(result.counters.total("stage swap", "out") == UInt64(expected.count))
        #expect(result.frames.count == expected.count)
        #expect(result.frames == expected, "the capture holds the swapped frames, in order")
        #expect(result.frames == result.output, "what crossed swap:out is what the port sent")
        #expect(Set(result.comments) == ["lcore 1, stage swap, disposition out"], "\(Set(result.comments))")
        #expect(result.summary.stdout.contains("capture 1 at stage swap:out: done, \(expected.count) packets written to"),
                "\(result.summary.stdout)")
        #expect(result.summary.stdout.contains("(\(expected.count) copied, 0 filtered, 0 copies lost)"))
        #expect(result.counters.total("capture", "copied") == UInt64(expected.count))
        #expect(result.counters.conservationError() == nil, "\(result.counters.conservationError() ?? "")")
        #expect(CounterSnapshot.allMbufsReturned(result.run.stdout), "\(result.run.stdout)")
        #expect(result.run.stdout.contains("mempool sy_capture: 4095 of 4095 mbufs back in the pool"))
    }

    @Test("with a BPF filter only the matching packets are written; the others are counted as filtered")
    func stageDispositionFiltered() throws {
        let directory = try TemporaryDirectory()
        let filter = "ip6 and tcp"
        let result = try captureFinite(["--at", "swap:out", "--filter", filter], directory: directory)
        #expect(result.summary.status == 0, "\(result.summary.stderr)")
        // tshark, not this code, says which of the frames that crossed the edge match.
        let all = try Self.read(pcapng: directory.file("out.pcap"), directory: directory)
        let matching = try ExternalCommand.check(["tshark", "-r", directory.file("out.pcap"), "-Y", "ipv6 and tcp", "-T", "fields",
                                                  "-e", "frame.number"])
        let numbers = matching.stdout.split(separator: "\n").compactMap { Int($0) }
        #expect(numbers.count > 10 && numbers.count < all.frames.count)
        #expect(result.frames == numbers.map { all.frames[$0 - 1] })
        let crossed = result.counters.total("stage swap", "out")
        #expect(result.counters.total("capture", "filtered") == crossed - UInt64(numbers.count))
        #expect(result.summary.stdout.contains("(\(numbers.count) copied, \(Int(crossed) - numbers.count) filtered, 0 copies lost)"),
                "\(result.summary.stdout)")
        #expect(CounterSnapshot.allMbufsReturned(result.run.stdout), "\(result.run.stdout)")
    }

    @Test("errors name the unknown stage, disposition or port and the bad filter; drops carry their reason; a full copy ring loses copies, never packets")
    func errorsDropsAndOverflow() throws {
        let directory = try TemporaryDirectory()
        try Pcap.write(Self.input(), to: directory.file("input.pcap"))
        let config = try directory.write("capture.yaml", Self.configuration(
            device: "net_pcap0,rx_pcap=\(directory.file("input.pcap")),infinite_rx=1\n    tx_queues: 0", next: "port:sink"))
        let engine = try RunningEngine(config: config, seconds: 6, directory: directory)
        let file = directory.file("capture.pcapng")

        let errors: [([String], String)] = [
            (["--at", "nope"], "unknown stage 'nope' (stages: count, swap)"),
            (["--at", "swap:nope"], "stage 'swap' (mac-swap) has no disposition 'nope' (dispositions: drop, out)"),
            (["--rx", "nope"], "unknown port 'nope' (ports: wire, sink)"),
            (["--tx", "wire", "--filter", "tcp and and"], "invalid filter 'tcp and and': "),
        ]
        for (arguments, message) in errors {
            let result = try engine.capture(arguments + ["--output", file])
            #expect(result.status == 1, "\(arguments): \(result.stdout)")
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }

        let drops = try engine.capture(["--at", "swap:drop", "--count", "5", "--output", file])
        #expect(drops.status == 0, "\(drops.stderr)")
        let dropped = try Self.read(pcapng: file, directory: directory)
        #expect(dropped.frames.count == 5)
        #expect(dropped.frames.allSatisfy { $0.count == 10 })
        #expect(Set(dropped.comments) == ["lcore 1, stage swap, disposition drop, reason truncated"], "\(dropped.comments)")

        // Every packet at full rate: the ring (4096) fills between two drains (10 ms), copies are lost.
        let overflow = try engine.capture(["--tx", "sink", "--seconds", "2", "--count", "20000", "--output", file])
        #expect(overflow.status == 0, "\(overflow.stderr)")
        let lost = overflow.stdout.split(separator: "(").last.flatMap { part in
            part.split(separator: ",").first(where: { $0.contains("copies lost") })
        }.flatMap { UInt64($0.split(separator: " ").first ?? "") } ?? 0
        #expect(lost > 0, "\(overflow.stdout)")
        let outbound = try ExternalCommand.check(["tshark", "-r", file, "-T", "fields", "-e", "frame.comment"])
        #expect(Set(outbound.stdout.split(separator: "\n")) == ["lcore 1, tx sink queue 0, from stage swap disposition out"])

        let run = engine.wait()
        #expect(run.status == 0, "\(run.stderr)")
        let counters = try CounterSnapshot(path: directory.file("stats.json"))
        #expect(counters.total("capture", "copy-dropped") >= lost)
        #expect(counters.conservationError() == nil, "\(counters.conservationError() ?? "")")
        #expect(CounterSnapshot.allMbufsReturned(run.stdout), "\(run.stdout)")
    }

    @Test("after a hot reload the new graphs are tapped too, and a stage the reload added can be captured")
    func captureAfterReload() throws {
        let directory = try TemporaryDirectory()
        try Pcap.write(Self.input(), to: directory.file("input.pcap"))
        let device = "net_pcap0,rx_pcap=\(directory.file("input.pcap")),infinite_rx=1\n    tx_queues: 0"
        let before = try directory.write("before.yaml", Self.configuration(device: device, next: "port:sink"))
        let after = try directory.write("after.yaml", Self.configuration(device: device, next: "tag")
            .replacingOccurrences(of: "lcores:", with: """
                  - name: tag
                    kind: counter
                    next: { out: port:sink }
                lcores:
                """))
        let engine = try RunningEngine(config: before, seconds: 5, directory: directory,
                                       extra: ["--reload-config", after, "--reload-after", "0.5"])
        Thread.sleep(forTimeInterval: 1.5)
        let file = directory.file("capture.pcapng")
        let tagged = try engine.capture(["--at", "tag:out", "--count", "20", "--output", file])
        #expect(tagged.status == 0, "\(tagged.stderr)")
        let captured = try Self.read(pcapng: file, directory: directory)
        #expect(captured.frames.count == 20)
        #expect(Set(captured.comments) == ["lcore 1, stage tag, disposition out"], "\(captured.comments)")
        let run = engine.wait()
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("reloaded: 1 [count swap tag]"), "\(run.stderr)")
        #expect(CounterSnapshot.allMbufsReturned(run.stdout), "\(run.stdout)")
    }
}
