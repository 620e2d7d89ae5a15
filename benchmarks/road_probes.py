"""Bad inputs, clashes and interruptions across the four commands, as a careless user makes them.

    python -m benchmarks.road_probes [--only convert,eval] [--section]

Each probe runs a ``swiftformer-*`` command in a fresh process on files made here, and is
judged by what the user sees: a clean error (non-zero exit, one line naming the problem, no
traceback, no third-party log noise), a traceback, a silent acceptance of bad input, or a lost
file (a file or folder the user had is gone or changed). Probes expected to succeed must exit 0.
Prints a table and the counts; ``--section`` also writes a dated section of
``benchmarks/results.md``.
"""

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

COMMANDS = {"convert": "converters.cli", "eval": "converters.evaluate",
            "train": "keras_swiftformer.training.cli", "bench": "android_bench.cli"}
#: The name each command gives itself in its messages (its own warnings are not noise).
_PROGS = {"convert": "swiftformer-convert", "eval": "swiftformer-eval",
          "train": "swiftformer-train", "bench": "swiftformer-bench"}


@dataclasses.dataclass
class Probe:
    """One command line; `expect` "error" or "ok"; `guard`: paths that must survive unchanged."""

    name: str
    command: str
    args: list
    expect: str = "error"
    guard: tuple = ()
    check: object = None  # callable(workdir) -> None or what is wrong


def _png(path, width, height):
    from PIL import Image

    Image.new("RGB", (width, height), (120, 60, 30)).save(path)


def make_fixtures(root):
    """Files the probes use, made once: a SwiftFormer .keras (+ model.json), a Sequential
    .keras, a headless SwiftFormer, checkpoints good and bad, photo folders good and bad, a
    non-classifier .tflite, labels and config files."""
    import keras
    import numpy as np
    import tensorflow as tf
    from safetensors.numpy import save_file

    from keras_swiftformer import SwiftFormer

    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    model = SwiftFormer("XS", input_shape=(64, 64, 3), classes=3)
    model.save(j("xs3.keras"))
    os.makedirs(j("trained"))
    model.save(j("trained", "model.keras"))
    with open(j("trained", "model.json"), "w") as f:
        json.dump({"classes": ["cat", "dog", "cow"], "input_size": [64, 64]}, f)
    SwiftFormer("XS", input_shape=(64, 64, 3), include_top=False).save(j("headless.keras"))
    seq = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    seq.save(j("sequential.keras"))
    converter = tf.lite.TFLiteConverter.from_keras_model(seq)
    with open(j("dense.tflite"), "wb") as f:
        f.write(converter.convert())
    save_file({"foo.weight": np.zeros((3, 3), np.float32)}, j("foreign.safetensors"))
    with open(j("corrupt.pth"), "wb") as f:
        f.write(os.urandom(4096))
    with open(j("truncated.keras"), "wb") as f, open(j("xs3.keras"), "rb") as g:
        f.write(g.read()[:5000])
    with open(j("notes.txt"), "w") as f:
        f.write("not a model\n")
    photos = j("photos")
    os.makedirs(photos)
    for i in range(6):
        _png(os.path.join(photos, f"{i}.png"), 80 + i, 70)
    for name, make in (("bad_photos", lambda d: open(os.path.join(d, "x.jpg"), "wb").write(
            b"\xff\xd8\xff\xe0" + os.urandom(2000) + b"\xff\xd9")),
            ("bomb_photos", lambda d: _png(os.path.join(d, "wide.png"), 40000, 1))):
        os.makedirs(j(name))
        shutil.copytree(photos, j(name), dirs_exist_ok=True)
        make(j(name))
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = j("data", split, cls)
            os.makedirs(d)
            for i in range(2):
                _png(os.path.join(d, f"{i}.png"), 72, 64)
    shutil.copytree(j("data"), j("data_garbage"))
    with open(j("data_garbage", "train", "cat", "9.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0" + os.urandom(3000) + b"\xff\xd9")
    shutil.copytree(j("data"), j("data_newline"))
    os.rename(j("data_newline", "train", "dog"), j("data_newline", "train", "do\ng"))
    labels = {"labels_newline.txt": "a\nb\nc\nd\n", "labels_dup.txt": "a\na\nb\n",
              "labels_two.txt": "a\nb\n", "labels_ok.txt": "x\ny\nz\n", "empty.txt": "",
              "bad.yaml": "epochs: [1,\n", "bad.json": "{\"epochs\": ", "list.yaml": "- 1\n- 2\n",
              "tag.yaml": "epochs: !!python/object/apply:os.system ['true']\n",
              "acc_bad.json": "{not json", "bench_bad.json": "[1, 2]"}
    for name, text in labels.items():
        with open(j(name), "w") as f:
            f.write(text)
    with open(j("binary_labels.txt"), "wb") as f:
        f.write(b"\xff\xfe\x00bad")
    os.makedirs(j("emptydir"))
    os.makedirs(j("existing_dir"))
    with open(j("existing_dir", "keep.txt"), "w") as f:
        f.write("user data\n")
    os.makedirs(j("existing.keras"))
    with open(j("existing.keras", "keep.txt"), "w") as f:
        f.write("user data\n")
    with open(j("afile"), "w") as f:
        f.write("a file\n")
    return root


def probes(timm_file):
    """The probe list; `timm_file`: a valid timm-layout checkpoint for import probes."""
    c, e, t, b = "convert", "eval", "train", "bench"
    fast = ["--formats", "float32", "--input-size", "64", "--latency-runs", "0",
            "--gpu-images", "0"]
    data = ["--recipe", "finetune", "--data", "data", "--input-size", "64", "--batch-size", "2",
            "--epochs", "1", "--steps-per-epoch", "1", "--variant", "XS"]
    p = [
        Probe("convert: unknown format", c, ["--formats", "bogus"]),
        Probe("convert: empty format list", c, ["--formats", ","]),
        Probe("convert: one bad format among good", c, ["--formats", "float32,bogus"]),
        Probe("convert: missing checkpoint", c, ["--checkpoint", "missing.pth"]),
        Probe("convert: corrupt .pth", c, ["--checkpoint", "corrupt.pth"] + fast),
        Probe("convert: foreign safetensors", c, ["--checkpoint", "foreign.safetensors"] + fast),
        Probe("convert: Sequential .keras", c, ["--checkpoint", "sequential.keras"] + fast),
        Probe("convert: headless .keras", c, ["--checkpoint", "headless.keras"] + fast),
        Probe("convert: truncated .keras", c, ["--checkpoint", "truncated.keras"] + fast),
        Probe("convert: text file as checkpoint", c, ["--checkpoint", "notes.txt"] + fast),
        Probe("convert: empty folder as checkpoint", c, ["--checkpoint", "emptydir"] + fast),
        Probe("convert: tag offline, not cached", c, ["--checkpoint", "imagenet"] + fast),
        Probe("convert: hf:// offline, not cached", c, ["--checkpoint", "hf://nobody/nothing"]
              + fast),
        Probe("convert: malformed hf://", c, ["--checkpoint", "hf://"] + fast),
        Probe("convert: unknown variant", c, ["--variant", "Q"] + fast),
        Probe("convert: labels with a newline-separated extra", c,
              ["--labels", "labels_newline.txt"] + fast),
        Probe("convert: duplicate labels", c, ["--checkpoint", "trained/model.keras",
                                               "--labels", "labels_dup.txt"] + fast),
        Probe("convert: label count differs", c, ["--checkpoint", "trained/model.keras",
                                                  "--labels", "labels_two.txt"] + fast),
        Probe("convert: empty labels file", c, ["--labels", "empty.txt"] + fast),
        Probe("convert: binary labels file", c, ["--labels", "binary_labels.txt"] + fast),
        Probe("convert: missing labels file", c, ["--labels", "nolabels.txt"] + fast),
        Probe("convert: missing images folder", c, ["--images", "nophotos"] + fast),
        Probe("convert: images is a file", c, ["--images", "afile"] + fast),
        Probe("convert: empty images folder", c, ["--images", "emptydir"] + fast),
        Probe("convert: corrupt photo", c, ["--images", "bad_photos"] + fast),
        Probe("convert: a 1x40000 PNG loads at a photo's cost", c,
              ["--images", "bomb_photos", "--output-dir", "out_strip"] + fast, expect="ok"),
        Probe("convert: input size 100000", c, ["--input-size", "100000", "--formats",
                                                "float32"]),
        Probe("convert: input size 0", c, ["--input-size", "0"]),
        Probe("convert: input size 16", c, ["--input-size", "16"]),
        Probe("convert: input size text", c, ["--input-size", "big"]),
        Probe("convert: input size 3 dims", c, ["--input-size", "64x64x3"]),
        Probe("convert: output dir is a file", c, ["--output-dir", "afile"] + fast,
              guard=("afile",)),
        Probe("convert: output dir under a file", c, ["--output-dir", "afile/out"] + fast,
              guard=("afile",)),
        Probe("convert: zero calibration images", c, ["--num-calibration", "0"] + fast),
        Probe("convert: negative evaluation images", c, ["--num-evaluation", "-3"] + fast),
        Probe("convert: negative latency runs", c, ["--latency-runs", "-1", "--formats",
                                                    "float32"]),
        Probe("convert: negative GPU images", c, ["--gpu-images", "-1", "--formats",
                                                  "float32"]),
        Probe("convert: bad on-bad-image", c, ["--on-bad-image", "ignore"] + fast),
        Probe("convert: bad token weighting", c, ["--token-weighting", "softmax"] + fast),
        Probe("convert: bad prune spec", c, ["--prune", "3:4"] + fast),
        Probe("convert: cluster 1", c, ["--cluster", "1"] + fast),
        Probe("convert: qat with softmax", c, ["--qat", "--softmax"] + fast),
        Probe("convert: real checkpoint, no images, int8", c,
              ["--checkpoint", "trained/model.keras", "--formats", "int8", "--latency-runs",
               "0", "--gpu-images", "0"]),
        Probe("convert: unknown option", c, ["--frobnicate"]),
        Probe("convert: import into an existing folder", c,
              ["import", timm_file, "existing.keras"], guard=("existing.keras/keep.txt",)),
        Probe("convert: import a missing file", c, ["import", "missing.pth", "out.keras"]),
        Probe("convert: import a corrupt file", c, ["import", "corrupt.pth", "out.keras"]),
        Probe("convert: import to a path under a file", c,
              ["import", timm_file, "afile/out.keras"], guard=("afile",)),
        Probe("convert: report on a missing folder", c,
              ["report", "nofolder", "--accuracy", "acc_bad.json"]),
        Probe("convert: report with bad accuracy JSON", c,
              ["report", "existing_dir", "--accuracy", "acc_bad.json"],
              guard=("existing_dir/keep.txt",)),
        Probe("convert: report with no --accuracy", c, ["report", "existing_dir"],
              guard=("existing_dir/keep.txt",)),
        Probe("convert: --help is quick and quiet", c, ["--help"], expect="ok"),
        Probe("convert: the first command, small", c, fast + ["--output-dir", "out_ok"],
              expect="ok"),
        Probe("convert: a trained .keras at its own size", c,
              ["--checkpoint", "trained/model.keras", "--formats", "float32",
               "--latency-runs", "0", "--gpu-images", "0", "--images", "photos",
               "--output-dir", "out_trained"], expect="ok", check=_check_trained_size),
        Probe("eval: missing model", e, ["missing.tflite", "--images", "photos"]),
        Probe("eval: Sequential .keras", e, ["sequential.keras", "--images", "data/val"]),
        Probe("eval: non-classifier .tflite", e, ["dense.tflite", "--images", "data/val"]),
        Probe("eval: text file as model", e, ["notes.txt", "--images", "data/val"]),
        Probe("eval: truncated .keras", e, ["truncated.keras", "--images", "data/val"]),
        Probe("eval: corrupt photo", e, ["trained/model.keras", "--images", "data_garbage/train"]),
        Probe("eval: missing images", e, ["trained/model.keras", "--images", "nophotos"]),
        Probe("eval: images is a file", e, ["trained/model.keras", "--images", "afile"]),
        Probe("eval: empty images folder", e, ["trained/model.keras", "--images", "emptydir"]),
        Probe("eval: batch size 0", e, ["trained/model.keras", "--images", "data/val",
                                         "--batch-size", "0"]),
        Probe("eval: negative limit", e, ["trained/model.keras", "--images", "data/val",
                                           "--limit", "-1"]),
        Probe("eval: threads 0", e, ["trained/model.keras", "--images", "data/val",
                                      "--threads", "0"]),
        Probe("eval: crop 2", e, ["trained/model.keras", "--images", "data/val",
                                   "--crop-pct", "2"]),
        Probe("eval: input size 100000", e, ["trained/model.keras", "--images", "data/val",
                                              "--input-size", "100000"]),
        Probe("eval: bad classes JSON", e, ["trained/model.keras", "--images", "data/val",
                                             "--classes", "acc_bad.json"]),
        Probe("eval: missing classes file", e, ["trained/model.keras", "--images", "data/val",
                                                 "--classes", "nothing.json"]),
        Probe("eval: --json onto an existing folder", e,
              ["trained/model.keras", "--images", "data/val", "--json", "existing_dir"],
              guard=("existing_dir/keep.txt",)),
        Probe("eval: --json under a file", e, ["trained/model.keras", "--images", "data/val",
                                                "--json", "afile/acc.json"], guard=("afile",)),
        Probe("eval: unlabelled photos, a 1x40000 PNG among them", e,
              ["trained/model.keras", "--images", "bomb_photos"]),
        Probe("eval: folders that match no class", e, ["trained/model.keras", "--images",
                                                        "data_newline/train"]),
        Probe("eval: no --images", e, ["trained/model.keras"]),
        Probe("eval: --help", e, ["--help"], expect="ok"),
        Probe("eval: a trained .keras on its folders", e,
              ["trained/model.keras", "--images", "data/val", "--classes", "trained/model.json"],
              expect="ok"),
        Probe("train: bad YAML config", t, ["--config", "bad.yaml"]),
        Probe("train: bad JSON config", t, ["--config", "bad.json"]),
        Probe("train: config that is a list", t, ["--config", "list.yaml"]),
        Probe("train: config with a python tag", t, ["--config", "tag.yaml"]),
        Probe("train: missing config", t, ["--config", "nothing.yaml"]),
        Probe("train: missing data", t, ["--data", "nodata", "--output-dir", "run1"]),
        Probe("train: data is a file", t, ["--data", "afile", "--output-dir", "run1"]),
        Probe("train: output dir is a file", t, data + ["--output-dir", "afile"],
              guard=("afile",)),
        Probe("train: output dir under a file", t, data + ["--output-dir", "afile/run"],
              guard=("afile",)),
        Probe("train: batch size 0", t, ["--recipe", "finetune", "--data", "data",
                                          "--batch-size", "0", "--output-dir", "run1"]),
        Probe("train: negative lr", t, ["--recipe", "finetune", "--data", "data", "--lr", "-1",
                                         "--output-dir", "run1"]),
        Probe("train: input size 100000", t, ["--recipe", "finetune", "--data", "data",
                                               "--input-size", "100000", "--output-dir",
                                               "run1"]),
        Probe("train: unknown variant", t, ["--recipe", "finetune", "--data", "data",
                                             "--variant", "Q", "--output-dir", "run1"]),
        Probe("train: epochs 0", t, ["--recipe", "finetune", "--data", "data", "--epochs", "0",
                                      "--output-dir", "run1"]),
        Probe("train: missing finetune checkpoint", t, data + ["--finetune", "missing.pth",
                                                               "--output-dir", "run1"]),
        Probe("train: finetune hf:// offline", t, data + ["--finetune", "hf://nobody/nothing",
                                                          "--output-dir", "run1"]),
        Probe("train: finetune from a Sequential", t, data + ["--finetune", "sequential.keras",
                                                              "--output-dir", "run1"]),
        Probe("train: missing teacher", t, data + ["--distillation", "hard", "--teacher",
                                                   "missing.pth", "--output-dir", "run1"]),
        Probe("train: class folder with a newline", t, ["--recipe", "finetune", "--data",
                                                         "data_newline", "--output-dir",
                                                         "run1", "--input-size", "64"]),
        Probe("train: garbage JPEG body", t, ["--recipe", "finetune", "--data", "data_garbage",
                                               "--output-dir", "run1", "--input-size", "64",
                                               "--check-images", "header"]),
        Probe("train: epochs 1 resolves", t, ["--recipe", "finetune", "--data", "data",
                                               "--epochs", "1", "--output-dir", "run",
                                               "--print-config"], expect="ok"),
        Probe("train: --help", t, ["--help"], expect="ok"),
        Probe("bench: host, missing model", b, ["host", "missing.tflite"]),
        Probe("bench: host, not a .tflite", b, ["host", "notes.txt"]),
        Probe("bench: host, corrupt .tflite", b, ["host", "corrupt.pth"]),
        Probe("bench: host, runs 0", b, ["host", "dense.tflite", "--runs", "0"]),
        Probe("bench: host, threads 0", b, ["host", "dense.tflite", "--threads", "0"]),
        Probe("bench: host, negative warm-up", b, ["host", "dense.tflite", "--warmup", "-1"]),
        Probe("bench: host, output is a folder", b, ["host", "dense.tflite", "--output",
                                                     "existing_dir"],
              guard=("existing_dir/keep.txt",)),
        Probe("bench: report, missing JSON", b, ["report", "nothing.json"]),
        Probe("bench: report, bad JSON", b, ["report", "acc_bad.json"]),
        Probe("bench: report, JSON of the wrong shape", b, ["report", "bench_bad.json"]),
        Probe("bench: adb without adb", b, ["adb", "dense.tflite", "--benchmark-binary",
                                            "nothing"]),
        Probe("bench: app without adb", b, ["app", "dense.tflite"]),
        Probe("bench: flow, missing checkpoint", b, ["flow", "--variants", "XS", "--checkpoint",
                                                     "missing.pth"]),
        Probe("bench: flow, unknown variant", b, ["flow", "--variants", "Q"]),
        Probe("bench: flow, unknown format", b, ["flow", "--variants", "XS", "--formats",
                                                 "bogus"]),
        Probe("bench: flow, tag offline", b, ["flow", "--variants", "XS", "--checkpoint",
                                              "imagenet", "--formats", "float32"]),
        Probe("bench: unknown subcommand", b, ["frobnicate"]),
        Probe("bench: schema", b, ["schema"], expect="ok"),
        Probe("bench: --help", b, ["--help"], expect="ok"),
    ]
    return p


def _check_trained_size(workdir):
    """The trained model's 64 px must reach the exported file."""
    from ai_edge_litert.interpreter import Interpreter

    path = os.path.join(workdir, "out_trained", "swiftformer_xs_float32.tflite")
    if not os.path.exists(path):
        return "no float32 file"
    shape = list(Interpreter(model_path=path).get_input_details()[0]["shape"])
    return None if shape[1:3] == [64, 64] else f"exported at {shape[1:3]}, trained at 64"


def _snapshot(workdir, guard):
    state = {}
    for rel in guard:
        path = os.path.join(workdir, rel)
        state[rel] = open(path, "rb").read() if os.path.isfile(path) else os.path.isdir(path)
    return state


def run_probe(probe, workdir, timeout):
    """(verdict, detail, seconds) for one probe run in `workdir`."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore",
               KERAS_HOME=os.path.join(workdir, ".keras-home"),
               HF_HOME=os.path.join(workdir, ".hf-home"))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command must quiet the libraries itself
    before = _snapshot(workdir, probe.guard)
    start = time.time()
    try:
        done = subprocess.run([sys.executable, "-m", COMMANDS[probe.command], *probe.args],
                              cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"over {timeout} s", time.time() - start
    seconds = time.time() - start
    err_lines = [line for line in done.stderr.splitlines() if line.strip()]
    lost = [rel for rel, value in before.items()
            if _snapshot(workdir, (rel,))[rel] != value]
    if lost:
        return "LOST DATA", ", ".join(lost), seconds
    if "Traceback" in done.stderr:
        return "traceback", err_lines[-1][:120] if err_lines else "", seconds
    if probe.expect == "ok":
        if done.returncode != 0:
            return "failed", (err_lines[-1] if err_lines else "")[:120], seconds
        problem = probe.check(workdir) if probe.check else None
        if problem:
            return "WRONG", problem, seconds
        noise = [line for line in err_lines if _is_noise(line)]
        return ("noisy", noise[0][:120], seconds) if noise else ("ok", "", seconds)
    if done.returncode == 0:
        return "SILENT", "exit 0 on bad input", seconds
    own_warning = f"{_PROGS[probe.command]}: warning:"
    message = [line for line in err_lines
               if not line.startswith(("usage:", " ", own_warning))]
    if len(message) > 1:
        return "noisy", " | ".join(message)[:160], seconds
    return "clean", (message[0] if message else "")[:140], seconds


def _is_noise(line):
    return any(s in line for s in ("I0000", "W0000", "oneDNN", "cuda", "absl::", "E0000",
                                   "tensorflow/", "WARNING: All log"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="commands to probe (convert,eval,train,bench)")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--section", action="store_true", help="write a results section")
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="road-probes-")
    make_fixtures(workdir)
    timm_file = _timm_checkpoint(workdir)
    selected = [p for p in probes(timm_file)
                if not args.only or p.command in args.only.split(",")]
    rows = []
    for i, probe in enumerate(selected, 1):
        verdict, detail, seconds = run_probe(probe, workdir, args.timeout)
        rows.append((probe.name, verdict, detail, seconds))
        print(f"[{i}/{len(selected)}] {verdict:<9} {seconds:5.1f} s  {probe.name}: {detail}",
              flush=True)
    counts = {}
    for _, verdict, _, _ in rows:
        counts[verdict] = counts.get(verdict, 0) + 1
    table = ["| probe | verdict | what the user saw |", "|---|---|---|"]
    table += [f"| {n} | {v} | {d.replace('|', '/')} |" for n, v, d, _ in rows]
    summary = ", ".join(f"{v}: {k}" for v, k in sorted(counts.items()))
    print("\n".join(table))
    print(f"\n{len(rows)} probes: {summary}")
    if args.section:
        from benchmarks.results import write_section

        write_section("road-probes", "The road's probes: bad input across the four commands",
                      "python -m benchmarks.road_probes --section",
                      f"{len(rows)} probes: {summary}.\n\n" + "\n".join(table))
    shutil.rmtree(workdir, ignore_errors=True)
    bad = sum(k for v, k in counts.items() if v not in ("clean", "ok"))
    return 1 if bad else 0


def _timm_checkpoint(workdir):
    """A timm-layout XS checkpoint (.safetensors) of a fresh model's weights."""
    from safetensors.numpy import save_file

    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.mapping import model_tensors

    path = os.path.join(workdir, "timm_xs.safetensors")
    save_file(model_tensors(SwiftFormer("XS", input_shape=(64, 64, 3))), path)
    return os.path.basename(path)


if __name__ == "__main__":
    sys.exit(main())
