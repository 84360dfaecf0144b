/// Memory written at every burst (counters, status words, scratch arrays, edge buffers) on cache
/// lines of its own. Two lcores, or an lcore and the control thread, that write to one line make it
/// bounce between their cores on every write; ordinary allocations of a few bytes lie side by side.
public enum CacheLines {
    public static let size = 64

    /// `count` values of `T`, all set to `value`, starting on a line and padded to whole lines.
    /// Free with `deallocate()` on the pointer, as any allocation.
    public static func allocate<T>(_ type: T.Type, count: Int, initializedTo value: T) -> UnsafeMutablePointer<T> {
        let bytes = byteCount(T.self, count)
        return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: size)
            .initializeMemory(as: T.self, repeating: value, count: bytes / MemoryLayout<T>.stride)
    }

    /// Room for `count` values of `T`, not initialized (initialize each before use), on whole lines.
    public static func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        UnsafeMutableRawPointer.allocate(byteCount: byteCount(T.self, count), alignment: size)
            .bindMemory(to: T.self, capacity: count)
    }

    /// `count` values of `T` (at least one) rounded up to whole lines.
    static func byteCount<T>(_ type: T.Type, _ count: Int) -> Int {
        (max(count, 1) * MemoryLayout<T>.stride + size - 1) / size * size
    }
}
