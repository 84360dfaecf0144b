import CDPDK
import Foundation

/// A pcapng file being written by the control thread.
///
///     rte_pcapng_fdopen ─► Section Header Block + one Interface Description Block per DPDK port
///     write(copies)     ─► one Enhanced Packet Block per copy, with an opt_comment (written here)
///     close             ─► Interface Statistics Block (rx/tx captures), then rte_pcapng_close
///
/// DPDK 22.11's rte_pcapng_copy has no comment parameter (it came in 23.11) and builds the whole
/// block inside the copy, so the Enhanced Packet Blocks are written here, to the same file
/// descriptor, with the interface numbering and nanosecond timestamps rte_pcapng declared.
final class CaptureFile {
    let path: String
    private var handle: OpaquePointer?
    private let fd: Int32
    private var buffer: [UInt8] = []
    /// TSC and wall clock (ns since 1970) at the same instant, to convert copy timestamps.
    private let tscOrigin: UInt64
    private let nsOrigin: UInt64
    private let tscHz: UInt64

    init(path: String, comment: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CaptureError("cannot create \(path): \(String(cString: strerror(errno)))") }
        var name = utsname()
        uname(&name)
        let os = withUnsafeBytes(of: name.sysname) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            + " " + withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard let handle = sy_pcapng_fdopen(fd, os, nil, "switchyard (\(String(cString: sy_version())))", comment) else {
            let message = String(cString: sy_strerror(sy_errno()))
            Foundation.close(fd)
            throw CaptureError("cannot start the pcapng file \(path): \(message)")
        }
        self.handle = handle
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        tscOrigin = sy_rdtsc()
        nsOrigin = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
        tscHz = max(sy_tsc_hz(), 1)
    }

    deinit { close(stats: nil) }

    /// Appends one Enhanced Packet Block per copy (the copies stay the caller's to free).
    func write(_ copies: ArraySlice<OpaquePointer>, comment: (sy_capture_meta) -> String) throws {
        buffer.removeAll(keepingCapacity: true)
        for copy in copies {
            let meta = sy_capture_meta_of(copy).pointee
            appendBlock(copy, meta: meta, comment: comment(meta))
        }
        try flush()
    }

    /// pcapng Enhanced Packet Block (type 6): interface, timestamp, lengths, data, options.
    private func appendBlock(_ copy: OpaquePointer, meta: sy_capture_meta, comment: String) {
        let captured = Int(sy_mbuf_pkt_len(copy))
        let commentBytes = Array(comment.utf8.prefix(0xfff0))
        let flags: UInt32 = meta.kind == UInt8(SY_CAPTURE_RX) ? 1 : meta.kind == UInt8(SY_CAPTURE_TX) ? 2 : 0
        let optionsLength = 4 + padded(commentBytes.count) + (flags != 0 ? 8 : 0) + 4
        let total = 28 + padded(captured) + optionsLength + 4
        let interface = sy_capture_interface_index(meta.port)
        let ns = timestamp(meta.tsc)
        append32(6)
        append32(UInt32(total))
        append32(UInt32(max(interface, 0)))
        append32(UInt32(truncatingIfNeeded: ns >> 32))
        append32(UInt32(truncatingIfNeeded: ns))
        append32(UInt32(captured))
        append32(meta.orig_len)
        var segment: OpaquePointer? = copy
        while let current = segment {
            buffer.append(contentsOf: UnsafeBufferPointer(start: sy_mbuf_data(current), count: Int(sy_mbuf_data_len(current))))
            segment = sy_mbuf_next(current)
        }
        pad(captured)
        append16(1) // opt_comment
        append16(UInt16(commentBytes.count))
        buffer.append(contentsOf: commentBytes)
        pad(commentBytes.count)
        if flags != 0 {
            append16(2) // epb_flags: inbound 1, outbound 2
            append16(4)
            append32(flags)
        }
        append32(0) // opt_endofopt
        append32(UInt32(total))
    }

    private func timestamp(_ tsc: UInt64) -> UInt64 {
        let delta = tsc > tscOrigin ? tsc - tscOrigin : 0
        return nsOrigin + delta / tscHz * 1_000_000_000 + delta % tscHz * 1_000_000_000 / tscHz
    }

    private func padded(_ n: Int) -> Int { (n + 3) & ~3 }
    private func pad(_ n: Int) { buffer.append(contentsOf: repeatElement(0, count: padded(n) - n)) }
    private func append16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { buffer.append(contentsOf: $0) } }
    private func append32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { buffer.append(contentsOf: $0) } }

    private func flush() throws {
        var offset = 0
        while offset < buffer.count {
            let n = buffer.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw CaptureError("cannot write \(path): \(String(cString: strerror(errno)))") }
            offset += n
        }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Writes an Interface Statistics Block for `stats.port` (copies made and lost), then closes.
    func close(stats: (port: UInt16, received: UInt64, dropped: UInt64, comment: String)?) {
        guard let handle else { return }
        if let stats {
            _ = sy_pcapng_write_stats(handle, stats.port, stats.comment, 0, 0, stats.received, stats.dropped)
        }
        sy_pcapng_close(handle) // closes fd
        self.handle = nil
    }
}
