"""The fidelity report files, all from one typed `converters.results.Report`.

The report says, per format: file size, max absolute and relative error, SQNR (dB) and top-1
agreement of the logits against the Keras float32 model (on images that were not used for
calibration), host and GPU-engine latency, and which file to ship per runtime (`choose_files`).
It is written as ``report.json`` (`converters.results.save`), Markdown and a PNG chart, each
atomically; `converters.model_card.write_outputs` writes them with the model card.
"""

import dataclasses
import datetime
import os
import re

from converters import results as R

#: Text of boolean cells, by row key (dict rows of other tables).
FLAGS = {"mediapipe": ("opens", "no")}
#: Characters that mean something to Markdown or HTML in running text; "_" only where it can
#: open or close emphasis (not between two letters or digits, as in file names).
_MD_SPECIAL = re.compile(r"([\\`*\[\]<&|~#])|(?<![^\W_])_|_(?![^\W_])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def md_text(value):
    """`value` as literal Markdown text on one line: control characters shown as ``\\uXXXX``,
    every Markdown/HTML special character backslash-escaped (no tag, link, emphasis or code
    span can start in it)."""
    text = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", str(value))
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(), text)


def md_code(value):
    """`value` as an inline code span that it cannot break out of (the fence is longer than
    any run of backticks inside); control characters shown as ``\\uXXXX``."""
    text = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", str(value))
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _part(name, field):
    return lambda r: getattr(getattr(r, name), field) if getattr(r, name) else None


def _mb(value):
    return f"{value / 1e6:.2f}"


def _ratio(r):
    if not r.latency or r.latency.ratio is None:
        return None
    return f"{r.latency.ratio:.2f}" + (" SLOW" if r.latency.slow else "")


def _coreml_ops(r):
    return f"{r.coreml_ops.count} ({r.coreml_ops.transposes} transposes)" if r.coreml_ops else None


def _mediapipe(r):
    return None if r.mediapipe is None or r.mediapipe.ok is None else \
        ("opens" if r.mediapipe.ok else "no")


def _percent(value):
    return f"{100 * value:.2f}"


#: The typed report's columns: (title, getter of a `FormatResult`, format string or callable).
COLUMNS = (
    ("format", lambda r: r.format, "{}"),
    ("graph", lambda r: r.graph, "{}"),
    ("size (MB)", lambda r: r.size_bytes, _mb),
    ("max abs err", _part("fidelity", "max_abs_error"), "{:.3g}"),
    ("max rel err", _part("fidelity", "max_rel_error"), "{:.3g}"),
    ("SQNR (dB)", _part("fidelity", "sqnr_db"), "{:.1f}"),
    ("top-1 agree", _part("fidelity", "top1_agreement"), "{:.3f}"),
    ("images", _part("fidelity", "images"), "{}"),
    ("ms (host)", _part("latency", "median_ms"), "{:.2f}"),
    ("x float32", _ratio, "{}"),
    ("XNNPACK partitions", _part("litert", "xnnpack_partitions"), "{}"),
    ("GPU engine", _part("gpu", "status"), "{}"),
    ("GPU SQNR (dB)", _part("gpu", "sqnr_db"), "{:.1f}"),
    ("GPU ms", _part("gpu", "ms"), "{:.0f}"),
    ("MediaPipe", _mediapipe, "{}"),
    ("Core ML ops", _coreml_ops, "{}"),
    ("file", lambda r: r.file, "{}"),
)
#: Columns shown when a row has labelled accuracy (`add_accuracy`).
ACCURACY_COLUMNS = (("top-1 %", _part("accuracy", "top1"), _percent),
                    ("top-5 %", _part("accuracy", "top5"), _percent))


def _cell(row, key, fmt):
    value = key(row) if callable(key) else row.get(key)
    if value is None:
        return "-"
    if not callable(key) and key in FLAGS:
        return FLAGS[key][0] if value else FLAGS[key][1]
    if not callable(key) and key.endswith("bytes"):
        value = value / 1e6
    return fmt(value) if callable(fmt) else fmt.format(value)


def markdown_table(rows, columns=None):
    """Rows as a Markdown table, every cell escaped (`md_text`); failed rows show their error.

    Args:
        rows: `FormatResult`s or flat pipeline dicts (default columns), or any dicts with
            `columns`.
        columns: (title, row key or getter, format string or callable) triples; default
            `COLUMNS`, with `ACCURACY_COLUMNS` when a row has accuracy. Dict keys ending in
            ``bytes`` are shown in MB.
    """
    if columns is None:
        rows = [R.from_flat(r) for r in rows]
        columns = COLUMNS[:-1] + (ACCURACY_COLUMNS if any(r.accuracy for r in rows) else ()) \
            + COLUMNS[-1:]
    lines = ["| " + " | ".join(md_text(title) for title, _, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        error = row.error if isinstance(row, R.FormatResult) else row.get("error")
        if error:
            name = row.format if isinstance(row, R.FormatResult) else row.get("format")
            cells = [name, f"FAILED: {error[:160]}"] + [""] * (len(columns) - 2)
        else:
            cells = [_cell(row, key, fmt) for _, key, fmt in columns]
        lines.append("| " + " | ".join(md_text(c) for c in cells) + " |")
    return "\n".join(lines)


# --- which file to ship -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ShipFloor:
    """The fidelity a file must keep to be named the one to ship: SQNR of its logits against
    the Keras float32 model, and top-1 agreement, on the evaluation images."""

    sqnr_db: float = 30.0
    top1_agreement: float = 0.9


@dataclasses.dataclass(frozen=True)
class Choice:
    """The file to ship for one runtime, and why in one line."""

    target: str
    file: str
    format: str
    reason: str


LITERT, COREML = "litert", "coreml"
TARGETS = ("LiteRT CPU / MediaPipe", "LiteRT GPU", "Core ML")


def runtime_of(row):
    """"litert" or "coreml": the row's `runtime`, else what its measured parts show."""
    if row.runtime:
        return row.runtime
    if row.coreml_ops is not None:
        return COREML
    return LITERT if (row.mediapipe or row.litert or row.gpu or row.latency) else None


def _is_qat(row):
    return bool(row.compression and row.compression.start_sqnr_db is not None)


def _qat_pays(row, margin):
    """A QAT row (it has a post-training start) measurably beats the int8 it started from."""
    c, f = row.compression, row.fidelity
    return (c.start_sqnr_db is not None and f.sqnr_db - c.start_sqnr_db >= margin
            and f.top1_agreement >= (c.start_top1_agreement or 0))


def _pick(target, rows, sqnr_of, speed_of, speed_words, floor):
    def meets(r):
        return sqnr_of(r) >= floor.sqnr_db and r.fidelity.top1_agreement >= floor.top1_agreement

    good = [r for r in rows if meets(r)]
    if not good:
        best = max(rows, key=sqnr_of)
        return Choice(target, best.file, best.format,
                      f"no file keeps SQNR >= {floor.sqnr_db:g} dB and top-1 agreement >= "
                      f"{floor.top1_agreement:g}: the closest to the float model "
                      f"({sqnr_of(best):.1f} dB)")
    timed = all(speed_of(r) is not None for r in good)
    # a QAT row left in `rows` beats its start (`choose_files`): preferred over the rest
    best = min(good, key=lambda r: (not _is_qat(r), (speed_of(r) if timed else 0),
                                    r.size_bytes or 0))
    how = (f"the fastest {speed_words} ({speed_of(best):.2f} ms)" if timed
           else f"the smallest ({(best.size_bytes or 0) / 1e6:.2f} MB)")
    if _is_qat(best):
        gain = best.fidelity.sqnr_db - best.compression.start_sqnr_db
        how = (f"quantisation-aware training beats the post-training int8 it started from by "
               f"{gain:.1f} dB: preferred")
    return Choice(target, best.file, best.format,
                  f"{how} of the files with SQNR >= {floor.sqnr_db:g} dB and top-1 agreement "
                  f">= {floor.top1_agreement:g} ({sqnr_of(best):.1f} dB, "
                  f"{best.fidelity.top1_agreement:.3f})")


def choose_files(report, floor=ShipFloor()):
    """The file to ship per runtime (`TARGETS`), from the measured rows: the fastest (by
    measured time, else the smallest) file that meets `floor`. A QAT row competes only when
    it beats the int8 it started from by `converters.compress.QAT_MARGIN_DB`, and then
    replaces that file (its ``compression.baseline`` format). Returns a list of `Choice` (a runtime with no file is left out)."""
    from converters.compress import QAT_MARGIN_DB

    rows = [r for r in report.formats if r.ok and r.file and r.fidelity
            and r.fidelity.sqnr_db is not None and r.fidelity.top1_agreement is not None]
    qat = [r for r in rows if _is_qat(r)]
    paying = [r for r in qat if _qat_pays(r, QAT_MARGIN_DB)]
    rows = [r for r in rows if r not in qat or r in paying]
    replaced = {r.compression.baseline for r in paying}  # the post-training file it beats
    rows = [r for r in rows if r.format not in replaced]
    litert = [r for r in rows if runtime_of(r) == LITERT]
    choices = []
    cpu = [r for r in litert if not (r.mediapipe and r.mediapipe.ok is False)
           and not (r.latency and r.latency.slow)]
    if cpu:
        choices.append(_pick(TARGETS[0], cpu, lambda r: r.fidelity.sqnr_db,
                             lambda r: r.latency.median_ms if r.latency else None,
                             "on this host's CPU (LiteRT + XNNPACK)", floor))
    gpu = [r for r in litert if r.gpu and r.gpu.status == "full"]
    if gpu:
        software = any(r.gpu.software or r.gpu.ms is None for r in gpu)
        choices.append(_pick(TARGETS[1], gpu,
                             lambda r: min(r.fidelity.sqnr_db, r.fidelity.sqnr_db
                                           if r.gpu.sqnr_db is None else r.gpu.sqnr_db),
                             lambda r: None if software else r.gpu.ms,
                             "on the GPU engine", floor))
    else:
        analysed = [r for r in litert if r.litert and r.litert.gpu_compatible]
        if analysed:
            c = _pick(TARGETS[1], analysed, lambda r: r.fidelity.sqnr_db, lambda r: None, "",
                      floor)
            choices.append(dataclasses.replace(
                c, reason=c.reason + "; the GPU engine did not run here, so by the offline "
                "GPU analyser's verdict only"))
    coreml = [r for r in rows if runtime_of(r) == COREML]
    if coreml:
        c = _pick(TARGETS[2], coreml, lambda r: r.fidelity.sqnr_db, lambda r: None, "", floor)
        choices.append(dataclasses.replace(
            c, reason=c.reason + "; Core ML speed is not measured off Apple hardware"))
    return choices


def ship_lines(choices):
    """Markdown list lines naming the file to ship per runtime and why."""
    if not choices:
        return ["No file of this run can be recommended (every format failed)."]
    return [f"- **{md_text(c.target)}**: {md_code(c.file)} ({md_text(c.format)}): "
            f"{md_text(c.reason)}." for c in choices]


# --- the report files ---------------------------------------------------------------------

_INFO_LINES = ("checkpoint", "format_in", "variant", "token_weighting", "input_shape",
               "tflite_graph", "calibration_images", "evaluation_images", "image_source",
               "skipped_images", "accuracy", "latency", "gpu_engine", "created", "versions")


def accuracy_text(accuracy):
    """One line for a `converters.results.Accuracy` of the Keras float model."""
    return (f"Keras float model: top-1 {100 * accuracy.top1:.2f} %, top-5 "
            f"{100 * accuracy.top5:.2f} % on {accuracy.images} labelled images of "
            f"{accuracy.dataset}")


def markdown_report(report):
    """The full Markdown report of a `converters.results.Report`: what was converted and how,
    the file to ship per runtime, then the table and notes."""
    info = report.info
    lines = ["# SwiftFormer conversion report", ""]
    if info.random_weights:
        lines += ["> **Random weights**: no checkpoint was given, so these models carry random "
                  "weights. The fidelity numbers are real; predictions are meaningless.", ""]
    if info.synthetic_images:
        lines += ["> **Synthetic images**: no image folder was given; calibration and "
                  "evaluation used generated images, so integer-format fidelity is not "
                  "representative of real photos.", ""]
    for key in _INFO_LINES:
        value = getattr(info, key)
        if value is not None:
            value = accuracy_text(value) if key == "accuracy" else value
            lines.append(f"- **{key.replace('_', ' ')}**: {md_text(value)}")
    lines += ["", "## Files to ship", ""] + ship_lines(choose_files(report))
    lines += ["", "Metrics compare each model's logits with the Keras float32 model on the "
              "evaluation images (never used for calibration).", "",
              markdown_table(report.formats), ""]
    return "\n".join(lines + litert_notes(report.formats) + coreml_notes(report.formats))


def coreml_notes(rows):
    """Markdown lines under the table: each Core ML program's op histogram (non-constant MIL
    operations, most frequent first)."""
    programs = [r for r in rows if r.ok and r.coreml_ops and r.coreml_ops.histogram]
    if not programs:
        return []
    lines = ["Core ML programs, non-constant operations by type:", ""]
    for row in programs:
        ops = ", ".join(f"{op} {n}" for op, n in row.coreml_ops.histogram.items())
        lines.append(f"- {md_text(row.format)}: {md_text(ops)}")
    return lines


def litert_notes(rows):
    """Markdown lines under the table: what the LiteRT columns mean, and a warning for each
    format that runs on slow kernels or that the GPU engine does not run whole."""
    litert = [r for r in rows if r.ok and runtime_of(r) == LITERT]
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
        name = md_text(r.format)
        undelegated = ", ".join(f"{op} x{n}" for op, n in sorted(
            ((r.litert and r.litert.undelegated_ops) or {}).items()))
        if r.latency and r.latency.slow:
            lines.append(f"- **{name} is slow here**: {r.latency.ratio:.1f}x float32's time; "
                         f"XNNPACK leaves {md_text(undelegated or 'no op')} to LiteRT's "
                         "reference kernels. Prefer another format for CPU inference.")
        if r.gpu and r.gpu.status in ("partial", "failed"):
            what = "ran it only in part" if r.gpu.status == "partial" else "failed"
            hint = ", ".join(sorted((r.litert and r.litert.gpu_incompatible_ops) or {}))
            lines.append(f"- **{name}**: the GPU engine {what} (left to the CPU: "
                         f"{md_text(', '.join(r.gpu.cpu_ops or []) or 'not named')})"
                         + (f"; {md_text(r.gpu.error[:200])}" if r.gpu.error else "")
                         + (f"; the GPU analyser flags {md_text(hint)}" if hint else ""))
        if r.note:
            lines.append(f"- {name}: {md_text(r.note)}")
        if r.mediapipe and r.mediapipe.ok is False:
            lines.append(f"- {name}: MediaPipe cannot open it ({md_text(r.mediapipe.reason)})")
    return lines + [""]


def plot(rows, path, title="Fidelity and size per format"):
    """Bar chart of SQNR (dB) and file size (MB) per format (`FormatResult`s), written to
    `path` (PNG); None when no row has both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_swiftformer.files import atomic_output

    ok = [r for r in rows if r.ok and r.fidelity and r.fidelity.sqnr_db is not None
          and r.size_bytes is not None]
    if not ok:
        return None
    names = [r.format for r in ok]
    sqnr = [min(r.fidelity.sqnr_db, 150.0) for r in ok]
    size = [r.size_bytes / 1e6 for r in ok]
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


def add_accuracy(report, evaluation):
    """A copy of `report` with labelled accuracy from ``swiftformer-eval --json`` output
    (`evaluation`: its dict): each row whose file it evaluated (matched by file name), and the
    Keras reference model's in ``info.accuracy``.

    Raises:
        ValueError: `evaluation` is not eval output, or matches no model of the report.
    """
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("results"), list):
        raise ValueError("The accuracy file is not swiftformer-eval --json output: give the "
                         "file that swiftformer-eval --json wrote")
    results = {os.path.basename(str(r.get("model"))): r for r in evaluation["results"]
               if isinstance(r, dict)}

    def accuracy(r):
        return R.Accuracy(top1=r["top1"], top5=r["top5"], images=r.get("images"),
                          dataset=evaluation.get("dataset"))

    rows = [dataclasses.replace(row, accuracy=accuracy(results[row.file]))
            if row.file in results else row for row in report.formats]
    matched = sum(row.file in results for row in report.formats)
    info = report.info
    reference = [r for name, r in results.items() if name.endswith(".keras")]
    if reference:
        info = dataclasses.replace(info, accuracy=accuracy(reference[0]))
        matched += 1
    if not matched:
        raise ValueError(f"None of the evaluated models ({sorted(results)[:4]}) is in this "
                         "report (matched by file name): evaluate the files of this folder")
    return dataclasses.replace(report, info=info, formats=rows)


def write_report(output_dir, report, rows=None, labels=None, name="report"):
    """Writes ``{name}.json`` (`converters.results.save`), ``{name}.md`` and ``{name}.png``
    in `output_dir`; returns the paths.

    Args:
        report: a `converters.results.Report`; or the pipeline's info dict, with `rows` (flat
            dicts or `FormatResult`s) and `labels`.
    """
    from keras_swiftformer.files import atomic_output

    if not isinstance(report, R.Report):
        report = R.as_report(report, rows, labels)
    if report.info.created is None:
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        report = dataclasses.replace(report, info=dataclasses.replace(report.info,
                                                                      created=created))
    md_path = os.path.join(output_dir, f"{name}.md")
    json_path = os.path.join(output_dir, f"{name}.json")
    png_path = os.path.join(output_dir, f"{name}.png")
    R.save(report, json_path)
    with atomic_output(md_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(markdown_report(report))
    paths = {"markdown": md_path, "json": json_path}
    if plot(report.formats, png_path,
            title=f"SwiftFormer-{report.info.variant or '?'}: fidelity and size"):
        paths["plot"] = png_path
    return paths
