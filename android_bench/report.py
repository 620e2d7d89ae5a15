"""One table and one plot from any number of benchmark reports (host, adb, Android app, iOS
app; read them with `android_bench.schema.load_reports`).

`write_outputs` writes ``PREFIX.json`` (the merged reports), ``PREFIX.md`` (the table) and
``PREFIX.png`` (mean latency against the paper's GMACs or top-1 of each variant, one line per
device x backend x threads x format, the paper's iPhone 14 latency as a reference).
"""

import json
import os

from keras_swiftformer.files import atomic_output

from android_bench.models import VARIANT_ORDER, guess_variant_and_format, paper_value
from android_bench.schema import SCHEMA, validate
from converters.report import markdown_table as _markdown_table
from converters.report import md_text

PLOT_AXES = {"gmacs": ("gmacs", "GMACs (paper)"), "top1": ("top1", "ImageNet top-1 % (paper)")}
#: Table columns for `converters.report.markdown_table`: (header, row key, format).
COLUMNS = (
    ("Source", "source", "{}"), ("Device", "device", "{}"), ("Backend", "backend", "{}"),
    ("Threads", "threads", "{}"), ("Model", "label", "{}"), ("Init ms", "init_ms", "{:.1f}"),
    ("First ms", "first_ms", "{:.2f}"), ("Mean ms", "mean_ms", "{:.2f}"),
    ("Median ms", "median_ms", "{:.2f}"), ("p90 ms", "p90_ms", "{:.2f}"),
    ("Min ms", "min_ms", "{:.2f}"), ("Peak MB", "peak_memory_mb", "{:.1f}"),
    ("Runs", "runs", "{}"), ("Ran on", "ran_on", "{}"),
)


def _file_above(path):
    """The nearest existing ancestor of `path` when it is not a folder, else None."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return None if os.path.isdir(parent) else parent


def check_file(path, flag):
    """Raises ValueError unless a file can be written at `path` (named by `flag` in the
    message): not an existing folder (never replaced), not under a file."""
    path = os.fspath(path)
    if not path or path.endswith(("/", os.sep)):
        raise ValueError(f"{flag} {path!r} names no file: give a file path such as "
                         "out/bench/phone.json")
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is an existing folder, which is left alone: give a "
                         "file path")
    above = _file_above(path)
    if above:
        raise ValueError(f"{flag} {path} is under {above}, which is a file: give a path in a "
                         "folder")


def check_folder(path, flag):
    """Raises ValueError unless `path` is, or can become, a folder (named by `flag`)."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a file, not a folder: give a folder path")
    above = _file_above(path)
    if above:
        raise ValueError(f"{flag} {path} is under {above}, which is a file: give a folder "
                         "path")


def check_prefix(prefix, flag="--output"):
    """Raises ValueError unless ``PREFIX.json``, ``.md`` and ``.png`` can be written: checked
    before any benchmark runs, so that a long run never ends on a path it cannot write."""
    prefix = os.fspath(prefix)
    if not os.path.basename(prefix) or os.path.isdir(prefix):
        raise ValueError(f"{flag} {prefix!r} is a folder; it is the prefix of the .json, .md "
                         f"and .png written: give e.g. {os.path.join(prefix, 'bench')}")
    for suffix in (".json", ".md", ".png"):
        check_file(prefix + suffix, flag)


def write_text(path, text):
    """Writes `text` to `path` atomically; returns `path`."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return os.fspath(path)


def rows(docs):
    """Flattens reports into table rows (one per result), sorted by source, device, backend,
    threads, variant (paper order), format. A result without variant or format gets them from
    its model's file name when the name says them (the apps leave them to this)."""
    out = []
    for doc in docs:
        for result in doc["results"]:
            guessed = guess_variant_and_format(result["model"])
            variant = result.get("variant") or guessed[0]
            fmt = result.get("format") or guessed[1]
            label = (f"{variant} {fmt}" if variant and fmt else
                     f"{variant} ({result['model']})" if variant else result["model"])
            if result.get("outputs") == "classifier":  # Core ML's label dictionary included
                label += " classifier"
            out.append({**result, "variant": variant, "format": fmt, "label": label,
                        "source": doc["source"], "device": doc["device"]["name"],
                        "runtime": doc["runtime"]["name"], "ran_on": ran_on(result)})
    order = {v: i for i, v in enumerate(VARIANT_ORDER)}
    return sorted(out, key=lambda r: (r["source"], r["device"], r["backend"],
                                      r.get("threads") or 0,
                                      order.get(r.get("variant"), len(order)),
                                      r.get("format") or "", r["model"]))


def ran_on(result):
    """Where a result's work ran, in a few words: the delegate's share of the graph
    (``delegate_coverage``) or the Neural Engine's share of the operations (``compute_plan``);
    None when the result does not say."""
    coverage, plan = result.get("delegate_coverage"), result.get("compute_plan")
    if coverage:
        if coverage.get("full"):
            return "delegate: all"
        total = coverage.get("total_nodes")
        parts = coverage.get("partitions")
        return (f"delegate: {coverage['nodes']}" + (f"/{total}" if total is not None else "")
                + " nodes" + (f", {parts} parts" if parts else ""))
    if plan:
        return f"ANE {plan['neural_engine']}/{plan['operations']} ops"
    return None


def markdown_table(table_rows):
    """The rows as a Markdown table (`converters.report.markdown_table`); failed results
    listed below it."""
    ok = [r for r in table_rows if r["status"] == "ok"]
    lines = [_markdown_table(ok, COLUMNS)]
    failed = [r for r in table_rows if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed:"]
        lines += ["- " + md_text(f"{r['source']} / {r['device']} / {r['backend']} / "
                                 f"{r['label']}: {' / '.join(r['error'].split(chr(10)))[:300]}")
                  for r in failed]
    return "\n".join(lines) + "\n"


def placeable(table_rows, x="gmacs"):
    """The successful rows whose variant gives a position on axis `x` ("gmacs" or "top1")."""
    if x not in PLOT_AXES:
        raise ValueError(f"Plot axis must be one of {sorted(PLOT_AXES)}, got {x!r}")
    return [r for r in table_rows
            if r["status"] == "ok" and paper_value(r.get("variant"), PLOT_AXES[x][0])]


def plot(table_rows, path, x="gmacs", title=None):
    """Mean latency against the paper's GMACs (or top-1) per variant; writes a PNG.

    Rows without a known variant cannot be placed and are left out (they stay in the table).

    Raises:
        ValueError: unknown `x`, or no row has a variant to place.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, xlabel = PLOT_AXES[x]
    placed = placeable(table_rows, x)
    if not placed:
        raise ValueError("No result names a SwiftFormer variant (XS, S, L1, L3), so none can be "
                         "placed on the plot; name models VARIANT/FORMAT=PATH")
    parts = {id(r): (f"{r['source']}: {r['device']}",
                     r["backend"] + (f", {r['threads']} thread{'s' if r['threads'] > 1 else ''}"
                                     if r.get("threads") else ""),
                     r.get("format") or "") for r in placed}
    varying = [len({p[i] for p in parts.values()}) > 1 for i in range(3)]
    common = [p for p, v in zip(next(iter(parts.values())), varying) if p and not v]
    series = {}
    for row in placed:
        series.setdefault(parts[id(row)], []).append(row)
    colours = sorted({k[:2] for k in series})
    formats = sorted({k[2] for k in series})
    variants = [v for v in VARIANT_ORDER if any(r["variant"] == v for r in placed)]
    paper_xs = [paper_value(v, key) for v in variants]
    span = (max(paper_xs) - min(paper_xs)) or 1.0

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    handles = []
    for i, (name, points) in enumerate(sorted(series.items())):
        points = sorted(points, key=lambda r: paper_value(r["variant"], key))
        dodge = (i - (len(series) - 1) / 2) * 0.012 * span  # keeps the bars apart
        xs = [paper_value(r["variant"], key) + dodge for r in points]
        ys = [r["mean_ms"] for r in points]
        low = [y - r["min_ms"] if r.get("min_ms") is not None else 0.0
               for y, r in zip(ys, points)]
        high = [r["p90_ms"] - y if r.get("p90_ms") is not None else 0.0
                for y, r in zip(ys, points)]
        style = formats.index(name[2])
        label = " · ".join(p for p, v in zip(name, varying) if v and p) or " · ".join(common)
        handles.append(ax.errorbar(
            xs, ys, yerr=[[max(v, 0.0) for v in low], [max(v, 0.0) for v in high]],
            color=f"C{colours.index(name[:2]) % 10}", marker="osD^v<>Ph*X"[style % 11],
            linestyle=("-", "--", ":", "-.")[style % 4], capsize=3, linewidth=1.5,
            markersize=6, label=label))
    handles += ax.plot(paper_xs, [paper_value(v, "iphone_ms") for v in variants],
                       color="black", linestyle="none", marker="x", markersize=8,
                       label="paper: iPhone 14, Core ML")
    ax.set_xticks(paper_xs)
    ax.set_xticklabels([f"{v}\n{paper_value(v, key)}" for v in variants])
    ax.set_xlim(min(paper_xs) - 0.08 * span, max(paper_xs) + 0.08 * span)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("latency, ms (mean; bars: min to p90)")
    ys = [r["mean_ms"] for r in placed] + [paper_value(v, "iphone_ms") for v in variants]
    if max(ys) / max(min(ys), 1e-9) > 20:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    heading = title or "SwiftFormer inference latency, batch 1"
    ax.set_title(heading + ("\n" + " · ".join(common) if common else ""), fontsize=10)
    # Below the axes, so that long device names never squeeze the plot; savefig's tight
    # bounding box grows the image to hold it.
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8,
              frameon=False, ncol=1 if max(len(h.get_label()) for h in handles) > 45 else 2)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return os.fspath(path)


def write_outputs(docs, prefix, x="gmacs", plot_title=None):
    """Writes ``PREFIX.json`` (``{"schema", "reports"}``), ``PREFIX.md`` and, when any result
    names a variant, ``PREFIX.png``. Returns {"json", "markdown", "plot" (or None), "table"}."""
    docs = [validate(doc, f"report {i}") for i, doc in enumerate(docs)]
    if not docs:
        raise ValueError("No reports to merge")
    check_prefix(prefix)
    table_rows = rows(docs)
    placeable(table_rows, x)  # an unknown axis fails before anything is written
    table = markdown_table(table_rows)
    paths = {"table": table}
    paths["json"] = write_text(f"{prefix}.json",
                               json.dumps({"schema": SCHEMA, "reports": docs}, indent=1) + "\n")
    devices = sorted({f"{d['source']}: {d['device']['name']} ({d['device'].get('os', '?')}, "
                      f"{d['runtime']['name']} {d['runtime'].get('version') or ''})".rstrip()
                      for d in docs})
    header = "Measured on:\n" + "".join(f"- {md_text(d)}\n" for d in devices) + "\n"
    paths["markdown"] = write_text(f"{prefix}.md", header + table)
    paths["plot"] = (plot(table_rows, f"{prefix}.png", x, plot_title)
                     if placeable(table_rows, x) else None)
    return paths
