import Foundation

/// The benchmark JSON of android_bench/schema.py ("swiftformer-bench/1", source "ios-app").
/// Keys are written in snake_case (`initMs` -> `init_ms`); nil fields are left out. Variant and
/// format are left out too: the report tool reads them from the model file names.
struct Report: Codable {
    var schema = "swiftformer-bench/1"
    var source = "ios-app"
    var created: String
    var device: Device
    var runtime: Runtime
    var settings: Settings
    var results: [BenchResult]

    func write(to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: url, options: .atomic)
    }
}

struct Device: Codable {
    var name: String
    var os: String
    var abi: String?
    var cores: Int?
    var memoryGb: Double?
}

struct Runtime: Codable {
    var name = "Core ML"
    var version: String?
}

struct Settings: Codable {
    var warmupRuns: Int
    var runs: Int
    var computeUnits: [String]
    var interleaved = true
    var timed = "MLModel.prediction(from:) with one random input made before timing"
    var computePlanSource = "MLComputePlan of each model x compute units (iOS 17.4+)"
}

struct BenchResult: Codable, Identifiable {
    var id: String { "\(model) \(backend)" }
    var model: String
    var backend: String
    var status = "ok"
    var initMs: Double?
    var firstMs: Double?
    var warmupMeanMs: Double?
    var warmupRuns: Int?
    var meanMs: Double?
    var medianMs: Double?
    var p90Ms: Double?
    var minMs: Double?
    var maxMs: Double?
    var stdMs: Double?
    var runs: Int?
    var initMemoryMb: Double?
    var peakMemoryMb: Double?
    var memoryMethod: String?
    var modelSizeMb: Double?
    var samplesMs: [Double]?
    var outputs: String?
    var computePlan: ComputePlanSummary?
    var error: String?

    enum CodingKeys: String, CodingKey {
        case model, backend, status, initMs, firstMs, warmupMeanMs, warmupRuns, meanMs,
             medianMs, p90Ms, minMs, maxMs, stdMs, runs, initMemoryMb, peakMemoryMb,
             memoryMethod, modelSizeMb, samplesMs, outputs, computePlan, error
    }
}

/// Mean, median, p90 (linear interpolation, as numpy on the host), min, max, population std.
func summarize(_ samples: [Double], into result: inout BenchResult) {
    let sorted = samples.sorted()
    func percentile(_ q: Double) -> Double {
        let position = q * Double(sorted.count - 1)
        let low = Int(position)
        let high = min(low + 1, sorted.count - 1)
        return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
    }
    let mean = samples.reduce(0, +) / Double(samples.count)
    let variance = samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(samples.count)
    result.meanMs = mean
    result.medianMs = percentile(0.5)
    result.p90Ms = percentile(0.9)
    result.minMs = sorted.first
    result.maxMs = sorted.last
    result.stdMs = variance.squareRoot()
    result.runs = samples.count
    result.samplesMs = samples.map { ($0 * 1e4).rounded() / 1e4 }
}

func utcNow() -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: Date())
}
