import Foundation
import Prometheus
import SwitchyardCore
import SwitchyardEngine

/// Renders the engine's counter registry in Prometheus's text exposition format (version 0.0.4).
///
///     CounterRegistry.samples() ──► counters:   swift-prometheus Counter, incremented by the delta
///                                 │             since the last scrape (reset when a value went down)
///                                 ├─► gauges:     swift-prometheus Gauge, set
///                                 └─► histograms: rendered here ──► text after swift-prometheus's
///
/// swift-prometheus's counters only grow and its histograms only take observations one by one,
/// while the registry holds absolute values and bucket counts: counters mirror the absolute values
/// by deltas, and the one histogram (`switchyard_gossip_propagation_seconds`) is written here,
/// cumulative buckets with `le`, `_sum` and `_count`, one HELP and TYPE line as for the others.
///
/// Two samples with the same name and labels (none by construction: blocks have one identity) are
/// summed. A family keeps the kind and help of its first sample. One scrape at a time (a lock).
public final class PrometheusExporter: @unchecked Sendable {
    private let source: () -> [MetricSample]
    private let prometheus = PrometheusCollectorRegistry()
    private let lock = NSLock()
    /// Kind and help of each family seen, as first registered.
    private var families: [String: (kind: CounterKind, help: String)] = [:]
    private var counters: [String: (counter: Counter, last: UInt64)] = [:]
    private var gauges: [String: Gauge] = [:]

    public init(samples: @escaping () -> [MetricSample]) {
        source = samples
    }

    public convenience init(registry: CounterRegistry) {
        self.init(samples: { registry.samples() })
    }

    /// One scrape: the whole text, every family with one HELP and one TYPE line.
    public func render() -> [UInt8] {
        lock.withLock {
            var histograms: [(family: String, help: String, samples: [MetricSample])] = []
            var merged: [String: (sample: MetricSample, value: Double)] = [:]
            var order: [String] = []
            for sample in source() {
                if sample.kind == .histogram {
                    if let index = histograms.firstIndex(where: { $0.family == sample.family }) {
                        histograms[index].samples.append(sample)
                    } else if families[sample.family] == nil || families[sample.family]?.kind == .histogram {
                        families[sample.family] = (.histogram, sample.help)
                        histograms.append((sample.family, sample.help, [sample]))
                    }
                    continue
                }
                let key = Self.seriesKey(sample.name, sample.labels)
                if let existing = merged[key] {
                    merged[key]!.value = existing.value + sample.value
                } else {
                    merged[key] = (sample, sample.value)
                    order.append(key)
                }
            }
            for key in order {
                guard let (sample, value) = merged[key] else { continue }
                let family = families[sample.name] ?? (sample.kind, sample.help)
                guard family.kind == sample.kind else { continue } // a name taken by another kind
                families[sample.name] = family
                switch sample.kind {
                case .counter:
                    let now = UInt64(max(value, 0))
                    var entry = counters[key]
                        ?? (prometheus.makeCounter(name: sample.name, labels: sample.labels, help: family.help), 0)
                    if now < entry.last {
                        entry.counter.reset()
                        entry.last = 0
                    }
                    if now > entry.last { entry.counter.increment(by: Int64(clamping: now - entry.last)) }
                    entry.last = now
                    counters[key] = entry
                case .gauge:
                    let gauge = gauges[key]
                        ?? prometheus.makeGauge(name: sample.name, labels: sample.labels, help: family.help)
                    gauge.set(to: value)
                    gauges[key] = gauge
                case .histogram:
                    break
                }
            }
            var text: [UInt8] = []
            text.reserveCapacity(64 * 1024)
            prometheus.emit(into: &text)
            for histogram in histograms {
                text.append(contentsOf: "# HELP \(histogram.family) \(Self.escapeHelp(histogram.help))\n".utf8)
                text.append(contentsOf: "# TYPE \(histogram.family) histogram\n".utf8)
                for sample in histogram.samples {
                    text.append(contentsOf: Self.line(sample.name, sample.labels, sample.value).utf8)
                }
            }
            return text
        }
    }

    /// `name{a="1",b="2"}`: the identity of one series.
    static func seriesKey(_ name: String, _ labels: [(String, String)]) -> String {
        labels.isEmpty ? name : name + "{" + labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
    }

    static func line(_ name: String, _ labels: [(String, String)], _ value: Double) -> String {
        seriesKey(name, labels) + " " + format(value) + "\n"
    }

    /// Whole numbers without a fraction (bucket counts), others as Swift prints a Double.
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    static func escapeLabel(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    static func escapeHelp(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }
}
