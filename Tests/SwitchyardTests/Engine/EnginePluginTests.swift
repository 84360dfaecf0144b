import Foundation
import SwitchyardCluster
import SwitchyardClusterPlugin
import SwitchyardConfig
import SwitchyardCore
import SwitchyardEngine
import SwitchyardStages
import Testing

/// The plug-in protocol (docs/plugins.md): typed stage services, sections owned by plug-ins,
/// and reload rules contributed by them. The cluster plug-in's behaviour itself is covered by the
/// engine, reload, preview, listener and BGP suites.
@Suite("engine plug-ins")
struct EnginePluginTests {
    /// A plug-in with one section, `toy: {size: N}`; `size` cannot change live.
    final class ToyPlugin: EnginePlugin {
        struct Settings: PluginSettings { var size: Int? }
        struct Size { var value: Int }

        static let sections = ["toy"]
        static let telemetryCommands: [Telemetry.Command] = []

        static func parse(_ root: ConfigMap, into diagnostics: inout ConfigDiagnostics) -> any PluginSettings {
            let size = diagnostics.attempt { () throws -> Int? in
                guard let map = try root.optional("toy")?.within("toy").map() else { return nil }
                let size = try map.int("size", in: 1...10)
                try map.finish()
                return size
            } ?? nil
            return Settings(size: size)
        }

        static func parameterServices(_ settings: any PluginSettings) -> StageServices {
            var services = StageServices()
            services[Size.self] = (settings as? Settings)?.size.map(Size.init)
            return services
        }

        static func refusal(from old: any PluginSettings, to new: any PluginSettings) -> String? { nil }

        static func fixedDifferences(from old: any PluginSettings, to new: any PluginSettings) -> [String] {
            let before = (old as? Settings)?.size, after = (new as? Settings)?.size
            return before == after ? [] : ["toy.size: cannot change while the engine runs (restart it)"]
        }

        static func liveChanges(from old: any PluginSettings, to new: any PluginSettings) -> [String] { [] }

        static func standaloneServices(_ settings: any PluginSettings, name: String, socket: Int32) throws
            -> (services: StageServices, owner: AnyObject?)
        {
            (parameterServices(settings), nil)
        }

        init(engine: Engine, settings: any PluginSettings, qsbr: OpaquePointer) throws {}
        var stageServices: StageServices { StageServices() }
        func start() throws {}
        func tick(now: Date) {}
        func refreshCounters() {}
        func status(into answer: inout [String: Any]) {}
        func report() -> String? { nil }
        func adjustReload(_ new: any PluginSettings) -> any PluginSettings { new }
        func prepareReload(_ new: any PluginSettings) throws -> StageServices { StageServices() }
        func reloadFailed() {}
        func reloadApplied(_ new: any PluginSettings) {}
        func prepareStop(lcoresFailed: Bool) -> Double { 0 }
        func stop() {}
        func release() {}
    }

    func parse(_ text: String, plugins: [any EnginePlugin.Type]) throws -> EngineConfiguration {
        try EngineConfiguration.parse(text, file: "plugins.yaml", stages: builtinStages, plugins: plugins)
    }

    func errors(_ text: String, plugins: [any EnginePlugin.Type]) -> [ConfigError] {
        do {
            _ = try parse(text, plugins: plugins)
            return []
        } catch let errors as ConfigErrors {
            return errors.errors
        } catch {
            return []
        }
    }

    @Test("services are looked up by type; nil removes; a merge prefers the later value")
    func servicesByType() {
        struct A { var value: Int }
        struct B { var text: String }
        var services = StageServices()
        #expect(services[A.self] == nil)
        services[A.self] = A(value: 1)
        services[B.self] = B(text: "b")
        #expect(services[A.self]?.value == 1 && services[B.self]?.text == "b")
        var other = StageServices()
        other[A.self] = A(value: 2)
        let merged = services.merging(other)
        #expect(merged[A.self]?.value == 2 && merged[B.self]?.text == "b")
        services[A.self] = nil
        #expect(services[A.self] == nil && !services.isEmpty)
        let context = StageContext(instanceName: "s", lcoreID: 1, socketID: 0, burstSize: 32, ports: [], services: merged)
        #expect(context.service(B.self)?.text == "b")
    }

    @Test("a section no plug-in owns is rejected by name; the plug-in that owns it parses it")
    func sectionsBelongToPlugins() throws {
        let toy = ConfigurationTests.valid + "toy: {size: 3}\n"
        #expect(errors(toy, plugins: standardPlugins).map(\.key) == ["toy"])
        let configuration = try parse(toy, plugins: standardPlugins + [ToyPlugin.self])
        #expect((configuration.settings(of: ToyPlugin.self) as? ToyPlugin.Settings)?.size == 3)
        #expect(configuration.cluster == nil)
        let bad = errors(ConfigurationTests.valid + "toy: {size: 30}\n", plugins: [ToyPlugin.self])
        #expect(bad.first?.key == "size" && bad.first?.line == 24)
    }

    @Test("without the cluster plug-in, `cluster:` is an unknown section")
    func clusterIsAPlugin() throws {
        let text = ClusterConfigurationTests.valid
        let configuration = try parse(text, plugins: standardPlugins)
        #expect(configuration.cluster != nil)
        #expect(configuration.plugins.count == 1)
        let found = errors(text, plugins: [])
        #expect(found.contains { $0.key == "cluster" })
    }

    @Test("a reload's fixed keys include each plug-in's, after the engine's")
    func pluginFixedDifferences() throws {
        let before = try parse(ConfigurationTests.valid + "toy: {size: 3}\n", plugins: [ToyPlugin.self])
        let after = try parse(ConfigurationTests.valid.replacingOccurrences(of: "size: 256", with: "size: 512")
            + "toy: {size: 4}\n", plugins: [ToyPlugin.self])
        let problems = before.fixedDifferences(to: after)
        #expect(problems.count == 2)
        #expect(problems.first?.hasPrefix("rings:") == true)
        #expect(problems.last == "toy.size: cannot change while the engine runs (restart it)")
    }
}
