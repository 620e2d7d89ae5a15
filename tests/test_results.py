"""converters.results: typed rows, report.json's schema and version, and every consumer reading
the same rows (converters.report, converters.model_card)."""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys

import jsonschema
import pytest

from converters import results as R
from converters.model_card import CARD_NAME
from converters.pipeline import ImageOptions, run_pipeline
from converters.model_card import update_accuracy, write_outputs
from converters.report import markdown_report


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny real conversion (random XS at 64 px, float32 and int8, timed on this host)."""
    out = tmp_path_factory.mktemp("converted")
    result = run_pipeline(formats="float32,int8", input_size=64, output_dir=str(out),
                          images=ImageOptions(num_calibration=2, num_evaluation=4),
                          latency_runs=2, gpu_images=0, progress=lambda line: None)
    return out, result


def _load_json(path):
    def strict(constant):
        raise ValueError(f"not strict JSON: {constant}")

    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_constant=strict)


def test_a_real_report_json_validates_against_the_schema(converted):
    out, result = converted
    doc = _load_json(out / R.REPORT_JSON)  # strict JSON: no Infinity/NaN literals
    jsonschema.validate(doc, R.json_schema())
    assert R.validate(doc) is doc and doc["version"] == R.SCHEMA_VERSION
    report = R.load(out)
    assert report.to_json() == doc  # round trip
    assert [r.format for r in report.formats] == ["float32", "int8"]
    float32, int8 = report.formats
    assert float32.fidelity.images == 4 and float32.fidelity.sqnr_db > int8.fidelity.sqnr_db
    assert int8.latency.median_ms > 0 and float32.latency.ratio == 1.0
    assert float32.mediapipe.ok and int8.litert.xnnpack_partitions >= 1
    assert report.info.variant == "XS" and report.info.input_shape == [64, 64, 3]
    assert report.info.random_weights and report.info.synthetic_images
    assert report.labels is None or report.labels == list(result["labels"])
    # the pipeline's own rows and info are the same record
    same = R.as_report(result["info"], result["rows"], result["labels"])
    assert same.formats == report.formats
    assert dataclasses.replace(same.info, created=report.info.created) == report.info


def test_every_consumer_reads_the_same_rows(converted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(converted[0], out)
    report = R.load(out)
    marked = dataclasses.replace(report.formats[1], note="a marker note",
                                 fidelity=dataclasses.replace(report.formats[1].fidelity,
                                                              sqnr_db=12.3456))
    report = dataclasses.replace(report, formats=[report.formats[0], marked])
    paths = write_outputs(out, report)
    again = R.load(paths["json"])
    assert again.formats == report.formats
    with open(paths["markdown"], encoding="utf-8") as f:
        markdown = f.read()
    with open(paths["model_card"], encoding="utf-8") as f:
        card = f.read()
    assert markdown == markdown_report(again) and "a marker note" in markdown
    assert "| 12.3 |" in markdown and "| 12.3 |" in card
    ship = [line for line in markdown.splitlines() if line.startswith("- **LiteRT")]
    assert ship and all(line in card for line in ship)  # the same choice, the same words
    assert os.path.getsize(paths["plot"]) > 0
    assert f"- `{CARD_NAME}`" in card and "- `swiftformer_xs_int8.tflite`" in card


def test_update_accuracy_updates_report_and_card(converted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(converted[0], out)
    accuracy = tmp_path / "acc.json"
    accuracy.write_text(json.dumps({"dataset": "val", "results": [
        {"model": str(out / "swiftformer_xs_int8.tflite"), "top1": 0.5, "top5": 0.75,
         "images": 8},
        {"model": "elsewhere/swiftformer_xs.keras", "top1": 0.625, "top5": 0.875,
         "images": 8}]}))
    paths = update_accuracy(str(out), str(accuracy))
    report = R.load(out)
    assert report.row("int8").accuracy == R.Accuracy(0.5, 0.75, 8, "val")
    assert report.row("float32").accuracy is None
    assert report.info.accuracy.top1 == 0.625
    for key in ("markdown", "model_card"):
        with open(paths[key], encoding="utf-8") as f:
            text = f.read()
        assert "top-1 %" in text and "| 50.00 | 75.00 |" in text
        assert "top-1 62.50 %, top-5 87.50 % on 8 labelled images of val" in text


@pytest.mark.parametrize("content, words", [
    ("{oops", "is not JSON"),
    (json.dumps({"results": [{"model": "other.tflite", "top1": 1, "top5": 1}]}),
     "None of the evaluated models"),
    (json.dumps([1, 2]), "is not swiftformer-eval --json output"),
])
def test_update_accuracy_bad_input_is_one_line(converted, tmp_path, content, words):
    out = tmp_path / "out"
    shutil.copytree(converted[0], out)
    before = (out / R.REPORT_JSON).read_bytes()
    accuracy = tmp_path / "acc.json"
    accuracy.write_text(content)
    with pytest.raises(ValueError, match=words) as err:
        update_accuracy(str(out), str(accuracy))
    assert "\n" not in str(err.value)
    assert (out / R.REPORT_JSON).read_bytes() == before
    with pytest.raises(R.ReportError, match="not found: give the output folder"):
        update_accuracy(str(tmp_path / "nowhere"), str(accuracy))


def _doc():
    row = R.FormatResult("int8", "m_int8.tflite", fidelity=R.Fidelity(sqnr_db=math.inf,
                                                                       top1_agreement=1.0))
    return R.Report(R.RunInfo(variant="XS"), [row], ["a", "b"]).to_json()


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(version=R.SCHEMA_VERSION + 1), "newer than this keras-swiftformer"),
    (lambda d: d.update(schema="swiftformer-bench/1"), "is not a swiftformer-convert report"),
    (lambda d: d.pop("version"), "no valid version"),
    (lambda d: d["formats"][0]["fidelity"].update(sqnr_db="loud"), r"sqnr_db must be a number"),
    (lambda d: d["formats"][0].update(speed=3), "speed is not a field of FormatResult"),
    (lambda d: d["formats"][0].update(gpu={"status": "maybe"}), "gpu.status must be one of"),
    (lambda d: d["formats"][0].pop("format"), "format is missing"),
    (lambda d: d.update(labels=["a", 3]), r"labels\[1\] must be a string"),
    (lambda d: d["info"].update(input_shape="64"), "input_shape must be an array"),
])
def test_validate_refuses_with_one_line(change, words, tmp_path):
    doc = _doc()
    change(doc)
    with pytest.raises(R.ReportError, match=words) as err:
        R.validate(doc)
    assert "\n" not in str(err.value)
    path = tmp_path / R.REPORT_JSON
    path.write_text(json.dumps(doc))
    with pytest.raises(R.ReportError, match=words):
        R.load(path)


def test_non_finite_numbers_stay_strict_json(tmp_path):
    report = R.Report.from_json(_doc())
    assert report.formats[0].fidelity.sqnr_db == math.inf
    R.save(report, tmp_path / R.REPORT_JSON)
    assert _load_json(tmp_path / R.REPORT_JSON)["formats"][0]["fidelity"]["sqnr_db"] == "inf"
    assert R.load(tmp_path) == report
    jsonschema.validate(_load_json(tmp_path / R.REPORT_JSON), R.json_schema())


def test_an_earlier_unversioned_report_is_read(tmp_path):
    legacy = {"info": {"variant": "S", "accuracy": "Keras float model: top-1 ..."},
              "formats": [{"format": "float32", "file": "s_float32.tflite", "sqnr_db": 90.0,
                           "gpu": "full", "gpu_cpu_ops": "", "mediapipe": True},
                          {"format": "int4", "error": "ValueError: unknown"}]}
    (tmp_path / R.REPORT_JSON).write_text(json.dumps(legacy))
    report = R.load(tmp_path)
    assert report.info.variant == "S" and report.info.accuracy is None
    assert report.formats[0].gpu.status == "full" and report.formats[0].gpu.cpu_ops == []
    assert not report.formats[1].ok


def test_flat_rows_map_both_ways_and_unknown_keys_are_refused():
    row = {"format": "int8", "file": "a.tflite", "sqnr_db": 30.0, "evaluation_images": 4,
           "latency_ms": 3.0, "latency_ratio": 0.5, "slow": False, "gpu": "partial",
           "gpu_cpu_ops": "CONV_2D, MUL", "mediapipe": False, "mediapipe_reason": "int8 input",
           "top1": 0.5, "steps": 10, "start_sqnr_db": 29.0, "inspect_error": None,
           "coreml_ops": {"count": 3, "transposes": 1, "histogram": {"conv": 3}}}
    result = R.from_flat(row)
    assert result.gpu.cpu_ops == ["CONV_2D", "MUL"] and result.compression.steps == 10
    assert R.to_flat(result) == {k: v for k, v in row.items() if v is not None}
    with pytest.raises(R.ReportError, match="'speed' has no field in FormatResult"):
        R.from_flat({"format": "x", "speed": 1})
    with pytest.raises(R.ReportError, match=r"\['colour'\] have no field in RunInfo"):
        R.info_from_flat({"colour": "red"})


def test_results_and_output_import_no_tensorflow():
    code = ("import sys, converters.results, converters.output; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'coremltools') "
            "if m in sys.modules))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    assert done.stdout.strip() == "[]"
