"""Probes of ``swiftformer-train`` as a careless user drives it: every bad input is one line on
stderr naming the problem and the fix, with no traceback, no lost file and no half-run.

The command runs in-process through its `main` (the same `run_command` the console script
runs); the one real training run is tiny (32 px, a one-block-per-stage model, 12 images).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from keras_swiftformer.training.cli import main
from tests.support.datasets import make_tree

TINY = ["--depths", "1", "1", "1", "1", "--widths", "16", "16", "32", "32", "--input-size", "32",
        "--batch-size", "4", "--lr-batch", "4", "--val-split=", "--fit-verbose", "0",
        "--jit-compile", "false", "--keep-checkpoints", "3"]


def run(capsys, *argv):
    """(exit status, stderr lines) of ``swiftformer-train argv``."""
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, [line for line in err.splitlines() if line.strip()]


def one_error(capsys, *argv):
    status, lines = run(capsys, *argv)
    assert status == 2, lines
    assert len(lines) == 1 and lines[0].startswith("swiftformer-train: error: "), lines
    assert "usage:" not in lines[0]
    return lines[0]


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data")


def _config(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,text,problem", [
    ("bad.yaml", "epochs: [1, 2\n", "is not plain YAML"),
    ("bad.json", '{"epochs": 1,}', "is not valid JSON"),
    ("list.yaml", "- epochs\n- 3\n", "must hold a mapping"),
    ("list.json", "[1, 2]", "must hold a mapping"),
    ("keys.yaml", "1: 2\n", "must hold a mapping"),
    ("binary.json", None, "cannot read the config file"),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, capsys, name, text, problem):
    path = tmp_path / name
    if text is None:
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        path.write_text(text)
    line = one_error(capsys, "--config", path, "--print-config")
    assert name in line and problem in line


def test_a_yaml_tag_that_runs_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = _config(tmp_path, "evil.yaml",
                   f"epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    line = one_error(capsys, "--config", path, "--print-config")
    assert "evil.yaml is not plain YAML" in line and "!!python" in line
    assert not marker.exists()


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    line = one_error(capsys, "--config", tmp_path / "nope.yaml", "--print-config")
    assert "nope.yaml" in line


def test_one_epoch_works_with_a_short_warm_up_said_once(tmp_path, capsys):
    status = main(["--recipe", "finetune", "--epochs", "1", "--data", str(tmp_path),
                   "--output-dir", str(tmp_path / "out"), "--print-config"])
    captured = capsys.readouterr()
    assert status == 0 and '"warmup_epochs": 0.1' in captured.out
    assert captured.err.splitlines() == ["swiftformer-train: warning: warming up for 0.1 epochs (the recipe's 1 is "
                     "not below --epochs 1); pass --warmup-epochs to choose"]


@pytest.mark.parametrize("argv,flag", [
    (["--epochs", "1", "--warmup-epochs", "3"], "--warmup-epochs (3.0) must be below --epochs"),
    (["--input-size", "100000"], "--input-size must be 32 to 4096"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--mixup", "-1"], "--mixup must be >= 0"),
    (["--depths", "1", "1", "1", "1"], "give --depths and --widths together"),
    (["--distribution", "nccl"], "argument --distribution: invalid choice"),
    (["--epochs", "many"], "argument --epochs: invalid int value"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_a_bad_option_names_its_flag_in_one_line(tmp_path, capsys, argv, flag):
    line = one_error(capsys, "--data", tmp_path, "--output-dir", tmp_path / "o", *argv)
    assert flag in line


def test_data_and_output_dir_are_required_by_flag(capsys):
    assert "--data is required" in one_error(capsys, "--output-dir", "x")


def test_an_output_dir_that_is_a_file_is_refused_before_any_work(tmp_path, tree, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    line = one_error(capsys, "--data", tree, "--output-dir", blocker, *TINY)
    assert "notes.txt is a file" in line
    line = one_error(capsys, "--data", tree, "--output-dir", blocker / "run", *TINY)
    assert "notes.txt is a file, not a folder" in line
    assert blocker.read_text() == "mine"


def test_a_folder_where_model_keras_goes_is_refused(tmp_path, tree, capsys):
    out = tmp_path / "out"
    (out / "model.keras").mkdir(parents=True)
    (out / "model.keras" / "keep.txt").write_text("mine")
    line = one_error(capsys, "--data", tree, "--output-dir", out, *TINY)
    assert "model.keras is an existing folder" in line
    assert (out / "model.keras" / "keep.txt").read_text() == "mine"


def test_a_class_folder_with_a_newline_is_one_line_naming_it(tmp_path, tree, capsys):
    os.rename(tree / "train" / "class2", tree / "train" / "class\n2")
    line = one_error(capsys, "--data", tree, "--output-dir", tmp_path / "out", *TINY)
    assert "class\\n2'" in line and "control character" in line and "rename it" in line
    assert not (tmp_path / "out").exists()


def _garbage_jpeg(path):
    """Valid JPEG markers around a random body (the header check passes it)."""
    good = (path.parent / "0.png")
    from PIL import Image

    with Image.open(good) as image:
        image.save(path.with_suffix(".tmp.jpg"))
    data = path.with_suffix(".tmp.jpg").read_bytes()
    os.remove(path.with_suffix(".tmp.jpg"))
    start = data.find(b"\xff\xda") + 20
    body = np.random.default_rng(1).integers(0, 256, 3000, np.uint8).tobytes()
    path.write_bytes(data[:start] + body + b"\xff\xd9")


def test_a_garbage_jpeg_stops_before_training_naming_it(tmp_path, tree, capsys):
    _garbage_jpeg(tree / "train" / "class1" / "9.jpg")
    line = one_error(capsys, "--data", tree, "--output-dir", tmp_path / "out", *TINY)
    assert "class1/9.jpg: cannot be decoded" in line and "--on-bad-image skip" in line
    assert not (tmp_path / "out" / "model.keras").exists()


def test_training_skips_a_garbage_jpeg_and_resumes_past_a_truncated_checkpoint(
        tmp_path, tree, capsys):
    _garbage_jpeg(tree / "train" / "class1" / "9.jpg")
    out = tmp_path / "out"
    argv = ["--data", tree, "--output-dir", out, "--epochs", "2", "--warmup-epochs", "1",
            "--on-bad-image", "skip", *TINY]
    status, lines = run(capsys, *argv)
    assert status == 0, lines
    assert len(lines) == 1 and "Skipping 1 bad image(s)" in lines[0] and "9.jpg" in lines[0]
    checkpoints = out / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["epoch-0001.npz", "epoch-0002.npz"]

    # an interrupted run: the model not yet written, the newest checkpoint cut short
    os.remove(out / "model.keras")
    newest = checkpoints / "epoch-0002.npz"
    newest.write_bytes(newest.read_bytes()[:1000])
    status, lines = run(capsys, *argv)
    assert status == 0, lines
    assert any("damaged checkpoint(s) epoch-0002.npz" in line and
               "resuming from epoch-0001.npz" in line for line in lines), lines
    assert (out / "model.keras").exists()

    # nothing intact: one line, and the damaged files are left for the user to look at
    os.remove(out / "model.keras")
    for name in os.listdir(checkpoints):
        (checkpoints / name).write_bytes(b"PK\x03\x04 cut")
    status, lines = run(capsys, *argv)
    assert status == 2 and lines[-1].startswith("swiftformer-train: error: no intact checkpoint")
    assert "--overwrite" in lines[-1]
    assert all(line.startswith("swiftformer-train: warning: Skipping") for line in lines[:-1])
    assert len(os.listdir(checkpoints)) == 2


def test_help_imports_no_tensorflow():
    code = ("import sys\nfrom keras_swiftformer.training.cli import main\n"
            "status = main(['--help'])\n"
            "print(status, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout
    assert "--warmup-epochs" in out and "--fit-verbose" in out and "--verbose" in out
    assert out.split("\n")[-2] == "0 False False"


def test_a_real_run_prints_one_line_and_no_library_noise(tmp_path, tree):
    """As the console script runs: TensorFlow's and absl's startup lines (written by C++ to
    descriptor 2) do not reach the user; the error does, in one line."""
    os.remove(tree / "train" / "class0" / "0.png")
    (tree / "train" / "class0" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    done = subprocess.run(
        [sys.executable, "-m", "keras_swiftformer.training.cli", "--data", str(tree),
         "--output-dir", str(tmp_path / "out"), *TINY], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=600)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith("swiftformer-train: error: 1 bad image(s)")
    assert "class0/0.png" in done.stderr and "--on-bad-image skip" in done.stderr
