import SwitchyardConfig
import SwitchyardCore

/// The cluster as the stages see it: two typed services in the stage contexts, offered by the
/// cluster plug-in (SwitchyardClusterPlugin) and looked up by type.
///
///     parsing:  StageParameterContext.services[ClusterConfiguration.self]  (the `cluster:` section)
///     building: StageContext.services[ClusterRuntime.self]                 (tables, connections, neighbours)
///
/// Core knows neither type: these helpers live here, so stage code reads `context.requireCluster(kind:)`.
extension StageParameterContext {
    /// A context with the file's `cluster:` section (tests and tools that build stages by hand).
    public init(instanceName: String, portNames: [String], cluster: ClusterConfiguration?, hasClusterSection: Bool? = nil) {
        self.init(instanceName: instanceName, portNames: portNames)
        self.cluster = cluster
        if hasClusterSection ?? (cluster != nil) { sections.insert("cluster") }
    }

    /// A context for a file that has (or has not) a `cluster:` section that did not parse.
    public init(instanceName: String, portNames: [String], hasClusterSection: Bool) {
        self.init(instanceName: instanceName, portNames: portNames, cluster: nil, hasClusterSection: hasClusterSection)
    }

    /// The file's `cluster:` section, when it has one and it is valid.
    public var cluster: ClusterConfiguration? {
        get { services[ClusterConfiguration.self] }
        set { services[ClusterConfiguration.self] = newValue }
    }

    /// True when the file has a `cluster:` section, valid or not.
    public var hasClusterSection: Bool { sections.contains("cluster") }

    /// For stages that need the cluster: throws (on the stage's `kind` key) when the file has no
    /// `cluster:` section; nil when the section exists but has errors, already reported on their own.
    public func requireCluster(_ map: ConfigMap, kind: String) throws -> ClusterConfiguration? {
        guard hasClusterSection else {
            throw map.error("\(kind) needs the `cluster:` section (hosts, services, tunnel)", key: "kind")
        }
        return cluster
    }
}

extension StageContext {
    /// A context with the cluster's runtime (tests and tools that build stages by hand).
    public init(instanceName: String, lcoreID: Int, socketID: Int32, burstSize: Int, ports: [PortDescription],
                cluster: ClusterRuntime?)
    {
        self.init(instanceName: instanceName, lcoreID: lcoreID, socketID: socketID, burstSize: burstSize, ports: ports)
        self.cluster = cluster
    }

    /// The cluster's shared state (translation map, connection table, neighbours), when configured.
    public var cluster: ClusterRuntime? {
        get { services[ClusterRuntime.self] }
        set { services[ClusterRuntime.self] = newValue }
    }

    /// The cluster runtime, or an error naming the stage that needs a `cluster:` section.
    public func requireCluster(kind: String) throws -> ClusterRuntime {
        guard let cluster else {
            throw StageSetupError("stage '\(instanceName)' (\(kind)) needs the `cluster:` section of the configuration")
        }
        return cluster
    }
}
