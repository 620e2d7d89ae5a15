package org.swiftformer.bench

import android.app.Activity
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

/**
 * Runs every .tflite file found in the app's files folder
 * (/sdcard/Android/data/org.swiftformer.bench/files, where `adb push` can put them) on the
 * chosen backends, shows the numbers and writes swiftformer-bench-android.json there.
 *
 * Intent extras (adb shell am start ... --es backends xnnpack,gpu --ei runs 100):
 * backends (default xnnpack,gpu,nnapi), threads (4), warmup (10), runs (50), autorun (false).
 */
class MainActivity : Activity() {
    private val executor = Executors.newSingleThreadExecutor()
    private lateinit var status: TextView
    private lateinit var table: TextView
    private lateinit var button: Button

    private val folder: File get() = checkNotNull(getExternalFilesDir(null))

    private fun models(): List<File> =
        folder.listFiles { f -> f.name.endsWith(".tflite") }?.sortedBy { it.name } ?: emptyList()

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
        status.text = "Models: push .tflite files to\n${folder.absolutePath}\n" +
            "Found: ${models().joinToString { it.name }.ifEmpty { "none" }}\n"
        if (intent.getBooleanExtra("autorun", false)) start()
    }

    private fun report(line: String) {
        Log.i(TAG, line)
        runOnUiThread { status.append(line + "\n") }
    }

    private fun start() {
        val backends = try {
            (intent.getStringExtra("backends") ?: "xnnpack,gpu,nnapi")
                .split(",").filter { it.isNotBlank() }.map { Backend.parse(it) }
        } catch (e: IllegalArgumentException) {
            report("FAILED: ${e.message}")
            return
        }
        val threads = intent.getIntExtra("threads", 4)
        val warmup = intent.getIntExtra("warmup", 10)
        val runs = intent.getIntExtra("runs", 50)
        button.isEnabled = false
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        executor.execute {
            try {
                val cases = Benchmark(models(), backends, threads, warmup, runs).run(::report)
                val settings = mapOf(
                    "warmup_runs" to warmup, "runs" to runs, "threads" to threads,
                    "backends" to backends.map { it.id }, "interleaved" to true,
                    "timed" to "Interpreter.run(); LiteRT's native inference duration")
                val file = ReportJson.write(ReportJson.build(this, cases, settings),
                                            File(folder, JSON_NAME))
                val text = format(cases)
                runOnUiThread { table.text = text }
                report("wrote ${file.absolutePath}")
                Log.i(TAG, "SWIFTFORMER_BENCH_DONE ${file.absolutePath}")
            } catch (e: Throwable) {
                report("FAILED: ${e.javaClass.simpleName}: ${e.message}")
                Log.i(TAG, "SWIFTFORMER_BENCH_FAILED")
            } finally {
                runOnUiThread {
                    button.isEnabled = true
                    window.clearFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
                }
            }
        }
    }

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
                case.fields["init_ms"] as Double, case.fields["first_ms"] as Double,
                summary["mean_ms"] as Double, summary["median_ms"] as Double))
        }
        return lines.joinToString("\n") + "\n(ms)"
    }

    override fun onDestroy() {
        executor.shutdown()
        super.onDestroy()
    }

    companion object {
        const val TAG = "SwiftFormerBench"
        const val JSON_NAME = "swiftformer-bench-android.json"
    }
}
