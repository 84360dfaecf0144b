/// A configuration error that names where it is: file, line, column, the section or stage
/// instance it belongs to, and the key.
///
///     switchyard.yaml:14:5: stage 'swap': key 'nxet': unknown key (expected one of: kind, name, next)
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    public var file: String
    public var line: Int
    public var column: Int
    /// "stage 'swap'", "port 'wire'", "lcore 1", "eal", ...: empty at the top level.
    public var context: String
    /// The key the error is about, when there is one.
    public var key: String?
    public var message: String

    public init(file: String, line: Int, column: Int, context: String, key: String?, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.context = context
        self.key = key
        self.message = message
    }

    public var description: String {
        var text = "\(file):\(line):\(column): "
        if !context.isEmpty { text += "\(context): " }
        if let key { text += "key '\(key)': " }
        return text + message
    }
}

/// Every error found in one configuration file, in file order.
public struct ConfigErrors: Error, CustomStringConvertible, Sendable {
    public var errors: [ConfigError]
    public init(_ errors: [ConfigError]) {
        self.errors = errors.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
    }
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

/// Collects errors so that one run of `switchyard validate` reports all of them, not only the first.
public struct ConfigDiagnostics {
    public private(set) var errors: [ConfigError] = []
    public init() {}

    public mutating func add(_ error: ConfigError) { errors.append(error) }

    /// Runs `body`; a thrown ConfigError is recorded and nil returned, so parsing goes on.
    public mutating func attempt<T>(_ body: () throws -> T) -> T? {
        do {
            return try body()
        } catch let error as ConfigError {
            errors.append(error)
        } catch let error as ConfigErrors {
            errors.append(contentsOf: error.errors)
        } catch {
            errors.append(ConfigError(file: "?", line: 0, column: 0, context: "", key: nil, message: "\(error)"))
        }
        return nil
    }

    public func check() throws {
        if !errors.isEmpty { throw ConfigErrors(errors) }
    }
}
