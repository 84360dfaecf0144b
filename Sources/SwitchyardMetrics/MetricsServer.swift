import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchyardEngine

/// The Prometheus endpoint: `GET /metrics` on `metrics.listen` (or `switchyard run --metrics-listen`).
///
///     Prometheus ──HTTP──► NIO event loop (one thread of its own, never an lcore)
///                              └─► PrometheusExporter.render() ──► engine.counters (atomics, short lock)
///
/// `GET` or `HEAD /metrics` (any query string) answers 200 with the text format; any other path 404;
/// another method on /metrics 405. Connections are kept alive as the client asks. The server starts
/// once the ports are up and before the lcores forward a packet; an address that cannot be bound
/// (already in use, not local) stops the engine with an error naming it, so a missing endpoint is
/// never discovered later by a silent scrape failure.
public final class MetricsServer: EngineService {
    public let listen: MetricsSettings
    private let log: (String) -> Void
    private var group: MultiThreadedEventLoopGroup?
    private var channel: (any Channel)?

    public init(listen: MetricsSettings, log: @escaping (String) -> Void) {
        self.listen = listen
        self.log = log
    }

    /// `127.0.0.1:9100`, `[::1]:9100`.
    public var address: String {
        listen.host.contains(":") ? "[\(listen.host)]:\(listen.port)" : "\(listen.host):\(listen.port)"
    }

    public func start(engine: Engine) throws {
        try start(exporter: PrometheusExporter(registry: engine.counters))
    }

    /// Binds and serves `exporter` (what `start(engine:)` does, without an engine: for tests).
    public func start(exporter: PrometheusExporter) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 32)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHandler(exporter: exporter))
                }
            }
        do {
            channel = try bootstrap.bind(host: listen.host, port: listen.port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw EngineError.setup("metrics: cannot listen on \(address): \(Self.describe(error))")
        }
        self.group = group
        log("metrics: Prometheus endpoint at http://\(address)/metrics")
    }

    public func stop() {
        try? channel?.close().wait()
        channel = nil
        try? group?.syncShutdownGracefully()
        group = nil
    }

    /// `Address already in use (errno: 98)` rather than NIO's type dump.
    private static func describe(_ error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) + " (errno \(error.errnoCode))" }
        return "\(error)"
    }
}

/// One HTTP connection: answers each request once its end has arrived.
private final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let exporter: PrometheusExporter
    private var request: HTTPRequestHead?

    init(exporter: PrometheusExporter) {
        self.exporter = exporter
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let status: HTTPResponseStatus
        var headers = HTTPHeaders()
        var body: [UInt8]
        if path != "/metrics" {
            status = .notFound
            body = Array("not found: the Prometheus endpoint is /metrics\n".utf8)
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        } else if head.method != .GET && head.method != .HEAD {
            status = .methodNotAllowed
            body = Array("method not allowed: use GET /metrics\n".utf8)
            headers.add(name: "Allow", value: "GET, HEAD")
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        } else {
            status = .ok
            body = exporter.render()
            headers.add(name: "Content-Type", value: "text/plain; version=0.0.4; charset=utf-8")
        }
        headers.add(name: "Content-Length", value: String(body.count))
        if head.method == .HEAD { body = [] }
        let keepAlive = head.isKeepAlive
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                      promise: nil)
        if !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
