"""android_bench.schema and android_bench.report: the one JSON format, the apps' files, the
merged table and plot."""

import copy
import json

import pytest

from android_bench.cli import main
from converters.litert.inspection import latency_summary
from android_bench.report import markdown_table, plot, rows, write_outputs
from android_bench.schema import BACKENDS, ReportError, json_schema, load_reports, validate
from tests.support.bench import ANDROID_SAMPLE, IOS_SAMPLE


@pytest.fixture
def app_docs():
    return load_reports([ANDROID_SAMPLE, IOS_SAMPLE])


def test_app_samples_follow_the_schema(app_docs):
    assert [d["source"] for d in app_docs] == ["android-app", "ios-app"]
    jsonschema = pytest.importorskip("jsonschema")
    for path in (ANDROID_SAMPLE, IOS_SAMPLE):
        with open(path) as f:
            jsonschema.validate(json.load(f), json_schema())


def test_app_statistics_are_the_hosts(app_docs):
    """The apps compute mean, median, p90 and std as the host does (numpy, linear p90)."""
    checked = 0
    for doc in app_docs:
        for result in doc["results"]:
            if result["status"] != "ok":
                continue
            expected = latency_summary(result["samples_ms"])
            for key, value in expected.items():
                assert result[key] == pytest.approx(value, abs=1e-4), (result["model"], key)
            checked += 1
    assert checked == 8


def test_round_trip_through_the_merged_file(app_docs, tmp_path):
    paths = write_outputs(app_docs, str(tmp_path / "merged"))
    again = load_reports([paths["json"]])
    assert again == app_docs
    # A merged file and a single report can be merged again.
    assert load_reports([paths["json"], ANDROID_SAMPLE])[2] == app_docs[0]
    markdown = (tmp_path / "merged.md").read_text()
    assert markdown.startswith("Measured on:\n- android-app: Example phone")
    assert "| ios-app | Apple iPhone15,2" in markdown
    assert paths["plot"] and (tmp_path / "merged.png").stat().st_size > 10_000


def test_table_fills_variant_and_format_from_names_and_lists_failures(app_docs):
    table_rows = rows(app_docs)
    labels = {(r["source"], r["backend"], r["label"]) for r in table_rows}
    assert ("android-app", "xnnpack", "XS float32") in labels
    assert ("ios-app", "all", "XS coreml_float16") in labels  # the logits package
    assert ("ios-app", "all", "XS coreml_float16 classifier") in labels  # the second row
    table = markdown_table(table_rows)
    assert "| android-app | Example phone (a format sample: these numbers are not measurements) " \
           "| xnnpack | 4 | L1 int8 | 20.7 | 6.90 | 4.10 | 4.10 | 4.18 | 4.00 | 16.0 | 3 | " \
           "delegate: all |" in table
    assert "| gpu | 4 | XS float32 | 1450.0 | 30.10 | 7.00 | 7.00 | 7.80 | 6.00 | 62.5 | 3 | " \
           "delegate: 250/298 nodes, 3 parts |" in table
    assert "| ios-app | Apple iPhone15,2 (a format sample: these numbers are not measurements) " \
           "| cpuOnly | - | XS coreml_float16 |" in table  # Core ML has no thread count
    assert "| cpuAndNeuralEngine | - | XS coreml_float16 | 380.0 | 4.30 | 0.80 | 0.80 | 0.84 | 0.75 | " \
           "14.4 | 3 | ANE 255/261 ops |" in table
    failed = table.split("Failed:\n")[1]
    assert "android-app / Example phone" in failed and "Failed to apply delegate" in failed
    assert "ios-app" in failed and "L1 coreml_float16" in failed


def test_text_from_a_phone_cannot_become_markup(app_docs, tmp_path):
    """Device names and errors come from JSON files: the table escapes them."""
    doc = copy.deepcopy(app_docs[0])
    doc["device"]["name"] = "<img src=x onerror=alert(1)> `phone`"
    doc["results"][0].update(status="failed", error="<script>x</script>")
    paths = write_outputs([doc], str(tmp_path / "t"))
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(
        open(paths["markdown"]).read())
    assert "<img" not in html and "<script>" not in html and "<code>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;script&gt;" in html


def test_app_samples_run_exact_warmup_counts(app_docs):
    for doc in app_docs:
        ok = [r for r in doc["results"] if r["status"] == "ok"]
        assert ok and all(r["warmup_runs"] == doc["settings"]["warmup_runs"] == 10 for r in ok)
        assert all(r["runs"] == doc["settings"]["runs"] for r in ok)
    for doc in app_docs:  # W + 1 warm-up runs (the first counted apart) are refused
        changed = copy.deepcopy(doc)
        changed["results"][0]["warmup_runs"] = 11
        with pytest.raises(ReportError, match=r"results\[0\].warmup_runs is 11 but "
                                              r"settings.warmup_runs is 10: .* exact counts"):
            validate(changed)
    host = copy.deepcopy(app_docs[0])
    host.update(source="host")
    host["results"][0]["warmup_runs"] = 11  # the host tool counts the first run apart
    validate(host)


@pytest.mark.parametrize("change, message", [
    (lambda r: r["delegate_coverage"].update(full="yes"),
     r"results\[0\].delegate_coverage.full must be a boolean"),
    (lambda r: r["delegate_coverage"].pop("nodes"), r"results\[0\].delegate_coverage.nodes is "
                                                   r"missing"),
    (lambda r: r.update(delegate_coverage=[1, 2]), r"delegate_coverage must be an object"),
    (lambda r: r.update(messages=["ERROR: x", 3]), r"results\[0\].messages\[1\] must be a "
                                                  r"string"),
    (lambda r: r.update(exit_status=True), r"results\[0\].exit_status must be an integer"),
    (lambda r: r.update(compute_plan={"operations": 5}), r"compute_plan.neural_engine is missing"),
])
def test_where_it_ran_fields_are_checked(app_docs, change, message):
    doc = copy.deepcopy(app_docs[0])
    change(doc["results"][0])
    with pytest.raises(ReportError, match=message):
        validate(doc)


def test_plot_needs_a_variant_and_a_known_axis(app_docs, tmp_path):
    doc = copy.deepcopy(app_docs[0])
    for result in doc["results"]:
        result["model"] = "model.tflite"
    paths = write_outputs([doc], str(tmp_path / "anonymous"))
    assert paths["plot"] is None and not (tmp_path / "anonymous.png").exists()
    with pytest.raises(ValueError, match="names a SwiftFormer variant"):
        plot(rows([doc]), str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="Plot axis must be one of"):
        write_outputs(app_docs, str(tmp_path / "bad"), x="params")
    assert not (tmp_path / "bad.json").exists()  # nothing written before the check
    assert write_outputs(app_docs, str(tmp_path / "top1"), x="top1")["plot"]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["results"][0].pop("mean_ms"), r"results\[0\].mean_ms is missing"),
    (lambda d: d["results"][1].update(backend="dsp"), r"results\[1\].backend must be one of"),
    (lambda d: d["results"][0].update(runs="50"), r"results\[0\].runs must be an integer"),
    (lambda d: d["results"][0].update(init_ms=True), r"results\[0\].init_ms must be a number"),
    (lambda d: d["results"][3].pop("error"), r"results\[3\].error is missing"),
    (lambda d: d.update(schema="swiftformer-bench/0"), "schema must be 'swiftformer-bench/1'"),
    (lambda d: d.update(source="web"), "source must be one of"),
    (lambda d: d["device"].pop("name"), "device.name is missing"),
])
def test_bad_reports_name_the_file_and_field(app_docs, tmp_path, change, message):
    doc = copy.deepcopy(app_docs[0])
    change(doc)
    path = tmp_path / "phone.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ReportError, match=message) as info:
        load_reports([path])
    assert str(path) in str(info.value)


def test_unreadable_files_and_bad_merged_files(tmp_path, app_docs):
    with pytest.raises(ReportError, match="Cannot read benchmark JSON .*missing.json"):
        load_reports([tmp_path / "missing.json"])
    (tmp_path / "broken.json").write_text('{"schema": ')
    with pytest.raises(ReportError, match="broken.json is not a benchmark JSON file"):
        load_reports([tmp_path / "broken.json"])
    merged = {"schema": "swiftformer-bench/1", "reports": [app_docs[0], {"schema": "x"}]}
    (tmp_path / "merged.json").write_text(json.dumps(merged))
    with pytest.raises(ReportError, match=r"merged.json: reports\[1\]"):
        load_reports([tmp_path / "merged.json"])


def test_json_schema_matches_the_validator():
    schema = json_schema()
    result = schema["properties"]["results"]["items"]
    assert result["properties"]["backend"]["enum"] == list(BACKENDS)
    assert set(result["required"]) == {"model", "backend", "status"}
    jsonschema = pytest.importorskip("jsonschema")
    bad = {"schema": "swiftformer-bench/1", "source": "host", "created": "2025-01-01T00:00:00Z",
           "device": {"name": "x"}, "runtime": {"name": "y"},
           "results": [{"model": "m.tflite", "backend": "cpu", "status": "ok"}]}
    with pytest.raises(jsonschema.ValidationError, match="mean_ms"):
        jsonschema.validate(bad, schema)
    with pytest.raises(ReportError, match="mean_ms"):
        validate(bad)


def test_cli_report_and_schema(tmp_path, capsys):
    assert main(["report", str(ANDROID_SAMPLE), str(IOS_SAMPLE),
                 "--output", str(tmp_path / "all")]) == 0
    out = capsys.readouterr().out
    assert "| android-app |" in out and "| ios-app |" in out and "all.png" in out
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["$id"] == "swiftformer-bench/1"
    assert main(["report", str(tmp_path / "nope.json"), "--output", str(tmp_path / "x")]) == 2
    assert "Cannot read benchmark JSON" in capsys.readouterr().err
