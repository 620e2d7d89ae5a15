"""converters.output: an output folder holds one run; clashes are one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from converters.output import MANIFEST, OutputError, OutputFolder, read_manifest
from keras_swiftformer.files import atomic_output


def _write(folder, name, content=b"x"):
    with atomic_output(folder.path_of(name)) as tmp, open(tmp, "wb") as f:
        f.write(content)
    folder.record(name)


def _package(folder, name):
    os.makedirs(folder.path_of(name))
    with open(os.path.join(folder.path_of(name), "Manifest.json"), "w") as f:
        f.write("{}")
    folder.record(name)


def _dead_pid():
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_second_run_leaves_no_file_of_the_first(tmp_path):
    out = tmp_path / "out"
    first = OutputFolder(out)
    first.start("swiftformer-convert run --formats all")
    for name in ("swiftformer_xs.keras", "swiftformer_xs_float16.tflite", "report.json"):
        _write(first, name)
    _package(first, "swiftformer_xs_coreml_float16.mlpackage")
    first.finish()
    (out / "notes.txt").write_text("the user's")  # not written by the project
    second = OutputFolder(out)
    run_id = second.start("swiftformer-convert run --formats float32")
    _write(second, "swiftformer_xs_float32.tflite")
    _write(second, "report.json", b"new")
    assert sorted(os.listdir(out)) == [MANIFEST, "notes.txt", "report.json",
                                       "swiftformer_xs_float32.tflite"]
    assert second.files() == ["swiftformer_xs_float32.tflite", "report.json"]
    assert (out / "report.json").read_bytes() == b"new"
    manifest = read_manifest(out)
    assert manifest["run_id"] == run_id and manifest["state"] == "running"
    assert manifest["command"] == "swiftformer-convert run --formats float32"
    assert OutputFolder(out).files() == second.files()  # read back from the manifest


def test_manifest_is_written_first_and_a_failed_format_leaves_no_file(tmp_path):
    folder = OutputFolder(tmp_path / "out")
    folder.start("run")
    assert os.listdir(folder.path) == [MANIFEST]
    _package(folder, "m_coreml_float16.mlpackage")  # its verification then fails
    folder.discard("m_coreml_float16.mlpackage")
    folder.discard("never_written.tflite")
    assert os.listdir(folder.path) == [MANIFEST] and folder.files() == []


def test_only_listed_plain_names_are_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    (out / "mine.txt").write_text("keep")
    listed = ["../precious.txt", str(outside), "..", ".", "", "sub/x"]
    (out / MANIFEST).write_text(json.dumps({"files": listed, "state": "finished"}))
    OutputFolder(out).start("run")
    assert outside.read_text() == "keep" and (out / "mine.txt").read_text() == "keep"
    (out / MANIFEST).write_text("{not json")  # a corrupt manifest removes nothing
    OutputFolder(out).start("run")
    assert (out / "mine.txt").exists()


def test_stale_partial_files_of_dead_processes_are_cleaned(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = _dead_pid()
    stale_file = out / f".swiftformer_xs_int8.partial-{dead}.tflite"
    stale_file.write_bytes(b"half")
    stale_package = out / f".swiftformer_xs_coreml_float16.partial-{dead}.mlpackage"
    stale_package.mkdir()
    (stale_package / "weight.bin").write_bytes(b"half")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = out / f".other.partial-{live.pid}.tflite"  # a live process's: left alone
        busy.write_bytes(b"busy")
        user = out / ".partial-notes"
        user.write_text("a user's file that merely looks similar")
        OutputFolder(out).start("run")
        assert not stale_file.exists() and not stale_package.exists()
        assert busy.exists() and user.exists()
    finally:
        live.kill()
        live.wait()


def test_folder_clashes_are_one_line_errors_and_nothing_is_touched(tmp_path):
    a_file = tmp_path / "report.txt"
    a_file.write_text("the user's")
    for path, words in ((a_file, "is a file"), (a_file / "out", "lies under the file"),
                        (a_file / "a" / "b", "lies under the file")):
        with pytest.raises(OutputError) as err:
            OutputFolder(path).check()
        assert words in str(err.value) and "--output-dir" in str(err.value)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert a_file.read_text() == "the user's"
    with pytest.raises(OutputError, match=r"MB free under .*free some space"):
        OutputFolder(tmp_path / "new", min_free_bytes=2**62).check()
    assert sorted(os.listdir(tmp_path)) == ["report.txt"]  # check creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="Cannot write to .*folder you can write to"):
            OutputFolder(locked / "out").check()
    finally:
        locked.chmod(0o700)


def test_a_live_run_in_the_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / MANIFEST).write_text(json.dumps({"files": [], "state": "running",
                                                "pid": live.pid}))
        with pytest.raises(OutputError, match=f"process {live.pid}.*another --output-dir"):
            OutputFolder(out).check()
    finally:
        live.kill()
        live.wait()
    OutputFolder(out).start("run")  # its process is gone: the folder is free


def test_record_before_start_is_a_programming_error(tmp_path):
    with pytest.raises(RuntimeError, match="start"):
        OutputFolder(tmp_path).record("x")


def test_a_folder_from_before_manifests_loses_the_files_its_report_names(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    legacy = {"info": {"variant": "XS"},
              "formats": [{"format": "float16", "file": "swiftformer_xs_float16.tflite"},
                          {"format": "int4", "error": "ValueError: unknown"}]}
    (out / "report.json").write_text(json.dumps(legacy))
    for name in ("swiftformer_xs_float16.tflite", "report.md", "MODEL_CARD.md", "photo.jpg"):
        (out / name).write_text("old")
    OutputFolder(out).start("run")
    assert sorted(os.listdir(out)) == [MANIFEST, "photo.jpg"]
    (out / "report.json").write_text("{not ours")  # unreadable: nothing is removed
    (out / "MODEL_CARD.md").write_text("kept")
    (out / MANIFEST).unlink()
    OutputFolder(out).start("run")
    assert (out / "MODEL_CARD.md").exists() and (out / "report.json").exists()
