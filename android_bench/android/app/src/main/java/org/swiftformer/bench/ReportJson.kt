package org.swiftformer.bench

import android.app.ActivityManager
import android.content.Context
import android.os.Build
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone
import org.json.JSONArray
import org.json.JSONObject
import org.tensorflow.lite.TensorFlowLite

/**
 * The benchmark JSON of android_bench/schema.py ("swiftformer-bench/1", source "android-app").
 * Variant and format are left out: the report tool reads them from the model file names.
 */
object ReportJson {
    const val SCHEMA = "swiftformer-bench/1"

    fun build(context: Context, cases: List<Case>, settings: Map<String, Any?>): JSONObject {
        val results = JSONArray()
        cases.forEach { results.put(result(it)) }
        return JSONObject()
            .put("schema", SCHEMA)
            .put("source", "android-app")
            .put("created", utcNow())
            .put("device", device(context))
            .put("runtime", JSONObject().put("name", "LiteRT (Android)").put("version", version()))
            .put("settings", JSONObject(settings))
            .put("results", results)
    }

    fun result(case: Case): JSONObject {
        val result = JSONObject()
            .put("model", case.model.name)
            .put("backend", case.backend.id)
            .put("threads", case.threads)
        case.coverage?.let {
            result.put("delegate_coverage", it.toJson()).put("delegation", it.describe())
        }
        val error = case.error
        if (error != null || case.samples.isEmpty()) {
            return result.put("status", "failed").put("error", error ?: "no timed inference ran")
        }
        result.put("status", "ok")
        case.fields.forEach { (key, value) -> result.put(key, value) }
        latencySummary(case.samples).forEach { (key, value) -> result.put(key, value) }
        return result.put("samples_ms", JSONArray(case.samples.map { Math.round(it * 1e4) / 1e4 }))
    }

    private fun device(context: Context): JSONObject {
        val memory = ActivityManager.MemoryInfo()
        (context.getSystemService(Context.ACTIVITY_SERVICE) as ActivityManager).getMemoryInfo(memory)
        val device = JSONObject()
            .put("name", "${Build.MANUFACTURER} ${Build.MODEL}")
            .put("os", "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})")
            .put("abi", Build.SUPPORTED_ABIS.firstOrNull() ?: "unknown")
            .put("cores", Runtime.getRuntime().availableProcessors())
            .put("memory_gb", Math.round(memory.totalMem / 1073741824.0 * 10) / 10.0)
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.S) {
            device.put("soc", "${Build.SOC_MANUFACTURER} ${Build.SOC_MODEL}")
        }
        return device
    }

    private fun version(): String =
        try {
            TensorFlowLite.runtimeVersion()
        } catch (e: Throwable) {
            "unknown"
        }

    private fun utcNow(): String {
        val format = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'Z'", Locale.US)
        format.timeZone = TimeZone.getTimeZone("UTC")
        return format.format(Date())
    }

    /** Writes `text` to `file` whole or not at all (a partial file, then a rename). */
    fun writeAtomically(text: String, file: File): File {
        val partial = File(file.parentFile, file.name + ".partial")
        partial.writeText(text)
        check(partial.renameTo(file)) { "Could not write $file" }
        return file
    }

    /** Writes the report beside the models. */
    fun write(report: JSONObject, file: File): File = writeAtomically(report.toString(1), file)

    /**
     * The completion marker `swiftformer-bench app` polls for, written after the report:
     * {"run_id", "status": "ok" | "failed", "json": report file name, "error"}.
     */
    fun writeMarker(file: File, runId: String?, report: File?, error: String?): File {
        val marker = JSONObject()
            .put("run_id", runId ?: JSONObject.NULL)
            .put("status", if (error == null) "ok" else "failed")
            .put("json", report?.name ?: JSONObject.NULL)
            .put("error", error ?: JSONObject.NULL)
        return writeAtomically(marker.toString(), file)
    }
}
