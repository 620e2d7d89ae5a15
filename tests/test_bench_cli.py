"""``swiftformer-bench`` as a careless user meets it: every bad input is one line on stderr
that names the problem and the fix, with exit status 2, before any work; nothing the user
owns is deleted; ``--help`` loads no TensorFlow.

Each case is a probe: a command line and what its one line must say. The stand-in adb of
`tests.support.bench` plays the phone where one is needed.
"""

import json
import subprocess
import sys

import pytest

from android_bench.cli import main
from tests.support.bench import (
    ANDROID_SAMPLE,
    fake_elf,
    make_fake_adb,
    stand_in_models,
)


def fails_in_one_line(argv, capsys, match, status=2):
    """Runs the command; asserts its exit status and a single stderr line holding `match`."""
    assert main([str(a) for a in argv]) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def models(tmp_path):
    return stand_in_models(tmp_path)


def loaded_by(statement):
    """The heavy libraries a fresh interpreter holds after `statement`."""
    code = (f"import sys\n{statement}\nprint(sorted(m for m in ('tensorflow', 'keras', "
            "'torch', 'coremltools') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_help_loads_no_tensorflow():
    if loaded_by("import keras_swiftformer.commands") != "[]":
        pytest.skip("keras_swiftformer/__init__.py imports keras eagerly, and run_command "
                    "lives in that package (lazy on branch targets)")
    assert loaded_by("from android_bench.cli import main\n"
                     "for argv in (['--help'], ['host', '--help'], ['flow', '--help']):\n"
                     "    assert main(argv) == 0") == "[]"


@pytest.mark.parametrize("flags, match", [
    (["--runs", "0"], "--runs 0 is out of range: give --runs between 1 and"),
    (["--threads", "0"], "--threads 0 is out of range"),
    (["--threads", "1", "0"], "--threads 0 is out of range"),
    (["--warmup", "-1"], "--warmup -1 is out of range: give --warmup between 0 and"),
    (["--runs", "10000000"], "--runs 10000000 is out of range"),
    (["--seed", "-1"], "--seed -1 is out of range"),
    (["--backends", "gpu"], "--backends gpu: the host runner takes xnnpack, cpu"),
    (["--backends", "xnnpack", "xnnpack"], "names a backend twice"),
    (["--threads", "two"], "argument --threads: invalid int value: 'two'"),
    (["--runs"], "argument --runs: expected one argument"),
    (["--plot-x", "params"], "argument --plot-x: invalid choice"),
    (["--accelerator", "npu"], "argument --accelerator: invalid choice"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_host_timing_flags(flags, match, models, capsys, tmp_path):
    fails_in_one_line(["host", models[0], *flags, "--output", tmp_path / "out" / "x"],
                      capsys, match)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, match", [
    (["--cooldown", "-1"], "--cooldown -1.0 is not a number of seconds"),
    (["--cooldown", "nan"], "--cooldown nan is not a number of seconds"),
    (["--nnapi-accelerator", "qti-dsp", "--backends", "gpu"],
     "nnapi is not among the backends ['gpu']: add nnapi to --backends or drop them"),
    (["--threads", "4", "--runs", "0"], "--runs 0 is out of range"),
])
def test_adb_timing_flags(flags, match, models, capsys, tmp_path):
    fake = make_fake_adb(tmp_path / "adb")
    fails_in_one_line(["adb", *models, "--benchmark-binary", fake_elf(tmp_path / "bm"),
                       "--adb", fake, *flags, "--output", tmp_path / "out" / "x"],
                      capsys, match)


@pytest.mark.parametrize("flags, match", [
    (["--timeout", "0"], "--timeout 0.0 is not a number of seconds"),
    (["--timeout", "nan"], "--timeout nan is not a number of seconds"),
    (["--threads", "1", "2"], "unrecognized arguments: 2"),
    (["--warmup", "-5"], "--warmup -5 is out of range"),
    (["--nnapi-allow-fp16", "--backends", "xnnpack"], "nnapi is not among the backends"),
])
def test_app_flags(flags, match, models, capsys, tmp_path):
    fake = make_fake_adb(tmp_path / "adb", app="ok")
    fails_in_one_line(["app", *models, "--adb", fake, *flags,
                       "--output", tmp_path / "out" / "x"], capsys, match)


def test_model_files_that_are_not_litert(tmp_path, capsys):
    out = ["--output", tmp_path / "out" / "x"]
    fails_in_one_line(["host", tmp_path / "missing.tflite", *out], capsys,
                      "No such model file: ")
    package = tmp_path / "swiftformer_xs_coreml_float16.mlpackage"
    package.mkdir()
    fails_in_one_line(["host", package, *out], capsys, "is a folder, not a LiteRT model")
    text = tmp_path / "notes.tflite"
    text.write_text("not a model at all")
    fails_in_one_line(["host", text, *out], capsys, "is not a LiteRT model (no TFL3")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x04onnx")
    fails_in_one_line(["host", onnx, *out], capsys, "give a .tflite file")
    fails_in_one_line(["host", f"XXL/float32={text}", *out], capsys, "not a LiteRT model")
    assert not (tmp_path / "out").exists()


def test_unknown_variant_in_a_model_name(models, tmp_path, capsys):
    fails_in_one_line(["host", f"XXL/float32={models[0]}", "--output", tmp_path / "x"],
                      capsys, "Unknown SwiftFormer variant 'XXL'")


def test_output_paths_that_would_lose_or_mix_files(models, tmp_path, capsys):
    """An output that is a folder is never replaced; the check comes before the benchmark."""
    kept = tmp_path / "results.json"
    kept.mkdir()
    (kept / "mine.txt").write_text("the user's own file")
    fails_in_one_line(["host", models[0], "--output", tmp_path / "results"], capsys,
                      "results.json is an existing folder, which is left alone")
    assert (kept / "mine.txt").read_text() == "the user's own file"
    folder = tmp_path / "bench"
    folder.mkdir()
    fails_in_one_line(["host", models[0], "--output", folder], capsys, "is a folder; it is the "
                      "prefix of the .json, .md and .png written: give e.g.")
    fails_in_one_line(["host", models[0], "--output", f"{tmp_path}/new/"], capsys,
                      "is a folder")
    fails_in_one_line(["host", models[0], "--output", ""], capsys, "'' is a folder")
    fails_in_one_line(["host", models[0], "--output", f"{models[0]}/x"], capsys,
                      "which is a file: give a path in a folder")
    report = ["report", ANDROID_SAMPLE, "--output"]
    fails_in_one_line([*report, tmp_path / "results"], capsys, "is an existing folder")
    assert (kept / "mine.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "bench", "results.json", "swiftformer_l1_int8.tflite", "swiftformer_xs_float32.tflite"]


def test_adb_and_app_paths(models, tmp_path, capsys):
    fake = make_fake_adb(tmp_path / "adb", app="ok")
    binary = fake_elf(tmp_path / "bm")
    out = ["--output", tmp_path / "out" / "x"]
    fails_in_one_line(["adb", *models, "--benchmark-binary", binary, "--log-dir", models[0],
                       "--adb", fake, *out], capsys, "--log-dir ")
    fails_in_one_line(["adb", *models, "--benchmark-binary", tmp_path / "missing", "--adb",
                       fake, *out], capsys, "missing does not exist: a benchmark_model binary")
    fails_in_one_line(["adb", *models, "--benchmark-binary", tmp_path, "--adb", fake, *out],
                      capsys, "is a folder, not a benchmark_model binary")
    apk = tmp_path / "android_aarch64_benchmark_model.apk"
    apk.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    fails_in_one_line(["adb", *models, "--benchmark-binary", apk, "--adb", fake, *out], capsys,
                      "not the benchmark .apk")
    fails_in_one_line(["adb", models[0], models[0], "--benchmark-binary", binary, "--adb",
                       fake, *out], capsys, "these names repeat")
    fails_in_one_line(["adb", *models, "--benchmark-binary", binary, "--adb",
                       tmp_path / "no-adb", *out], capsys, "adb not found at")
    kept = tmp_path / "kept"
    kept.mkdir()
    fails_in_one_line(["app", *models, "--adb", fake, "--keep-json", kept, *out], capsys,
                      "--keep-json")
    assert kept.is_dir() and not (tmp_path / "out").exists()
    no_phone = make_fake_adb(tmp_path / "none", devices=())
    fails_in_one_line(["app", *models, "--adb", no_phone, *out], capsys, "No Android device")


def test_a_failed_app_run_is_one_line_with_status_1(models, tmp_path, capsys):
    """After the progress lines of the run, the failure is one line; nothing is written."""
    fake = make_fake_adb(tmp_path / "adb", app="fails")
    assert main(["app", *models, "--adb", fake, "--output", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (tmp_path / "x.json").exists()
    errors = [line for line in err.splitlines() if "error" in line]
    assert errors == ["swiftformer-bench app: error: The app reported a failure: "
                      "IllegalArgumentException: No .tflite models found"]


@pytest.mark.parametrize("content, match", [
    (b"{not json", "is not a benchmark JSON file (JSONDecodeError"),
    (b"\xff\xfe\x00garbage", "is not a benchmark JSON file (UnicodeDecodeError"),
    (b"[" * 200_000 + b"]" * 200_000, "is not a benchmark JSON file (RecursionError"),
    (b"[1, 2]", "a report must be a JSON object, got list"),
    (b"", "is not a benchmark JSON file"),
    (json.dumps({"schema": "swiftformer-bench/1", "reports": {}}).encode(),
     "a merged file needs schema"),
    (json.dumps({"schema": "swiftformer-bench/9"}).encode(), "schema must be"),
    (json.dumps({"schema": "swiftformer-bench/1", "source": "host", "created": "x",
                 "device": {"name": "d"}, "runtime": {"name": "r"},
                 "results": [{"model": i} for i in range(50)]}).encode(), "... and "),
])
def test_report_of_bad_json(content, match, tmp_path, capsys):
    path = tmp_path / "phone.json"
    path.write_bytes(content)
    fails_in_one_line(["report", path, "--output", tmp_path / "x"], capsys, match)
    assert not (tmp_path / "x.json").exists()


def test_report_of_missing_or_folder_json(tmp_path, capsys):
    fails_in_one_line(["report", tmp_path / "gone.json", "--output", tmp_path / "x"], capsys,
                      "Cannot read benchmark JSON")
    fails_in_one_line(["report", tmp_path, "--output", tmp_path / "x"], capsys,
                      "Is a directory: give a report file")


def test_help_of_every_command(capsys):
    for argv in (["--help"], ["host", "--help"], ["adb", "--help"], ["app", "--help"],
                 ["report", "--help"], ["flow", "--help"], ["schema", "--help"]):
        assert main(argv) == 0
        assert "usage: swiftformer-bench" in capsys.readouterr().out
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["$id"] == "swiftformer-bench/1"


def test_commands_and_arguments_argparse_refuses(capsys):
    fails_in_one_line([], capsys, "the following arguments are required: command")
    fails_in_one_line(["bench"], capsys, "invalid choice: 'bench'")
    fails_in_one_line(["host"], capsys, "the following arguments are required: models")


@pytest.mark.parametrize("flags, match", [
    (["--variants", "XS", "--formats", "fp8"], "Unknown LiteRT formats ['fp8']: give --formats"),
    (["--variants", "XS", "--formats", "coreml_float16"], "Unknown LiteRT formats"),
    (["--variants", "XL"], "Unknown SwiftFormer variant 'XL'"),
    (["--variants", "XS", "L1", "--checkpoint", "imagenet"], "A checkpoint holds one variant"),
    ([], "Nothing to benchmark: name --variants (or a --checkpoint) to convert"),
    (["--variants", "XS", "--backends", "gpu"], "the host runner takes xnnpack, cpu"),
    (["--variants", "XS", "--runs", "0"], "--runs 0 is out of range"),
])
def test_flow_refuses_before_converting(flags, match, tmp_path, capsys):
    fails_in_one_line(["flow", *flags, "--output-dir", tmp_path / "converted",
                       "--output", tmp_path / "out" / "x"], capsys, match)
    assert not (tmp_path / "converted").exists() and not (tmp_path / "out").exists()


def test_flow_refuses_bad_phone_json_and_outputs_before_converting(tmp_path, capsys):
    bad = tmp_path / "phone.json"
    bad.write_text("{}")
    base = ["flow", "--variants", "XS", "--output-dir", tmp_path / "converted"]
    fails_in_one_line([*base, "--device-json", bad, "--output", tmp_path / "x"], capsys,
                      "phone.json does not follow")
    (tmp_path / "x_host.json").mkdir()
    fails_in_one_line([*base, "--output", tmp_path / "x"], capsys,
                      "x_host.json is an existing folder")
    fails_in_one_line(["flow", "--variants", "XS", "--output-dir", ANDROID_SAMPLE,
                       "--output", tmp_path / "y"], capsys, "--output-dir ")
    assert not (tmp_path / "converted").exists()


def test_verbose_shows_the_traceback(tmp_path, capsys):
    assert main(["--verbose", "report", str(tmp_path / "gone.json"),
                 "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(
        "swiftformer-bench: error: Cannot read benchmark JSON")
