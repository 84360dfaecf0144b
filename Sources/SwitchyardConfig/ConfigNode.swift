import Yams

/// One value of a configuration file, with where it came from.
///
/// Readers are strict: a value of the wrong type is an error that names the file, line,
/// context and key; there is no silent conversion (`"8"` is not an integer, `yes` is not a string).
public struct ConfigValue {
    public let node: Node
    public let file: String
    public let context: String
    public let key: String?

    public init(node: Node, file: String, context: String, key: String?) {
        self.node = node
        self.file = file
        self.context = context
        self.key = key
    }

    public var line: Int { node.mark?.line ?? 0 }
    public var column: Int { node.mark?.column ?? 0 }

    public func error(_ message: String, key: String? = nil) -> ConfigError {
        ConfigError(file: file, line: line, column: column, context: context, key: key ?? self.key, message: message)
    }

    /// This value as a value with another context (a list item that is a stage, say).
    public func within(_ context: String) -> ConfigValue {
        ConfigValue(node: node, file: file, context: context, key: key)
    }

    private var typeName: String {
        switch node {
        case .scalar(let s):
            if s.style == .plain {
                if Int(s.string) != nil { return "an integer" }
                if ["true", "false"].contains(s.string) { return "a boolean" }
                if ["~", "null", ""].contains(s.string) { return "null" }
            }
            return "a string"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    public func string() throws -> String {
        guard case .scalar(let s) = node else { throw error("expected a string, found \(typeName)") }
        if s.style == .plain && (["~", "null", ""].contains(s.string)) { throw error("expected a string, found null") }
        return s.string
    }

    public func int(in range: ClosedRange<Int>? = nil) throws -> Int {
        guard case .scalar(let s) = node, s.style == .plain, let value = Int(s.string) else {
            throw error("expected an integer, found \(typeName)")
        }
        if let range, !range.contains(value) {
            throw error("\(value) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    public func double(in range: ClosedRange<Double>? = nil) throws -> Double {
        guard case .scalar(let s) = node, s.style == .plain, let value = Double(s.string) else {
            throw error("expected a number, found \(typeName)")
        }
        if let range, !range.contains(value) {
            throw error("\(value) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    public func bool() throws -> Bool {
        guard case .scalar(let s) = node, s.style == .plain, ["true", "false"].contains(s.string) else {
            throw error("expected true or false, found \(typeName)")
        }
        return s.string == "true"
    }

    /// One of a fixed set of words.
    public func choice(_ choices: [String]) throws -> String {
        let value = try string()
        guard choices.contains(value) else {
            throw error("'\(value)' is not one of: \(choices.joined(separator: ", "))")
        }
        return value
    }

    public func list() throws -> [ConfigValue] {
        guard case .sequence(let seq) = node else { throw error("expected a list, found \(typeName)") }
        return seq.map { ConfigValue(node: $0, file: file, context: context, key: key) }
    }

    public func map() throws -> ConfigMap {
        guard case .mapping(let mapping) = node else { throw error("expected a mapping, found \(typeName)") }
        return try ConfigMap(mapping: mapping, at: self)
    }
}

/// A mapping read strictly: every key a reader asks for is marked as used, and `finish()`
/// rejects whatever is left, so a misspelled key is an error that names it and its line.
public final class ConfigMap {
    public let value: ConfigValue
    private var entries: [(key: String, keyNode: Node, value: Node)] = []
    private var used: Set<String> = []
    /// Every key a reader asked for, present or not: what `finish()` lists as expected.
    private var known: Set<String> = []

    init(mapping: Node.Mapping, at value: ConfigValue) throws {
        self.value = value
        var seen: Set<String> = []
        for (keyNode, valueNode) in mapping {
            guard case .scalar(let k) = keyNode else {
                throw ConfigError(file: value.file, line: keyNode.mark?.line ?? 0, column: keyNode.mark?.column ?? 0,
                                  context: value.context, key: nil, message: "keys must be strings")
            }
            if !seen.insert(k.string).inserted {
                throw ConfigError(file: value.file, line: keyNode.mark?.line ?? 0,
                                  column: keyNode.mark?.column ?? 0, context: value.context, key: k.string,
                                  message: "duplicate key")
            }
            entries.append((k.string, keyNode, valueNode))
        }
    }

    public var file: String { value.file }
    public var context: String { value.context }
    public var line: Int { value.line }
    public var keys: [String] { entries.map(\.key) }

    public func error(_ message: String, key: String? = nil) -> ConfigError {
        if let key, let entry = entries.first(where: { $0.key == key }) {
            return ConfigError(file: file, line: entry.keyNode.mark?.line ?? line,
                               column: entry.keyNode.mark?.column ?? 0, context: context, key: key, message: message)
        }
        return ConfigError(file: file, line: line, column: value.column, context: context, key: key, message: message)
    }

    /// The value under `key`, marked used; nil when absent.
    public func optional(_ key: String) -> ConfigValue? {
        known.insert(key)
        guard let entry = entries.first(where: { $0.key == key }) else { return nil }
        used.insert(key)
        return ConfigValue(node: entry.value, file: file, context: context, key: key)
    }

    /// The value under `key`, marked used; an error naming the key when absent.
    public func required(_ key: String) throws -> ConfigValue {
        guard let value = optional(key) else { throw error("required key is missing", key: key) }
        return value
    }

    public func has(_ key: String) -> Bool {
        known.insert(key)
        return entries.contains { $0.key == key }
    }

    public func string(_ key: String) throws -> String { try required(key).string() }
    public func string(_ key: String, default fallback: String) throws -> String {
        try optional(key)?.string() ?? fallback
    }
    public func int(_ key: String, in range: ClosedRange<Int>? = nil) throws -> Int {
        try required(key).int(in: range)
    }
    public func int(_ key: String, default fallback: Int, in range: ClosedRange<Int>? = nil) throws -> Int {
        try optional(key)?.int(in: range) ?? fallback
    }
    public func double(_ key: String, default fallback: Double, in range: ClosedRange<Double>? = nil) throws -> Double {
        try optional(key)?.double(in: range) ?? fallback
    }
    public func bool(_ key: String, default fallback: Bool) throws -> Bool {
        try optional(key)?.bool() ?? fallback
    }
    public func choice(_ key: String, _ choices: [String], default fallback: String) throws -> String {
        try optional(key)?.choice(choices) ?? fallback
    }
    public func list(_ key: String) throws -> [ConfigValue] { try optional(key)?.list() ?? [] }
    public func stringList(_ key: String) throws -> [String] { try list(key).map { try $0.string() } }

    /// Marks keys as used without reading them (a caller that reads them elsewhere).
    public func markUsed(_ keys: String...) {
        used.formUnion(keys)
        known.formUnion(keys)
    }

    /// Throws for the first key nobody asked for, naming it and its line.
    public func finish() throws {
        for entry in entries where !used.contains(entry.key) {
            let expected = known.sorted().joined(separator: ", ")
            throw ConfigError(file: file, line: entry.keyNode.mark?.line ?? line,
                              column: entry.keyNode.mark?.column ?? 0, context: context, key: entry.key,
                              message: "unknown key" + (expected.isEmpty ? "" : " (expected one of: \(expected))"))
        }
    }
}

/// A whole configuration document.
public enum ConfigDocument {
    /// Parses YAML text into the top-level mapping. Syntax errors name the file and line.
    public static func parse(_ text: String, file: String) throws -> ConfigMap {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            let (line, column, problem) = describe(error)
            throw ConfigError(file: file, line: line, column: column, context: "", key: nil,
                              message: "YAML syntax error: \(problem)")
        }
        guard let root else {
            throw ConfigError(file: file, line: 1, column: 1, context: "", key: nil, message: "the file is empty")
        }
        return try ConfigValue(node: root, file: file, context: "", key: nil).map()
    }

    private static func describe(_ error: YamlError) -> (line: Int, column: Int, problem: String) {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return (mark.line, mark.column, [context?.text, problem].compactMap { $0 }.joined(separator: ": "))
        case .duplicatedKeysInMapping(let duplicates, let context):
            return (context.mark.line, context.mark.column,
                    "duplicate key \(duplicates.map { "'\($0)'" }.joined(separator: ", "))")
        default:
            return (1, 1, "\(error)")
        }
    }
}
