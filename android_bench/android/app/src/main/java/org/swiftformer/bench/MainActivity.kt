package org.swiftformer.bench

import android.app.Activity
import android.content.Context
import android.content.Intent
import android.graphics.Typeface
import android.os.Bundle
import android.util.Log
import android.view.WindowManager
import android.widget.Button
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView
import java.io.File
import java.util.Locale
import java.util.concurrent.Executors
import java.util.concurrent.atomic.AtomicBoolean

/** The settings of one benchmark run, from the intent extras (or the defaults). */
data class RunSettings(
    val models: List<String>?, // file names in the app's folder; null: every .tflite there
    val backends: List<Backend>,
    val threads: Int,
    val warmup: Int,
    val runs: Int,
    val nnapi: NnapiSettings,
    val runId: String?,
) {
    companion object {
        /**
         * Extras (adb shell am start -n org.swiftformer.bench/.MainActivity --es models
         * a.tflite,b.tflite --es backends xnnpack,gpu --ei runs 100 ...): models, backends
         * (default xnnpack,gpu,nnapi), threads (4), warmup (10, the first inference included),
         * runs (50), nnapi_allow_fp16 (false), nnapi_accelerator, run_id, autorun (false).
         */
        fun from(intent: Intent) = RunSettings(
            models = intent.getStringExtra("models")?.split(",")?.map { it.trim() }
                ?.filter { it.isNotEmpty() },
            backends = (intent.getStringExtra("backends") ?: "xnnpack,gpu,nnapi")
                .split(",").filter { it.isNotBlank() }.map { Backend.parse(it) },
            threads = intent.getIntExtra("threads", 4),
            warmup = intent.getIntExtra("warmup", 10),
            runs = intent.getIntExtra("runs", 50),
            nnapi = NnapiSettings(
                intent.getBooleanExtra("nnapi_allow_fp16", false),
                intent.getStringExtra("nnapi_accelerator")?.ifBlank { null }),
            runId = intent.getStringExtra("run_id"),
        )
    }
}

/**
 * The one benchmark of this process. It outlives the activity: a configuration change
 * (rotation, a resized window) recreates the activity, which then shows the same run instead
 * of starting a second one.
 */
object BenchmarkRun {
    private val executor = Executors.newSingleThreadExecutor()
    private val running = AtomicBoolean(false)
    private val log = StringBuffer()
    /** The current activity's views: the progress lines, and the end of the run. */
    @Volatile var listener: ((String) -> Unit)? = null
    @Volatile var finished: (() -> Unit)? = null
    @Volatile var table: String = ""

    val isRunning: Boolean get() = running.get()
    val text: String get() = log.toString()

    fun say(line: String) {
        Log.i(MainActivity.TAG, line)
        log.append(line).append('\n')
        listener?.invoke(line)
    }

    /** Starts `settings` unless a run is going on; returns whether it started. */
    fun start(context: Context, settings: RunSettings): Boolean {
        if (!running.compareAndSet(false, true)) return false
        log.setLength(0)
        val app = context.applicationContext
        val folder = checkNotNull(app.getExternalFilesDir(null))
        val marker = File(folder, MainActivity.MARKER_NAME)
        marker.delete()
        executor.execute {
            var report: File? = null
            var error: String? = null
            try {
                val cases = Benchmark(models(folder, settings.models), settings.backends,
                    settings.threads, settings.warmup, settings.runs, settings.nnapi).run(::say)
                report = ReportJson.write(ReportJson.build(app, cases, settingsJson(settings)),
                                          File(folder, MainActivity.JSON_NAME))
                table = format(cases)
                say("wrote ${report.absolutePath}")
            } catch (e: Throwable) {
                error = "${e.javaClass.simpleName}: ${e.message}"
                say("FAILED: $error")
            } finally {
                try {
                    ReportJson.writeMarker(marker, settings.runId, report, error)
                    Log.i(MainActivity.TAG, "SWIFTFORMER_BENCH_DONE ${marker.absolutePath}")
                } finally {
                    running.set(false)
                    finished?.invoke()
                }
            }
        }
        return true
    }

    private fun models(folder: File, names: List<String>?): List<File> {
        if (names == null) {
            return folder.listFiles { f -> f.name.endsWith(".tflite") }
                ?.sortedBy { it.name } ?: emptyList()
        }
        val files = names.map { File(folder, it) }
        val missing = files.filter { !it.isFile }.map { it.name }
        require(missing.isEmpty()) { "Not in ${folder.absolutePath}: ${missing.joinToString()}" }
        return files
    }

    private fun settingsJson(settings: RunSettings): Map<String, Any?> = linkedMapOf(
        "warmup_runs" to settings.warmup, "runs" to settings.runs,
        "threads" to settings.threads, "backends" to settings.backends.map { it.id },
        "models" to settings.models, "interleaved" to true,
        "nnapi_allow_fp16" to settings.nnapi.allowFp16,
        "nnapi_accelerator" to settings.nnapi.accelerator, "run_id" to settings.runId,
        "timed" to "Interpreter.run(); LiteRT's native inference duration",
        "coverage" to "the runtime's 'Replacing N out of M node(s)' lines in this app's logcat")

    private fun format(cases: List<Case>): String {
        val lines = mutableListOf(
            String.format(Locale.US, "%-34s %-7s %8s %8s %8s %8s", "model", "backend", "init",
                          "first", "mean", "median"))
        for (case in cases) {
            val error = case.error
            if (error != null || case.samples.isEmpty()) {
                lines.add("${case.model.name} ${case.backend.id}: ${error ?: "no runs"}")
                continue
            }
            val summary = latencySummary(case.samples)
            lines.add(String.format(
                Locale.US, "%-34s %-7s %8.1f %8.2f %8.2f %8.2f", case.model.name, case.backend.id,
                case.fields["init_ms"] as Double,
                (case.fields["first_ms"] as Double?) ?: Double.NaN,
                summary["mean_ms"] as Double, summary["median_ms"] as Double))
            case.coverage?.let { lines.add("    ${it.describe()}") }
        }
        return lines.joinToString("\n") + "\n(ms)"
    }
}

/**
 * Runs the .tflite files of the app's files folder
 * (/sdcard/Android/data/org.swiftformer.bench/files, where `adb push` can put them) on the
 * chosen backends, shows the numbers and writes swiftformer-bench-android.json there, then the
 * completion marker swiftformer-bench-android.done. Settings: see `RunSettings.from`.
 */
class MainActivity : Activity() {
    private lateinit var status: TextView
    private lateinit var table: TextView
    private lateinit var button: Button

    private val folder: File get() = checkNotNull(getExternalFilesDir(null))

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        status = TextView(this)
        table = TextView(this).apply {
            typeface = Typeface.MONOSPACE
            textSize = 10f
        }
        button = Button(this).apply {
            text = "Run benchmark"
            setOnClickListener { start() }
        }
        val layout = LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            setPadding(32, 32, 32, 32)
            addView(button)
            addView(status)
            addView(table)
        }
        setContentView(ScrollView(this).apply { addView(layout) })
        val found = folder.listFiles { f -> f.name.endsWith(".tflite") }?.map { it.name }
        status.text = "Models: push .tflite files to\n${folder.absolutePath}\n" +
            "Found: ${found?.sorted()?.joinToString().orEmpty().ifEmpty { "none" }}\n" +
            BenchmarkRun.text
        table.text = BenchmarkRun.table
        BenchmarkRun.listener = { line -> runOnUiThread { status.append(line + "\n") } }
        BenchmarkRun.finished = {
            runOnUiThread {
                table.text = BenchmarkRun.table
                showRunning(false)
            }
        }
        showRunning(BenchmarkRun.isRunning)
        // A recreated activity (savedInstanceState != null) must not start a second run.
        if (savedInstanceState == null && intent.getBooleanExtra("autorun", false)) start()
    }

    private fun start() {
        val settings = try {
            RunSettings.from(intent)
        } catch (e: IllegalArgumentException) {
            BenchmarkRun.say("FAILED: ${e.message}")
            ReportJson.writeMarker(File(folder, MARKER_NAME), intent.getStringExtra("run_id"),
                                   null, "IllegalArgumentException: ${e.message}")
            return
        }
        val started = BenchmarkRun.start(this, settings)
        if (started) showRunning(true) else BenchmarkRun.say("a benchmark is already running")
    }

    private fun showRunning(running: Boolean) {
        button.isEnabled = !running
        if (running) window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        else window.clearFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
    }

    override fun onDestroy() {
        BenchmarkRun.listener = null
        BenchmarkRun.finished = null
        super.onDestroy()
    }

    companion object {
        const val TAG = "SwiftFormerBench"
        const val JSON_NAME = "swiftformer-bench-android.json"
        const val MARKER_NAME = "swiftformer-bench-android.done"
    }
}
