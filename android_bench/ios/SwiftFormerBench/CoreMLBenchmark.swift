import CoreML
import CoreVideo
import Foundation

/// Compute units, named in the JSON as Core ML names them.
/// All four are selected by default: `cpuAndNeuralEngine` shows the Neural Engine's number
/// without the GPU, `all` lets Core ML choose.
let computeUnitChoices: [(name: String, units: MLComputeUnits)] = [
    ("cpuOnly", .cpuOnly), ("cpuAndGPU", .cpuAndGPU), ("cpuAndNeuralEngine", .cpuAndNeuralEngine),
    ("all", .all),
]

struct BenchError: LocalizedError {
    let message: String
    init(_ message: String) { self.message = message }
    var errorDescription: String? { message }
}

/// Memory the system charges to this app (`phys_footprint`, what Xcode's gauge shows), MB.
func physFootprintMB() -> Double? {
    var info = task_vm_info_data_t()
    var count = mach_msg_type_number_t(
        MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<integer_t>.size)
    let status = withUnsafeMutablePointer(to: &info) {
        $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
            task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
        }
    }
    return status == KERN_SUCCESS ? Double(info.phys_footprint) / 1_048_576 : nil
}

/// Largest sampled footprint above the footprint before a model was loaded.
struct MemoryProbe {
    var base = 0.0
    var peak = 0.0
    static let method = "largest sampled phys_footprint above the value before loading"

    mutating func start() {
        base = physFootprintMB() ?? 0
        peak = base
    }

    @discardableResult
    mutating func sample() -> Double? {
        guard let now = physFootprintMB() else { return nil }
        peak = max(peak, now)
        return now - base
    }

    mutating func peakAbove() -> Double? { sample().map { _ in peak - base } }
}

/// A seeded generator (SplitMix64), so the interleaved order can be repeated.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func randomPixelBuffer(width: Int, height: Int, format: OSType) throws -> CVPixelBuffer {
    var buffer: CVPixelBuffer?
    let attributes = [kCVPixelBufferIOSurfacePropertiesKey as String: [String: Any]()]
    let status = CVPixelBufferCreate(kCFAllocatorDefault, width, height, format,
                                     attributes as CFDictionary, &buffer)
    guard status == kCVReturnSuccess, let buffer else {
        throw BenchError("CVPixelBufferCreate failed (\(status))")
    }
    CVPixelBufferLockBaseAddress(buffer, [])
    defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
    if let base = CVPixelBufferGetBaseAddress(buffer) {
        let count = CVPixelBufferGetBytesPerRow(buffer) * height
        let bytes = base.bindMemory(to: UInt8.self, capacity: count)
        for i in 0..<count { bytes[i] = UInt8.random(in: 0...255) }
    }
    return buffer
}

/// Random data for every input: an image (the SwiftFormer export's `image`) or a float array.
func randomInput(for description: MLModelDescription) throws -> MLFeatureProvider {
    var features: [String: Any] = [:]
    for (name, input) in description.inputDescriptionsByName {
        switch input.type {
        case .image:
            guard let c = input.imageConstraint else { throw BenchError("\(name): no size") }
            features[name] = MLFeatureValue(pixelBuffer: try randomPixelBuffer(
                width: c.pixelsWide, height: c.pixelsHigh, format: c.pixelFormatType))
        case .multiArray:
            guard let c = input.multiArrayConstraint else { throw BenchError("\(name): no shape") }
            let array = try MLMultiArray(shape: c.shape, dataType: c.dataType)
            for i in 0..<array.count { array[i] = NSNumber(value: Float.random(in: 0...255)) }
            features[name] = MLFeatureValue(multiArray: array)
        default:
            throw BenchError("input \(name): type \(input.type.rawValue) is not supported")
        }
    }
    return try MLDictionaryFeatureProvider(dictionary: features)
}

func sizeMB(of url: URL) -> Double {
    var bytes = 0
    if let files = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey]) {
        for case let file as URL in files {
            bytes += (try? file.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0
        }
    } else {
        bytes = (try? url.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0
    }
    return Double(bytes) / 1_048_576
}

func nowMs() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }

/// One model under one compute-unit setting.
final class BenchCase {
    let source: URL
    let compiled: URL
    let backend: String
    let units: MLComputeUnits
    var model: MLModel?
    var input: MLFeatureProvider?
    var samples: [Double] = []
    var result: BenchResult

    var name: String { source.lastPathComponent }

    init(source: URL, compiled: URL, backend: String, units: MLComputeUnits) {
        self.source = source
        self.compiled = compiled
        self.backend = backend
        self.units = units
        result = BenchResult(model: source.lastPathComponent, backend: backend)
    }

    /// Loads the model (init: Core ML's load, including its device-specific compilation),
    /// makes the input and runs exactly `warmup` warm-up predictions, the first included
    /// (as benchmark_model's --warmup_runs). On iOS 17.4+ it also reads the compute plan
    /// (not timed): which device each operation is planned on.
    func load(warmup: Int, probe: inout MemoryProbe) async throws {
        probe.start()
        let configuration = MLModelConfiguration()
        configuration.computeUnits = units
        let start = nowMs()
        let model = try MLModel(contentsOf: compiled, configuration: configuration)
        result.initMs = nowMs() - start
        result.initMemoryMb = probe.sample()
        self.model = model
        // A classifier package returns Core ML's label -> probability dictionary, built on
        // every prediction; a logits package (classifier=False) returns one array.
        result.outputs = model.modelDescription.predictedFeatureName == nil
            ? "logits" : "classifier"
        input = try randomInput(for: model.modelDescription)
        let warm = try (0..<warmup).map { _ in try predictMs() }
        result.firstMs = warm.first
        result.warmupMeanMs = warm.isEmpty ? nil : warm.reduce(0, +) / Double(warm.count)
        result.warmupRuns = warm.count
        result.peakMemoryMb = probe.peakAbove()
        result.memoryMethod = MemoryProbe.method
        result.modelSizeMb = sizeMB(of: source)
        if #available(iOS 17.4, *) {  // after the memory probe: the plan is not the model's
            result.computePlan = try? await computePlanSummary(
                of: compiled, configuration: configuration)
        }
    }

    func predictMs() throws -> Double {
        guard let model, let input else { throw BenchError("not loaded") }
        let start = nowMs()
        _ = try model.prediction(from: input)
        return nowMs() - start
    }

    func finish() -> BenchResult {
        model = nil
        if result.error == nil && !samples.isEmpty {
            summarize(samples, into: &result)
        } else {
            result.status = "failed"
            result.error = result.error ?? "no timed prediction ran"
        }
        return result
    }
}

/// Benchmarks every model x compute-unit setting, interleaved as on the host: every case is
/// loaded and warmed up, then `runs` rounds run each case once in a fresh random order.
func runBenchmark(models: [URL], computeUnits: [(name: String, units: MLComputeUnits)],
                  warmup: Int, runs: Int, seed: UInt64 = 0,
                  progress: @escaping (String) -> Void) async throws -> [BenchResult] {
    guard !models.isEmpty else { throw BenchError("No .mlpackage or .mlmodelc in Documents") }
    var cases: [BenchCase] = []
    for url in models {
        var compiled = url
        if url.pathExtension != "mlmodelc" {
            progress("compiling \(url.lastPathComponent)")
            compiled = try await MLModel.compileModel(at: url)
        }
        for choice in computeUnits {
            cases.append(BenchCase(source: url, compiled: compiled, backend: choice.name,
                                   units: choice.units))
        }
    }
    var probe = MemoryProbe()
    for (i, benchCase) in cases.enumerated() {
        progress("[\(i + 1)/\(cases.count)] loading \(benchCase.name) [\(benchCase.backend)]")
        do {
            try await benchCase.load(warmup: warmup, probe: &probe)
            if let plan = benchCase.result.computePlan {
                progress("    Neural Engine: \(plan.neuralEngine) of \(plan.operations) ops")
            }
        } catch {
            benchCase.result.error = error.localizedDescription
            benchCase.model = nil
            progress("    FAILED: \(error.localizedDescription)")
        }
    }
    var generator = SeededGenerator(state: seed)
    progress("timing \(cases.count) cases x \(runs) runs, interleaved")
    for _ in 0..<runs {
        for benchCase in cases.shuffled(using: &generator) where benchCase.result.error == nil {
            do {
                benchCase.samples.append(try benchCase.predictMs())
            } catch {
                benchCase.result.error = error.localizedDescription
            }
        }
    }
    return cases.map { $0.finish() }
}
