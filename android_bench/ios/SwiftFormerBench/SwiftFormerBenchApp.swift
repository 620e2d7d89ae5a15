import CoreML
import SwiftUI
import UIKit

@main
struct SwiftFormerBenchApp: App {
    var body: some Scene {
        WindowGroup { ContentView() }
    }
}

/// Finds the models in Documents, runs the benchmark off the main thread, keeps the results.
@MainActor
final class BenchmarkRunner: ObservableObject {
    @Published var models: [URL] = []
    @Published var results: [BenchResult] = []
    @Published var log = ""
    @Published var running = false
    @Published var reportURL: URL?
    @Published var warmup = 10
    @Published var runs = 50
    @Published var selected: Set<String> = ["cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all"]

    let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]

    /// Models copied into Documents (.mlpackage or .mlmodelc) and models built into the app
    /// (.mlpackage files in SwiftFormerBench/Models, compiled by Xcode to .mlmodelc).
    func refresh() {
        let files = (try? FileManager.default.contentsOfDirectory(
            at: documents, includingPropertiesForKeys: nil)) ?? []
        let bundled = Bundle.main.urls(forResourcesWithExtension: "mlmodelc", subdirectory: nil)
        models = (files.filter { ["mlpackage", "mlmodelc"].contains($0.pathExtension) }
                  + (bundled ?? []))
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    func start() {
        refresh()
        let models = self.models
        let units = computeUnitChoices.filter { selected.contains($0.name) }
        let warmup = self.warmup, runs = self.runs
        let device = Self.device()
        let destination = documents.appendingPathComponent("swiftformer-bench-ios.json")
        running = true
        log = ""
        Task.detached(priority: .userInitiated) {
            let say: (String) -> Void = { line in Task { @MainActor in self.log += line + "\n" } }
            do {
                let results = try await runBenchmark(models: models, computeUnits: units,
                                                     warmup: warmup, runs: runs, progress: say)
                let report = Report(
                    created: utcNow(), device: device,
                    runtime: Runtime(version: device.os),
                    settings: Settings(warmupRuns: warmup, runs: runs,
                                       computeUnits: units.map { $0.name }),
                    results: results)
                try report.write(to: destination)
                say("wrote \(destination.lastPathComponent)")
                await MainActor.run {
                    self.results = results
                    self.reportURL = destination
                    self.running = false
                }
            } catch {
                say("FAILED: \(error.localizedDescription)")
                await MainActor.run { self.running = false }
            }
        }
    }

    static func device() -> Device {
        var system = utsname()
        uname(&system)
        let machine = withUnsafeBytes(of: &system.machine) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let info = ProcessInfo.processInfo
        return Device(
            name: "Apple \(machine)",
            os: "\(UIDevice.current.systemName) \(UIDevice.current.systemVersion)",
            abi: "arm64", cores: info.processorCount,
            memoryGb: (Double(info.physicalMemory) / 1_073_741_824 * 10).rounded() / 10)
    }
}

struct ContentView: View {
    @StateObject private var runner = BenchmarkRunner()

    var body: some View {
        NavigationStack {
            List {
                Section("Settings") {
                    Stepper("Warm-up runs: \(runner.warmup)", value: $runner.warmup, in: 0...200)
                    Stepper("Timed runs: \(runner.runs)", value: $runner.runs, in: 1...2000,
                            step: 10)
                    ForEach(computeUnitChoices, id: \.name) { choice in
                        Toggle(choice.name, isOn: Binding(
                            get: { runner.selected.contains(choice.name) },
                            set: { on in
                                if on { runner.selected.insert(choice.name) }
                                else { runner.selected.remove(choice.name) }
                            }))
                    }
                }
                Section("Models (built in, or copied to Documents)") {
                    if runner.models.isEmpty { Text("none yet").foregroundStyle(.secondary) }
                    ForEach(runner.models, id: \.self) { Text($0.lastPathComponent) }
                }
                Section("Results (ms)") {
                    ForEach(runner.results) { result in
                        VStack(alignment: .leading) {
                            Text("\(result.model) · \(result.backend)").font(.headline)
                            if let mean = result.meanMs, let median = result.medianMs,
                               let initMs = result.initMs {
                                Text(String(format: "init %.1f  mean %.2f  median %.2f  (%@)",
                                            initMs, mean, median, result.outputs ?? "?"))
                                    .font(.caption.monospaced())
                                if let plan = result.computePlan {
                                    Text("Neural Engine \(plan.neuralEngine), GPU \(plan.gpu), "
                                         + "CPU \(plan.cpu) of \(plan.operations) ops")
                                        .font(.caption)
                                }
                            } else {
                                Text(result.error ?? "failed").foregroundStyle(.red)
                            }
                        }
                    }
                }
                Section("Log") { Text(runner.log).font(.caption.monospaced()) }
            }
            .navigationTitle("SwiftFormer bench")
            .toolbar {
                if let url = runner.reportURL { ShareLink(item: url) }
                Button(runner.running ? "Running…" : "Run") { runner.start() }
                    .disabled(runner.running)
            }
            .onAppear { runner.refresh() }
        }
    }
}
