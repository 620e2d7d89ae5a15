import CoreML

/// Where Core ML plans to run a loaded model: the operations of its main function (constants
/// left out) per preferred compute device, and each device's estimated share of the work.
/// Written as the result's `compute_plan` (android_bench/schema.py, COMPUTE_PLAN_FIELDS).
struct ComputePlanSummary: Codable {
    var operations = 0
    var neuralEngine = 0
    var gpu = 0
    var cpu = 0
    var neuralEngineCost = 0.0
    var gpuCost = 0.0
    var cpuCost = 0.0
}

/// The compute plan of the compiled model at `url` under `configuration` (its compute
/// units), from `MLComputePlan` (iOS 17.4+); nil for a model that is not an ML program.
@available(iOS 17.4, *)
func computePlanSummary(of url: URL, configuration: MLModelConfiguration) async throws
    -> ComputePlanSummary?
{
    let plan = try await MLComputePlan.load(contentsOf: url, configuration: configuration)
    guard case let .program(program) = plan.modelStructure,
          let main = program.functions["main"]
    else { return nil }
    var summary = ComputePlanSummary()

    func visit(_ block: MLModelStructure.Program.Block) {
        for operation in block.operations {
            operation.blocks.forEach(visit)
            // Constants have no device usage: they are weights, not work.
            guard operation.operatorName != "const",
                  let usage = plan.deviceUsage(for: operation)
            else { continue }
            let cost = plan.estimatedCost(of: operation)?.weight ?? 0
            summary.operations += 1
            switch usage.preferred {
            case .neuralEngine:
                summary.neuralEngine += 1
                summary.neuralEngineCost += cost
            case .gpu:
                summary.gpu += 1
                summary.gpuCost += cost
            case .cpu:
                summary.cpu += 1
                summary.cpuCost += cost
            @unknown default:
                break
            }
        }
    }
    visit(main.block)
    return summary
}
