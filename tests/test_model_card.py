"""converters.model_card: MODEL_CARD.md from a typed report; the file to ship per runtime
(converters.report.choose_files); user text escaped for Markdown and HTML."""

import dataclasses
import html.parser
import os

import pytest
import yaml
from markdown_it import MarkdownIt

from converters import results as R
from converters.model_card import CARD_NAME, model_card, paper_bibtex, write_model_card
from converters.output import OutputFolder
from converters.report import TARGETS, choose_files, md_code, md_text

INFO = {"checkpoint": "/data/swiftformer_xs", "source": "hf://timm/swiftformer_xs.dist_in1k@"
        + "a" * 40, "hub_repo": "timm/swiftformer_xs.dist_in1k", "hub_revision": "a" * 40,
        "format_in": "timm", "random_weights": False, "crop_pct": 0.95,
        "crop_mode": "center", "interpolation": "bicubic",
        "variant": "XS", "token_weighting": "l2", "input_shape": [224, 224, 3],
        "calibration_images": 24, "evaluation_images": 40, "image_source": "photos",
        "synthetic_images": False, "versions": "keras 3.15.1, tensorflow 2.21.0",
        "latency": "LiteRT + XNNPACK, 1 thread", "license": "Apache-2.0"}


def row(fmt, file, sqnr, top1=1.0, ms=None, size=1_000_000, **extra):
    """A flat pipeline row (as the pipeline builds them today) of a measured format."""
    return {"format": fmt, "file": file, "graph": "folded", "size_bytes": size,
            "sqnr_db": sqnr, "top1_agreement": top1, "evaluation_images": 40,
            **({"latency_ms": ms} if ms is not None else {}), **extra}


ROWS = [
    row("float32", "swiftformer_xs_float32.tflite", 95.2, ms=7.5, size=12_800_000,
        max_abs_error=2e-5, mediapipe=True, gpu="full", gpu_ms=2.1, gpu_sqnr_db=60.0),
    row("float16", "swiftformer_xs_float16.tflite", 70.0, ms=7.6, size=6_400_000,
        mediapipe=True, gpu="full", gpu_ms=1.9, gpu_sqnr_db=59.0),
    row("int8", "swiftformer_xs_int8.tflite", 33.0, top1=0.95, ms=3.1, size=3_500_000,
        mediapipe=False, mediapipe_reason="int8 input", gpu="partial", gpu_sqnr_db=30.0),
    row("uint8", "swiftformer_xs_uint8.tflite", 32.0, top1=0.95, ms=3.2, size=3_500_000,
        mediapipe=True, gpu="full", gpu_ms=2.5, gpu_sqnr_db=27.0),
    row("dynamic_int8", "swiftformer_xs_dynamic_int8.tflite", 40.0, ms=80.0, mediapipe=True,
        latency_ratio=10.7, slow=True),
    row("coreml_float16", "swiftformer_xs_coreml_float16.mlpackage", 60.0, size=6_400_000,
        coreml_ops={"count": 300, "transposes": 2}),
    row("coreml_int8", "swiftformer_xs_coreml_int8.mlpackage", 31.0, size=3_300_000,
        coreml_ops={"count": 310, "transposes": 2}),
    {"format": "coreml_w8a8", "file": "swiftformer_xs_coreml_w8a8.mlpackage",
     "error": "ValueError: folded Keras weights not found"},
]
LABELS = [f"class_{i}" for i in range(12)]


def report(info=INFO, rows=ROWS, labels=LABELS):
    return R.as_report(info, rows, labels)


def front_matter(card):
    assert card.startswith("---\n")
    end = card.index("\n---\n", 4)
    return yaml.safe_load(card[4:end]), card[end + 5:]


def section(body, title):
    start = body.index(f"## {title}")
    return body[start:body.index("\n## ", start + 3)]


def test_card_has_every_section_and_valid_front_matter():
    card = model_card(report())
    meta, body = front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "keras"
    assert meta["base_model"] == "timm/swiftformer_xs.dist_in1k"
    assert {"tflite", "coreml", "mediapipe"} <= set(meta["tags"]) and "datasets" not in meta
    for title in ("# SwiftFormer-XS", "## Model", "## Weights", "## Preprocessing", "## Labels",
                  "## Which file to ship", "## Fidelity, latency and accuracy", "## Files",
                  "## How to run", "## Citation"):
        assert title in body
    assert "bicubic resize of the shorter side to 235" in body  # int(224 / 0.95)
    assert "12 classes" in body and "`class_0`" in body and "(2 more)" in body
    assert "@InProceedings{Shaker_2023_ICCV" in body and paper_bibtex() in body


def test_file_to_ship_per_runtime_from_the_measured_rows():
    choices = {c.target: c for c in choose_files(report())}
    # CPU: the fastest that keeps the floor and opens in MediaPipe (int8 has an int8 input;
    # the slow row runs at 10x float32's time)
    assert choices[TARGETS[0]].file == "swiftformer_xs_uint8.tflite"
    assert "fastest" in choices[TARGETS[0]].reason and "3.20 ms" in choices[TARGETS[0]].reason
    # GPU: fully accelerated and fastest there; uint8 loses on the GPU SQNR (27 dB < 30)
    assert choices[TARGETS[1]].file == "swiftformer_xs_float16.tflite"
    # Core ML: the smallest above the floor; the failed w8a8 is never named
    assert choices[TARGETS[2]].file == "swiftformer_xs_coreml_int8.mlpackage"
    assert "smallest" in choices[TARGETS[2]].reason
    body = front_matter(model_card(report()))[1]
    ship = section(body, "Which file to ship")
    assert all(c.file in ship for c in choices.values())
    usage = section(body, "How to run")
    assert 'setModelAssetPath("swiftformer_xs_uint8.tflite")' in usage
    assert '"swiftformer_xs_coreml_int8", withExtension: "mlmodelc"' in usage
    assert "float32.tflite" not in usage


def test_nothing_meets_the_floor_says_so_and_a_software_gpu_is_ranked_by_size():
    rows = [row("int8", "a_int8.tflite", 12.0, top1=0.5, ms=3.0, mediapipe=True),
            row("float16", "a_float16.tflite", 18.0, top1=0.7, ms=7.0, mediapipe=True)]
    (cpu,) = choose_files(report(rows=rows))
    assert cpu.file == "a_float16.tflite" and "no file keeps SQNR >= 30 dB" in cpu.reason
    rows = [row("float32", "a_float32.tflite", 95.0, size=12_000_000, gpu="full", gpu_ms=900.0,
                gpu_software=True, gpu_sqnr_db=90.0),
            row("float16", "a_float16.tflite", 70.0, size=6_000_000, gpu="full", gpu_ms=950.0,
                gpu_software=True, gpu_sqnr_db=60.0)]
    gpu = next(c for c in choose_files(report(rows=rows)) if c.target == TARGETS[1])
    assert gpu.file == "a_float16.tflite" and "smallest" in gpu.reason


@pytest.mark.parametrize("gain, chosen", [(0.5, "swiftformer_xs_int8.tflite"),
                                          (3.0, "qat_int8.tflite")])
def test_qat_is_preferred_only_when_its_row_beats_int8(gain, chosen):
    # the QAT file is a little slower here: it wins when it pays in fidelity, not otherwise
    qat = row("qat_int8", "qat_int8.tflite", 33.0 + gain, top1=0.95, ms=3.3, mediapipe=True,
              start_sqnr_db=33.0, start_top1_agreement=0.95, steps=10, baseline="int8")
    rows = [r for r in ROWS if r["format"] != "int8"] + [
        dict(ROWS[2], mediapipe=True), qat]
    cpu = choose_files(report(rows=rows))[0]
    assert cpu.file == chosen
    assert ("beats the post-training int8 it started from by 3.0 dB" in cpu.reason) == (gain > 1)


def test_accuracy_reaches_the_card():
    rep = report()
    rows = [dataclasses.replace(r, accuracy=R.Accuracy(0.75, 0.92, 500, "imagenet-val"))
            if r.format == "uint8" else r for r in rep.formats]
    info = dataclasses.replace(rep.info, accuracy=R.Accuracy(0.7812, 0.9401, 500, "val"))
    body = front_matter(model_card(dataclasses.replace(rep, formats=rows, info=info)))[1]
    table = section(body, "Fidelity, latency and accuracy")
    assert "top-1 %" in table and "top-5 %" in table and "| 75.00 | 92.00 |" in table
    assert "top-1 78.12 %, top-5 94.01 % on 500 labelled images of val" in table


class _Tags(html.parser.HTMLParser):
    """Every tag and attribute in rendered HTML."""

    def __init__(self):
        super().__init__()
        self.tags, self.attributes = set(), set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


EVIL = "<img src=x onerror=alert(1)>"


def test_user_text_is_escaped_for_markdown_and_html():
    info = {**INFO, "license": f"<b onmouseover=alert(1)>MIT</b> `x` {EVIL}",
            "source": f"hf://org/repo{EVIL}", "checkpoint": f"ckpt {EVIL}",
            "hub_repo": f"org/repo{EVIL}",
            "image_source": f"photos {EVIL} *bold* [link](javascript:x)",
            "versions": f"keras `{EVIL}`", "trained_from": f"``{EVIL}"}
    labels = [EVIL, f"a`b{EVIL}", "``", "<script>alert(1)</script>", "new\nline", "`"] + LABELS
    rows = ROWS + [{"format": f"bad{EVIL}", "error": f"Error: {EVIL} | pipe"}]
    card = model_card(report(info, rows, labels))
    meta, body = front_matter(card)
    assert meta["base_model"] == f"org/repo{EVIL}"  # the YAML value is the text itself...
    assert "<" not in card[:card.index("\n---\n", 4)]  # ...written with \u escapes
    rendered = MarkdownIt("commonmark").enable("table").render(body)
    found = _Tags()
    found.feed(rendered)
    assert not found.tags & {"img", "script", "b"}
    assert not found.attributes - {"href", "class"}
    assert "javascript:" not in " ".join(found.attributes)
    assert EVIL.replace("<", "&lt;").replace(">", "&gt;") in rendered
    for label in labels[:4]:  # each label stays whole inside its own code span
        escaped = label.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert f"<code>{escaped}</code>" in rendered
    assert "<code>new\\u000aline</code>" in rendered


def test_md_helpers():
    assert md_code("a`b") == "``a`b``" and md_code("`") == "`` ` ``"
    assert md_text("a|b*c<d") == "a\\|b\\*c\\<d" and md_text("x\ny") == "x\\\\u000ay"
    rendered = MarkdownIt("commonmark").render(md_text("_a_ **b** <i>c</i> &amp; [d](e)"))
    assert rendered == "<p>_a_ **b** &lt;i&gt;c&lt;/i&gt; &amp;amp; [d](e)</p>\n"


def test_random_weights_say_so_and_imagenet_labels_by_default():
    info = {"checkpoint": "none (random weights)", "random_weights": True, "crop_pct": 0.875,
            "crop_mode": "center", "interpolation": "bicubic",
            "variant": "XS", "input_shape": [256, 320, 3], "synthetic_images": True}
    rows = [{"format": "float32", "file": "swiftformer_xs_float32.tflite"}]  # no metrics
    meta, body = front_matter(model_card(report(info, rows, None)))
    assert "random-weights" in meta["tags"] and "datasets" not in meta
    assert "**This is not a trained model.**" in body and "Latency: not measured" in body
    assert "1000 classes" in body and "`tench`" in body and "imagenet_classes.tsv" in body
    assert "256x320" in body and "resize of the shorter side to 292" in body  # int(256/0.875)
    assert "VNCoreMLRequest" not in body  # no .mlpackage among the files


def test_hugging_face_format_is_a_plain_resize_and_unknown_licence_is_other():
    info = {**INFO, "format_in": "hf", "crop_pct": 1.0, "crop_mode": "squash",
            "interpolation": "bilinear", "token_weighting": "ones"}
    del info["license"], info["source"], info["hub_repo"]
    meta, body = front_matter(model_card(report(info, ROWS[:1], [str(i) for i in range(1000)])))
    assert meta["license"] == "other" and "--license" in body
    assert meta["datasets"] == ["imagenet-1k"] and "base_model" not in meta
    assert "bilinear resize of the whole image to 224x224" in body and "no crop" in body
    assert "which is this resize" in body  # MediaPipe's stretch matches it


def test_card_lists_exactly_the_run_files_on_disk(tmp_path):
    out = tmp_path / "out"
    folder = OutputFolder(out)
    folder.start("test")
    for r in ROWS[:3] + ROWS[5:]:  # written; the failed w8a8 left a partial package behind
        name = r["file"]
        if name.endswith(".mlpackage"):
            os.makedirs(out / name)
            (out / name / "Manifest.json").write_text("{}")
        else:
            (out / name).write_bytes(b"x" * 10)
        folder.record(name)
    (out / "holiday.jpg").write_bytes(b"user's")  # not the project's: never listed
    path = write_model_card(out, report(), folder=folder)
    files = section(front_matter(open(path, encoding="utf-8").read())[1], "Files")
    listed = [line.split("`")[1] for line in files.splitlines() if line.startswith("- ")]
    assert listed == ["swiftformer_xs_float32.tflite", "swiftformer_xs_float16.tflite",
                      "swiftformer_xs_int8.tflite", "swiftformer_xs_coreml_float16.mlpackage",
                      "swiftformer_xs_coreml_int8.mlpackage", CARD_NAME]
    assert "uint8" not in files and "holiday" not in files and "w8a8" not in files


def test_write_model_card_is_atomic_and_refuses_other_rows(tmp_path):
    path = write_model_card(tmp_path / "out", INFO, ROWS, LABELS)
    assert path == os.path.join(tmp_path / "out", CARD_NAME)
    assert os.listdir(tmp_path / "out") == [CARD_NAME]
    with pytest.raises(ValueError, match="a report row is a FormatResult or a dict, not NoneType"):
        write_model_card(tmp_path / "bad", INFO, [None])
    with pytest.raises(TypeError, match="takes a converters.results.Report"):
        model_card(INFO)
    assert not os.path.exists(tmp_path / "bad")


def test_report_markdown_escapes_user_text_too():
    from converters.report import markdown_report

    info = {**INFO, "checkpoint": f"ckpt {EVIL}", "image_source": f"[x](javascript:y) {EVIL}",
            "skipped_images": f"a.jpg: {EVIL}"}
    rows = ROWS + [{"format": f"bad{EVIL}", "error": f"Error: {EVIL} | pipe"},
                   dict(ROWS[2], note=f"note {EVIL}", mediapipe_reason=f"why {EVIL}")]
    rendered = MarkdownIt("commonmark").enable("table").render(
        markdown_report(report(info, rows)))
    found = _Tags()
    found.feed(rendered)
    assert not found.tags & {"img", "script", "b", "a"} and not found.attributes
    assert rendered.count(EVIL.replace("<", "&lt;").replace(">", "&gt;")) >= 5
