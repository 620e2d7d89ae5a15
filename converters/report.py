"""The fidelity report files (metrics: `converters.metrics`).

The report says, per format: file size, max absolute and relative error, SQNR (dB) and top-1
agreement of the logits against the Keras float32 model, on images that were not used for
calibration. It is written as Markdown, JSON and a PNG chart, each atomically.
"""

import datetime
import json
import os

import numpy as np

from keras_swiftformer.files import atomic_output


COLUMNS = (
    ("format", "format", "{}"),
    ("graph", "graph", "{}"),
    ("size (MB)", "size_bytes", "{:.2f}"),
    ("max abs err", "max_abs_error", "{:.3g}"),
    ("max rel err", "max_rel_error", "{:.3g}"),
    ("SQNR (dB)", "sqnr_db", "{:.1f}"),
    ("top-1 agree", "top1_agreement", "{:.3f}"),
    ("images", "evaluation_images", "{}"),
    ("ms (host)", "latency_ms", "{:.2f}"),
    ("x float32", "latency_ratio", "{:.2f}"),
    ("XNNPACK partitions", "xnnpack_partitions", "{}"),
    ("GPU engine", "gpu", "{}"),
    ("GPU SQNR (dB)", "gpu_sqnr_db", "{:.1f}"),
    ("GPU ms", "gpu_ms", "{:.0f}"),
    ("MediaPipe", "mediapipe", "{}"),
    ("Core ML ops", "coreml_ops", "{}"),
    ("file", "file", "{}"),
)
#: Text of boolean cells, by row key.
FLAGS = {"mediapipe": ("opens", "no")}
#: Columns shown once `add_accuracy` has put labelled accuracy into the rows.
ACCURACY_COLUMNS = (("top-1 %", "top1", "{:.2f}"), ("top-5 %", "top5", "{:.2f}"))


def _cell(row, key, fmt):
    value = row.get(key)
    if value is None:
        return "-"
    if key in FLAGS:
        return FLAGS[key][0] if value else FLAGS[key][1]
    if key == "coreml_ops":  # `converters.coreml.op_summary`
        return f"{value['count']} ({value['transposes']} transposes)"
    if key == "latency_ratio" and row.get("slow"):
        return fmt.format(value) + " SLOW"
    if key.endswith("bytes"):
        value = value / 1e6
    elif key in ("top1", "top5"):
        value = 100 * value
    return fmt.format(value)


def markdown_table(rows, columns=None):
    """The per-format rows as a Markdown table; failed formats show their error.

    `columns`: (title, row key, format) triples; default `COLUMNS`, with `ACCURACY_COLUMNS`
    when the rows have accuracy. Keys ending in ``bytes`` are shown in MB.
    """
    if columns is None:
        columns = COLUMNS[:-1] + (ACCURACY_COLUMNS if any("top1" in r for r in rows) else ()) \
            + COLUMNS[-1:]
    lines = ["| " + " | ".join(title for title, _, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        if row.get("error"):
            cells = [row["format"], f"FAILED: {row['error'][:160]}"] + [""] * (len(columns) - 2)
        else:
            cells = [_cell(row, key, fmt) for _, key, fmt in columns]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def markdown_report(info, rows):
    """Full Markdown report: what was converted and how, then the table."""
    lines = ["# SwiftFormer conversion report", ""]
    if info.get("random_weights"):
        lines += ["> **Random weights**: no checkpoint was given, so these models carry random "
                  "weights. The fidelity numbers are real; predictions are meaningless.", ""]
    if info.get("synthetic_images"):
        lines += ["> **Synthetic images**: no image folder was given; calibration and "
                  "evaluation used generated images, so integer-format fidelity is not "
                  "representative of real photos.", ""]
    for key in ("checkpoint", "format_in", "variant", "token_weighting", "input_shape",
                "tflite_graph", "calibration_images", "evaluation_images", "image_source",
                "skipped_images", "accuracy", "latency", "gpu_engine", "created", "versions"):
        if key in info:
            lines.append(f"- **{key.replace('_', ' ')}**: {info[key]}")
    lines += ["", "Metrics compare each model's logits with the Keras float32 model on the "
              "evaluation images (never used for calibration).", "", markdown_table(rows), ""]
    return "\n".join(lines + litert_notes(rows) + coreml_notes(rows))


def coreml_notes(rows):
    """Markdown lines under the table: each Core ML program's op histogram (non-constant MIL
    operations, most frequent first)."""
    programs = [r for r in rows if not r.get("error") and r.get("coreml_ops")]
    if not programs:
        return []
    lines = ["Core ML programs, non-constant operations by type:", ""]
    for row in programs:
        ops = ", ".join(f"{op} {n}" for op, n in row["coreml_ops"]["histogram"].items())
        lines.append(f"- {row['format']}: {ops}")
    return lines


def litert_notes(rows):
    """Markdown lines under the table: what the LiteRT columns mean, and a warning for each
    format that runs on slow kernels or that the GPU engine does not run whole."""
    litert = [r for r in rows if not r.get("error") and str(r.get("file")).endswith(".tflite")]
    if not litert:
        return []
    lines = ["LiteRT columns: **ms (host)** is the median time of one inference through LiteRT "
             "+ XNNPACK, 1 thread, on the converting machine, every file timed in one "
             "interleaved loop (each round runs every file once, in a new random order); "
             "**x float32** its ratio to the float32 file's. **XNNPACK partitions**: how many "
             "pieces the XNNPACK delegate runs; between them LiteRT's own kernels run the ops "
             "it lacks. **GPU engine**: the file run on LiteRT's GPU accelerator "
             "(`CompiledModel`; `full` when it took every op), its **GPU SQNR** against the "
             "CPU run of the float32 file and its **GPU ms** on the adapter named above (a "
             "software adapter such as SwiftShader is not a GPU's speed). **MediaPipe**: the "
             "file has classifier metadata and a float32 or uint8 input, so MediaPipe Tasks' "
             "ImageClassifier opens it.", ""]
    for r in litert:
        undelegated = ", ".join(f"{op} x{n}" for op, n in sorted(
            (r.get("undelegated_ops") or {}).items()))
        if r.get("slow"):
            lines.append(f"- **{r['format']} is slow here**: {r['latency_ratio']:.1f}x float32's "
                         f"time; XNNPACK leaves {undelegated or 'no op'} to LiteRT's reference "
                         "kernels. Prefer another format for CPU inference.")
        if r.get("gpu") in ("partial", "failed"):
            what = "ran it only in part" if r["gpu"] == "partial" else "failed"
            hint = ", ".join(sorted(r.get("gpu_incompatible_ops") or {}))
            lines.append(f"- **{r['format']}**: the GPU engine {what} (left to the CPU: "
                         f"{r.get('gpu_cpu_ops') or 'not named'})"
                         + (f"; {r['gpu_error'][:200]}" if r.get("gpu_error") else "")
                         + (f"; the GPU analyser flags {hint}" if hint else ""))
        if r.get("note"):
            lines.append(f"- {r['format']}: {r['note']}")
        if r.get("mediapipe") is False:
            lines.append(f"- {r['format']}: MediaPipe cannot open it ({r.get('mediapipe_reason')})")
    return lines + [""]


def plot(rows, path, title="Fidelity and size per format"):
    """Bar chart of SQNR (dB) and file size (MB) per format, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if not r.get("error")]
    if not ok:
        return None
    names = [r["format"] for r in ok]
    sqnr = [min(r["sqnr_db"], 150.0) for r in ok]
    size = [r["size_bytes"] / 1e6 for r in ok]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.barh(names, sqnr, color="tab:blue")
    ax1.set_xlabel("SQNR vs Keras float32 (dB, higher is better; capped at 150)")
    ax1.invert_yaxis()
    ax2.barh(names, size, color="tab:orange")
    ax2.set_xlabel("file size (MB)")
    ax2.invert_yaxis()
    for ax, values, fmt in ((ax1, sqnr, "{:.1f}"), (ax2, size, "{:.2f}")):
        for i, v in enumerate(values):
            ax.text(v, i, " " + fmt.format(v), va="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def add_accuracy(info, rows, evaluation):
    """Puts labelled accuracy from ``swiftformer-eval --json`` output (`evaluation`: its dict)
    into the report: ``top1`` / ``top5`` of the rows whose file it evaluated (matched by file
    name), and the Keras reference model's under ``info["accuracy"]``.

    Returns:
        (info, rows) updated copies.

    Raises:
        ValueError: `evaluation` matches no model of the report.
    """
    results = {os.path.basename(r["model"]): r for r in evaluation.get("results", [])}
    rows = [dict(row) for row in rows]
    matched = 0
    for row in rows:
        result = results.get(row.get("file"))
        if result is not None:
            row.update(top1=result["top1"], top5=result["top5"])
            matched += 1
    info = dict(info)
    reference = [r for name, r in results.items() if name.endswith(".keras")]
    if reference:
        r = reference[0]
        info["accuracy"] = (f"Keras float model: top-1 {100 * r['top1']:.2f} %, top-5 "
                            f"{100 * r['top5']:.2f} % on {r['images']} labelled images of "
                            f"{evaluation.get('dataset')}")
        matched += 1
    if not matched:
        raise ValueError(f"None of the evaluated models ({sorted(results)[:4]}) is in this "
                         "report (matched by file name)")
    return info, rows


def write_report(output_dir, info, rows, name="report"):
    """Writes ``{name}.md``, ``{name}.json`` and ``{name}.png`` in `output_dir`; returns the
    paths."""
    info = {**info, "created": info.get("created")
            or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    md_path = os.path.join(output_dir, f"{name}.md")
    json_path = os.path.join(output_dir, f"{name}.json")
    png_path = os.path.join(output_dir, f"{name}.png")
    with atomic_output(json_path) as tmp, open(tmp, "w") as f:
        json.dump({"info": info, "formats": rows}, f, indent=2, default=str)
    with atomic_output(md_path) as tmp, open(tmp, "w") as f:
        f.write(markdown_report(info, rows))
    paths = {"markdown": md_path, "json": json_path}
    if plot(rows, png_path, title=f"SwiftFormer-{info.get('variant', '?')}: fidelity and size"):
        paths["plot"] = png_path
    return paths
