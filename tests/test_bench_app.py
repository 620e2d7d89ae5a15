"""android_bench.app and ``swiftformer-bench app``: driving the Android app over a stand-in adb.

The stand-in (`tests.support.bench.FAKE_ADB`) plays the phone and the installed app: on ``am
start`` the app writes its JSON (the sample file, stamped with the run id it was given) and its
completion marker, or fails, crashes, hangs, or is missing. Not exercised: a real phone and app.
"""

import copy
import json

import pytest

from android_bench import app as app_module
from android_bench.app import APP_DIR, MARKER_NAME, AppError, AppOptions, app_command, run_app
from android_bench.cli import main
from android_bench.schema import ReportError
from android_bench.timing import Timing
from tests.support.bench import (
    ANDROID_SAMPLE,
    calls,
    device_path,
    make_fake_adb,
    quiet,
    stand_in_models,
)


FAST = AppOptions(poll=0)


@pytest.fixture
def models(tmp_path):
    return stand_in_models(tmp_path)


def shell_calls(fake):
    return [c[3] for c in calls(fake) if c[2:3] == ["shell"]]


def test_app_run_pushes_starts_waits_and_pulls_the_report(tmp_path, models):
    fake = make_fake_adb(tmp_path / "adb", app="ok")
    timing = Timing(backends=("xnnpack", "gpu"), threads=4, warmup=10, runs=3)
    options = AppOptions(poll=0, keep_json=str(tmp_path / "kept" / "app.json"))
    doc = run_app(models, timing, adb=fake, options=options, progress=quiet)
    assert doc["source"] == "android-app"
    shells = shell_calls(fake)
    [start] = [c for c in shells if c.startswith("am start")]
    run_id = doc["settings"]["run_id"]
    assert start.startswith("am start -S -W -n org.swiftformer.bench/.MainActivity --ez autorun "
                            f"true --es run_id {run_id} --es models swiftformer_xs_float32.tflite,"
                            "swiftformer_l1_int8.tflite --es backends xnnpack,gpu --ei threads 4 "
                            "--ei warmup 10 --ei runs 3 --ez nnapi_allow_fp16 false;")
    # An old marker cannot be taken for this run's: it is removed before the start.
    removed = [i for i, c in enumerate(shells) if c.startswith("rm -f") and MARKER_NAME in c]
    assert removed and removed[0] < shells.index(start)
    pushed = [c[4] for c in calls(fake) if c[2:3] == ["push"]]
    assert pushed == [f"{APP_DIR}/swiftformer_xs_float32.tflite",
                      f"{APP_DIR}/swiftformer_l1_int8.tflite"]
    assert json.loads((tmp_path / "kept" / "app.json").read_text())["settings"]["run_id"] == run_id
    # Variant and format come from the file names (the app leaves them out).
    assert {(r["variant"], r["format"]) for r in doc["results"]} == {("XS", "float32"),
                                                                      ("L1", "int8")}


def test_app_command_carries_the_nnapi_options():
    timing = Timing(backends=("nnapi",), threads=1, warmup=5, runs=20, nnapi_allow_fp16=True,
                    nnapi_accelerator="google-edgetpu")
    command = app_command(["a.tflite"], timing, "abc")
    assert command.endswith("--ez nnapi_allow_fp16 true --es nnapi_accelerator google-edgetpu")


def test_cli_app_writes_table_json_and_plot(tmp_path, models, capsys):
    fake = make_fake_adb(tmp_path / "adb", app="ok")
    prefix = tmp_path / "out" / "app"
    status = main(["app", *models, "--adb", fake, "--backends", "xnnpack", "gpu",
                   "--warmup", "10", "--runs", "3", "--output", str(prefix)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| android-app | Example phone" in printed and "Failed:" in printed
    assert (tmp_path / "out" / "app.json").exists() and (tmp_path / "out" / "app.png").exists()


def test_a_crash_is_reported_with_the_apps_last_log_lines(tmp_path, models, capsys):
    logcat = ("12-01 19:02:11.123  4242  4242 E AndroidRuntime: FATAL EXCEPTION: main\n"
              "12-01 19:02:11.123  4242  4242 E AndroidRuntime: java.lang.OutOfMemoryError\n")
    fake = make_fake_adb(tmp_path / "adb", app="crashes", logcat=logcat)
    with pytest.raises(AppError, match="(?s)ended without writing .*OutOfMemoryError"):
        run_app(models, adb=fake, options=FAST, progress=quiet)
    status = main(["app", *models, "--adb", fake, "--output", str(tmp_path / "out" / "x")])
    assert status == 1
    assert "FATAL EXCEPTION" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_hung_app_times_out(tmp_path, models):
    fake = make_fake_adb(tmp_path / "adb", app="hangs")
    with pytest.raises(AppError, match=r"No completion marker .* after 0.2 s; the app is still "
                                       r"running: raise --timeout"):
        run_app(models, adb=fake, options=AppOptions(timeout=0.2, poll=0.05), progress=quiet)


def test_the_apps_own_failure_and_a_missing_app(tmp_path, models):
    fake = make_fake_adb(tmp_path / "a", app="fails")
    with pytest.raises(AppError, match="The app reported a failure: IllegalArgumentException"):
        run_app(models, adb=fake, options=FAST, progress=quiet)
    fake = make_fake_adb(tmp_path / "b", app="missing")
    with pytest.raises(AppError, match=r"not installed on .*android/README.md"):
        run_app(models, adb=fake, options=FAST, progress=quiet)
    assert not any(c.startswith("am start") for c in shell_calls(fake))


def test_the_apps_json_must_follow_the_schema_with_exact_counts(tmp_path, models):
    doc = json.loads(ANDROID_SAMPLE.read_text())
    inexact = copy.deepcopy(doc)
    inexact["results"][0]["warmup_runs"] = 11  # the first inference counted twice
    fake = make_fake_adb(tmp_path / "adb", app="ok", app_json=inexact)
    with pytest.raises(ReportError, match=r"results\[0\].warmup_runs is 11 but "
                                          r"settings.warmup_runs is 10"):
        run_app(models, adb=fake, options=FAST, progress=quiet)
    other = copy.deepcopy(doc)
    other["source"] = "ios-app"
    fake = make_fake_adb(tmp_path / "b", app="ok", app_json=other)
    with pytest.raises(ReportError, match="source 'ios-app', not 'android-app'"):
        run_app(models, adb=fake, options=FAST, progress=quiet)
    fake = make_fake_adb(tmp_path / "c", app="ok")
    with pytest.raises(ReportError, match="ran with runs=3, not the 50 asked for"):
        run_app(models, Timing(("xnnpack", "gpu", "nnapi"), 4, warmup=10, runs=50), adb=fake,
                options=FAST, progress=quiet)


def test_a_stale_marker_of_another_run_is_refused(tmp_path, models, monkeypatch):
    fake = make_fake_adb(tmp_path / "adb", app="hangs")
    marker = device_path(fake, f"{APP_DIR}/{MARKER_NAME}")
    real_start = app_module._start

    def start_then_stale(adb, command):  # another run's marker appears while this one waits
        real_start(adb, command)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"run_id": "someone-else", "status": "ok"}))

    monkeypatch.setattr(app_module, "_start", start_then_stale)
    with pytest.raises(AppError, match="belongs to run 'someone-else'"):
        run_app(models, adb=fake, options=FAST, progress=quiet)
