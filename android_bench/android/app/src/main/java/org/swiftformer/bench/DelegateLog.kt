package org.swiftformer.bench

import android.util.Log
import org.json.JSONObject

/**
 * What the backend's delegate took of the graph, as the runtime logs it when it applies a
 * delegate (tensorflow/lite/core/subgraph.cc, tag "tflite"): "Replacing N out of M node(s) with
 * delegate (NAME) node, yielding K partitions for subgraph S." (older builds: "Replacing N
 * node(s) ... yielding K partitions."). K counts every piece of the graph, the CPU's included:
 * 1 means the delegate runs it all. The fields are those of the schema's delegate_coverage.
 */
data class Coverage(
    val delegate: String?,
    val nodes: Int,
    val totalNodes: Int?,
    val partitions: Int?,
    val full: Boolean,
) {
    fun toJson(): JSONObject = JSONObject()
        .put("delegate", delegate ?: JSONObject.NULL)
        .put("nodes", nodes)
        .put("total_nodes", totalNodes ?: JSONObject.NULL)
        .put("partitions", partitions ?: JSONObject.NULL)
        .put("full", full)

    fun describe(): String =
        if (full) "${delegate ?: "delegate"}: whole graph"
        else "${delegate ?: "delegate"}: $nodes${totalNodes?.let { " of $it" } ?: ""} nodes" +
            (partitions?.let { ", $it partitions (the rest on the CPU)" } ?: "")
}

/** Reads this process's own log (no permission needed for an app's own lines). */
object DelegateLog {
    private const val MARK_TAG = "SwiftFormerBench"
    private const val MARK = "coverage-mark "
    private val REPLACING = Regex(
        """Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \(([^)]*)\) node, """ +
            """yielding (\d+) partitions(?: for subgraph (\d+))?""")
    /** Backend -> what its delegate's kernel name holds (TfLiteGpuDelegateV2, ...). */
    private val NAMES = mapOf(
        Backend.XNNPACK to "xnnpack", Backend.GPU to "gpu", Backend.NNAPI to "nnapi")

    /** Marks the log before a case's delegate is applied. */
    fun mark(id: String) {
        Log.i(MARK_TAG, MARK + id)
    }

    /** The runtime's log lines since `mark(id)`; null when the log cannot be read. */
    fun linesSince(id: String): List<String>? = try {
        val process = ProcessBuilder(
            "logcat", "-d", "-v", "raw", "--pid=${android.os.Process.myPid()}",
            "-s", "tflite:I", "$MARK_TAG:I")
            .redirectErrorStream(true).start()
        val lines = process.inputStream.bufferedReader().use { it.readLines() }
        process.waitFor()
        val start = lines.indexOfLast { it.contains(MARK + id) }
        if (start < 0) null else lines.subList(start + 1, lines.size)
    } catch (e: Exception) {
        null
    }

    /**
     * The coverage of `backend`'s delegate in `lines` (one line per subgraph, summed); a
     * delegate that took nothing logs no line, which reads as 0 nodes. Null for the built-in
     * kernels (Backend.CPU).
     */
    fun coverage(lines: List<String>, backend: Backend): Coverage? {
        val wanted = NAMES[backend] ?: return null
        val perSubgraph = LinkedHashMap<String?, MatchResult>()
        for (line in lines) {
            val match = REPLACING.find(line) ?: continue
            if (match.groupValues[3].lowercase().contains(wanted)) {
                perSubgraph.putIfAbsent(match.groups[5]?.value, match)
            }
        }
        if (perSubgraph.isEmpty()) return Coverage(null, 0, null, null, false)
        val matches = perSubgraph.values
        val totals = matches.map { it.groups[2]?.value?.toInt() }
        return Coverage(
            delegate = matches.first().groupValues[3],
            nodes = matches.sumOf { it.groupValues[1].toInt() },
            totalNodes = if (totals.any { it == null }) null else totals.sumOf { it!! },
            partitions = matches.sumOf { it.groupValues[4].toInt() },
            full = matches.all { it.groupValues[4].toInt() == 1 },
        )
    }
}
