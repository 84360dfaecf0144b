import CDPDK
import Foundation

/// The service directories of one running engine, newest last, shared by every `ClusterRuntime`
/// built from the first one (`ClusterRuntime(reloading:)`: reloads, listener sets, health), so
/// that the control thread's gossip sees the tables the lcores use without being handed them.
///
///     ClusterRuntime(configuration:) ──► TableGenerations [D1]
///     ClusterRuntime(reloading:)     ──► the same object   [D1, D2]  current = D2
///     a runtime that is dropped (a reload that failed after building it) ──► its directory goes,
///                                                           current = D1 again (weak references)
///
/// `current` is the newest directory that is still alive. Control thread only (a lock guards it
/// anyway).
public final class TableGenerations: @unchecked Sendable {
    private struct Weak { weak var directory: ServiceDirectory? }
    private var directories: [Weak]
    private let lock = NSLock()

    init(_ first: ServiceDirectory) {
        directories = [Weak(directory: first)]
    }

    func publish(_ directory: ServiceDirectory) {
        lock.lock()
        defer { lock.unlock() }
        directories.removeAll { $0.directory == nil }
        directories.append(Weak(directory: directory))
    }

    /// The newest directory still alive (nil only when every runtime is gone).
    public var current: ServiceDirectory? {
        lock.lock()
        defer { lock.unlock() }
        return directories.last { $0.directory != nil }?.directory
    }
}

extension ServiceDirectory {
    /// The host of the backend that this directory's Maglev table picks for a new flow with
    /// `key` (what ownership-lookup does for a packet without an entry): nil when the flow's
    /// (VIP, protocol, port) is no service, or every weight of its service is 0.
    public func pickedHost(key: UnsafeMutablePointer<sy_flow_key>) -> UInt16? {
        let family = key.pointee.family
        let vip = withUnsafeBytes(of: key.pointee.dst) { IPAddress(family: family, at: $0.baseAddress!) }
        guard let service = servicesByTuple.find(vip, protocol: key.pointee.protocol,
                                                 port: UInt16(bigEndian: key.pointee.dst_port)),
              let backend = view.pick(service: Int(service), flowHash: FlowKeys.hash(key))
        else { return nil }
        return backends[Int(backend)].hostID
    }
}
