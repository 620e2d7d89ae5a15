"""keras_swiftformer.files: outputs never destroy a user's folder; stale partial files of dead
processes are cleaned, a live process's are kept."""

import os
import subprocess
import sys

import pytest

from keras_swiftformer.commands import UserError
from keras_swiftformer.files import (
    atomic_output,
    check_output_path,
    is_project_folder,
    remove_stale_partials,
)


def _write(path, text="x"):
    with open(path, "w") as f:
        f.write(text)


def test_a_file_output_replaces_a_file_whole(tmp_path):
    out = tmp_path / "sub" / "report.json"
    with atomic_output(out) as tmp:
        _write(tmp, "one")
    with atomic_output(out) as tmp:
        _write(tmp, "two")
    assert out.read_text() == "two"
    assert sorted(os.listdir(out.parent)) == ["report.json"]


def test_an_error_leaves_neither_the_output_nor_the_partial(tmp_path):
    out = tmp_path / "model.keras"
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            _write(tmp)
            raise RuntimeError("mid-write")
    assert os.listdir(tmp_path) == []


def test_a_users_folder_where_a_file_goes_is_refused_and_kept(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    _write(folder / "mine.txt", "precious")
    with pytest.raises(UserError, match="results is an existing folder"):
        with atomic_output(folder) as tmp:
            _write(tmp)
    assert (folder / "mine.txt").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["results"]  # and no partial left


def test_a_folder_named_like_a_model_is_not_taken_for_one(tmp_path):
    folder = tmp_path / "old.keras"
    folder.mkdir()
    _write(folder / "notes.txt")
    with pytest.raises(UserError, match="old.keras"):
        check_output_path(folder)
    # an .mlpackage without Core ML's Manifest.json is not one the project wrote either
    fake = tmp_path / "photos.mlpackage"
    fake.mkdir()
    _write(fake / "holiday.jpg")
    assert not is_project_folder(fake)
    with pytest.raises(UserError, match="photos.mlpackage"):
        with atomic_output(fake) as tmp:
            os.mkdir(tmp)
    assert (fake / "holiday.jpg").exists()


def test_an_mlpackage_the_project_wrote_is_replaced(tmp_path):
    package = tmp_path / "m.mlpackage"
    for text in ("old", "new"):
        with atomic_output(package) as tmp:
            os.mkdir(tmp)
            _write(os.path.join(tmp, "Manifest.json"), text)
    assert is_project_folder(package)
    assert (package / "Manifest.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["m.mlpackage"]


def test_a_folder_output_does_not_replace_a_file(tmp_path):
    package = tmp_path / "m.mlpackage"
    _write(package, "a user's file")
    with pytest.raises(UserError, match="existing file where a folder goes"):
        with atomic_output(package) as tmp:
            os.mkdir(tmp)
    assert package.read_text() == "a user's file"
    assert sorted(os.listdir(tmp_path)) == ["m.mlpackage"]


def test_an_output_under_a_file_is_one_line_before_the_work(tmp_path):
    blocker = tmp_path / "afile"
    _write(blocker)
    ran = []
    with pytest.raises(UserError, match="afile is a file, not a folder"):
        with atomic_output(blocker / "deeper" / "out.json"):
            ran.append(True)
    assert not ran and blocker.read_text() == "x"


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_remove_stale_partials_takes_only_dead_processes_files(tmp_path):
    dead = _dead_pid()
    stale_file = f".float32.partial-{dead}.tflite"
    stale_folder = f".m.partial-{dead}.mlpackage"
    live = f".report.partial-{os.getppid()}.json"  # a running process (our parent)
    own = f".card.partial-{os.getpid()}.md"
    for name in (stale_file, live, own, "float32.tflite", ".hidden", "x.partial-1.txt"):
        _write(tmp_path / name)
    (tmp_path / stale_folder).mkdir()
    _write(tmp_path / stale_folder / "Manifest.json")
    assert remove_stale_partials(tmp_path) == sorted([stale_file, stale_folder])
    assert sorted(os.listdir(tmp_path)) == sorted(
        [live, own, "float32.tflite", ".hidden", "x.partial-1.txt"])
    assert remove_stale_partials(tmp_path / "missing") == []
