package org.swiftformer.bench

import android.os.SystemClock
import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import kotlin.random.Random
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import org.tensorflow.lite.nnapi.NnApiDelegate

/** LiteRT backends, named as in the benchmark JSON schema (android_bench/schema.py). */
enum class Backend(val id: String) {
    CPU("cpu"), // built-in kernels, XNNPACK off
    XNNPACK("xnnpack"),
    GPU("gpu"),
    NNAPI("nnapi");

    companion object {
        fun parse(id: String): Backend =
            entries.firstOrNull { it.id == id.trim() }
                ?: throw IllegalArgumentException(
                    "Unknown backend '$id'; known: ${entries.joinToString { it.id }}")
    }
}

/** Resident memory of this process from /proc/self/status, as the host benchmark reads it. */
class MemoryProbe {
    private var baseKb = 0L
    private var sampledKb = 0L
    private var resettable = false

    private fun statusKb(key: String): Long =
        File("/proc/self/status").readLines().first { it.startsWith("$key:") }
            .split(Regex("\\s+"))[1].toLong()

    fun start() {
        resettable = try {
            File("/proc/self/clear_refs").writeText("5") // resets VmHWM
            true
        } catch (e: Exception) {
            false
        }
        baseKb = statusKb("VmRSS")
        sampledKb = baseKb
    }

    fun sampleMb(): Double {
        val rss = statusKb("VmRSS")
        sampledKb = maxOf(sampledKb, rss)
        return (rss - baseKb) / 1024.0
    }

    fun peakMb(): Double {
        sampleMb()
        val peak = if (resettable) statusKb("VmHWM") else sampledKb
        return (peak - baseKb) / 1024.0
    }

    val method: String
        get() = if (resettable) "VmHWM above VmRSS before loading (peak counter reset per model)"
        else "largest sampled VmRSS above VmRSS before loading"
}

/** NNAPI delegate options: fp16 relaxation of float32 models, and the NNAPI device to use. */
data class NnapiSettings(val allowFp16: Boolean = false, val accelerator: String? = null)

/** One model under one backend: loaded, warmed up, then invoked by the interleaved loop. */
class Case(
    val model: File,
    val backend: Backend,
    val threads: Int,
    private val nnapi: NnapiSettings = NnapiSettings(),
) {
    private var interpreter: Interpreter? = null
    private var gpuDelegate: GpuDelegate? = null
    private var nnapiDelegate: NnApiDelegate? = null
    private lateinit var input: ByteBuffer
    private lateinit var output: ByteBuffer
    val samples = ArrayList<Double>()
    val fields = LinkedHashMap<String, Any>()
    var error: String? = null
    /** What the backend's delegate took of the graph; null when the log could not be read. */
    var coverage: Coverage? = null

    val label: String get() = "${model.name} [${backend.id}, $threads thread(s)]"

    private fun mapModel(): MappedByteBuffer =
        FileInputStream(model).channel.use { it.map(FileChannel.MapMode.READ_ONLY, 0, it.size()) }

    private fun options(): Interpreter.Options {
        val options = Interpreter.Options().setNumThreads(threads)
        when (backend) {
            Backend.CPU -> options.setUseXNNPACK(false)
            Backend.XNNPACK -> options.setUseXNNPACK(true)
            Backend.NNAPI -> {
                val nnapiOptions = NnApiDelegate.Options().setAllowFp16(nnapi.allowFp16)
                nnapi.accelerator?.let { nnapiOptions.setAcceleratorName(it) }
                val delegate = NnApiDelegate(nnapiOptions)
                nnapiDelegate = delegate
                options.addDelegate(delegate)
            }
            Backend.GPU -> {
                val compatibility = CompatibilityList()
                try {
                    if (!compatibility.isDelegateSupportedOnThisDevice) {
                        throw IllegalStateException("the GPU delegate does not support this device")
                    }
                    val delegate = GpuDelegate(compatibility.bestOptionsForThisDevice)
                    gpuDelegate = delegate
                    options.addDelegate(delegate)
                } finally {
                    compatibility.close()
                }
            }
        }
        return options
    }

    /**
     * Loads the model (init), reads what the delegate took from this process's log, sets
     * random input and runs exactly `warmup` warm-up inferences, the first one included (as
     * benchmark_model's --warmup_runs).
     */
    fun load(warmup: Int, probe: MemoryProbe, random: Random, id: String) {
        probe.start()
        DelegateLog.mark(id)
        val start = SystemClock.elapsedRealtimeNanos()
        val interpreter = Interpreter(mapModel(), options())
        interpreter.allocateTensors()
        val initMs = (SystemClock.elapsedRealtimeNanos() - start) / 1e6
        this.interpreter = interpreter
        coverage = DelegateLog.linesSince(id)?.let { DelegateLog.coverage(it, backend) }
        val initMemory = probe.sampleMb()
        val inputTensor = interpreter.getInputTensor(0)
        input = ByteBuffer.allocateDirect(inputTensor.numBytes()).order(ByteOrder.nativeOrder())
        if (inputTensor.dataType() == DataType.FLOAT32) {
            while (input.hasRemaining()) input.putFloat(random.nextFloat() * 255f) // RGB pixels
        } else {
            while (input.hasRemaining()) input.put(random.nextInt(256).toByte())
        }
        output = ByteBuffer.allocateDirect(interpreter.getOutputTensor(0).numBytes())
            .order(ByteOrder.nativeOrder())
        val warm = List(warmup) { invokeMs() }
        fields["init_ms"] = initMs
        if (warm.isNotEmpty()) {
            fields["first_ms"] = warm[0]
            fields["warmup_mean_ms"] = warm.average()
        }
        fields["warmup_runs"] = warm.size
        fields["init_memory_mb"] = initMemory
        fields["peak_memory_mb"] = probe.peakMb()
        fields["memory_method"] = probe.method
        fields["model_size_mb"] = model.length() / 1048576.0
    }

    /**
     * One inference. The time is LiteRT's own measure of the native invoke (what
     * benchmark_model and the host benchmark time), without the Java input/output copies;
     * the wall time of run() only when the runtime does not report it.
     */
    fun invokeMs(): Double {
        val interpreter = checkNotNull(interpreter)
        input.rewind()
        output.rewind()
        val start = SystemClock.elapsedRealtimeNanos()
        interpreter.run(input, output)
        val wall = SystemClock.elapsedRealtimeNanos() - start
        val native = interpreter.lastNativeInferenceDurationNanoseconds
        return (if (native != null && native > 0) native else wall) / 1e6
    }

    fun close() {
        interpreter?.close()
        gpuDelegate?.close()
        nnapiDelegate?.close()
        interpreter = null
        gpuDelegate = null
        nnapiDelegate = null
    }
}

/** Statistics the schema asks for, computed as numpy does on the host (linear percentiles). */
fun latencySummary(samples: List<Double>): Map<String, Any> {
    val sorted = samples.sorted()
    fun percentile(q: Double): Double {
        val position = q * (sorted.size - 1)
        val low = position.toInt()
        val high = minOf(low + 1, sorted.size - 1)
        return sorted[low] + (sorted[high] - sorted[low]) * (position - low)
    }
    val mean = samples.average()
    val std = Math.sqrt(samples.sumOf { (it - mean) * (it - mean) } / samples.size)
    return linkedMapOf(
        "mean_ms" to mean, "median_ms" to percentile(0.5), "p90_ms" to percentile(0.9),
        "min_ms" to sorted.first(), "max_ms" to sorted.last(), "std_ms" to std,
        "runs" to samples.size)
}

/**
 * Benchmarks every model x backend, interleaved as on the host: all cases are loaded and warmed
 * up, then `runs` rounds invoke each case once in a fresh random order, so that a slow spell
 * (thermal throttling, a background task) hits every case alike.
 */
class Benchmark(
    private val models: List<File>,
    private val backends: List<Backend>,
    private val threads: Int,
    private val warmup: Int,
    private val runs: Int,
    private val nnapi: NnapiSettings = NnapiSettings(),
    private val seed: Int = 0,
) {
    fun run(progress: (String) -> Unit): List<Case> {
        require(models.isNotEmpty()) { "No .tflite models found" }
        require(warmup >= 0 && runs >= 1) { "Need warmup >= 0 and runs >= 1" }
        val random = Random(seed)
        val probe = MemoryProbe()
        val cases = backends.flatMap { b -> models.map { Case(it, b, threads, nnapi) } }
        cases.forEachIndexed { i, case ->
            progress("[${i + 1}/${cases.size}] loading ${case.label}")
            try {
                val id = "case-${i + 1}-${SystemClock.elapsedRealtimeNanos()}"
                case.load(warmup, probe, random, id)
                case.coverage?.let { progress("    ${it.describe()}") }
            } catch (e: Throwable) { // an unsupported delegate must not stop the others
                case.error = "${e.javaClass.simpleName}: ${e.message}"
                case.close()
                progress("    FAILED: ${case.error}")
            }
        }
        val live = cases.filter { it.error == null }
        progress("timing ${live.size} cases x $runs runs, interleaved")
        repeat(runs) {
            for (case in live.shuffled(random)) {
                if (case.error != null) continue
                try {
                    case.samples.add(case.invokeMs())
                } catch (e: Throwable) {
                    case.error = "${e.javaClass.simpleName}: ${e.message}"
                }
            }
        }
        cases.forEach { it.close() }
        return cases
    }
}
