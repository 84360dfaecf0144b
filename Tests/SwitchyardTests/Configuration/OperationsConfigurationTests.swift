import SwitchyardConfig
import SwitchyardEngine
import SwitchyardClusterPlugin
import SwitchyardStages
import Testing

/// The operations keys: `name:`, `control:` and `metrics:`; each mistake names file, line and key.
@Suite("configuration: name, control, metrics")
struct OperationsConfigurationTests {
    let base = ConfigurationTests.valid

    func parse(_ text: String, file: String = "/etc/switchyard/edge-1.yaml") throws -> EngineConfiguration {
        try EngineConfiguration.parse(text, file: file, stages: builtinStages, plugins: standardPlugins)
    }

    func error(_ text: String) -> ConfigError? {
        do {
            _ = try parse(text)
            return nil
        } catch let errors as ConfigErrors {
            return errors.errors.first
        } catch {
            return nil
        }
    }

    @Test func theNameDefaultsToTheFileStemAndNamesTheSocket() throws {
        let config = try parse(base)
        #expect(config.name == "edge-1")
        #expect(config.control.enabled && config.control.socket == nil)
        #expect(ControlSettings.defaultSocket(name: config.name) == "/run/switchyard/edge-1.sock")
        #expect(config.metrics == nil)
        let named = try parse("name: lb-east.2\ncontrol: { socket: /tmp/x.sock }\nmetrics: { listen: 127.0.0.1:9469 }\n" + base)
        #expect(named.name == "lb-east.2")
        #expect(named.control.socket == "/tmp/x.sock")
        #expect(named.metrics?.host == "127.0.0.1" && named.metrics?.port == 9469)
        let v6 = try parse("metrics: { listen: \"[::1]:9000\" }\n" + base)
        #expect(v6.metrics?.host == "::1" && v6.metrics?.port == 9000)
        #expect(try parse("control: { socket: none }\n" + base).control.enabled == false)
    }

    @Test func mistakesNameTheKey() throws {
        for (text, key, words) in [
            ("name: ../etc/passwd\n", "name", "letters, digits"),
            ("name: \"\"\n", "name", "letters, digits"),
            ("control: { socket: relative.sock }\n", "socket", "absolute path"),
            ("control: { path: /tmp/x }\n", "path", "unknown"),
            ("metrics: { listen: 9469 }\n", "listen", "ADDRESS:PORT"),
            ("metrics: { listen: \"127.0.0.1:99999\" }\n", "listen", "ADDRESS:PORT"),
            ("metrics: { listen: \"::1:9000\" }\n", "listen", "ADDRESS:PORT"),
            ("metrics: {}\n", "listen", "missing"),
        ] {
            let found = try #require(error(text + base), "\(text) should be an error")
            #expect(found.key == key, "\(text): \(found)")
            #expect(found.line == 1, "\(text): \(found)")
            #expect(found.file == "/etc/switchyard/edge-1.yaml")
            #expect(found.description.contains(words), "\(text): \(found)")
        }
    }
}
