"""A user's road, from a bare clone: a labelled folder of photos -> ``swiftformer-train
--recipe finetune`` -> ``swiftformer-convert run --checkpoint <run>/model.keras`` -> an int8
file that MediaPipe opens and answers with the user's class names, and a Core ML classifier
over exactly those names."""

import json
import os

import numpy as np
import pytest

from converters.cli import main as convert
from converters.coreml import inspect_coreml
from converters.evaluate import evaluate, file_labels
from converters.litert.metadata import LABEL_FILE, read
from keras_swiftformer.training.cli import main as train
from tests.support import GOLDEN_CASES, SAMPLES
from tests.support.photos import photos_by_class

#: The user's own classes: made-up names for three classes of the committed photos.
NAMES = ("pond fish", "sea ray", "garden bird")
SIZE = 64


def user_folder(root):
    """root/<name>/ with two photos each (symlinks to photos of two ImageNet classes)."""
    for i, path in enumerate(photos_by_class(SAMPLES, classes=2 * len(NAMES))):
        folder = root / NAMES[i % len(NAMES)]
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(path, folder / path.name)
    return root


@pytest.fixture(scope="module")
def road(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("road")
    data = user_folder(tmp / "data" / "train")
    run = tmp / "run"
    assert train(["--recipe", "finetune", "--data", str(data.parent), "--output-dir", str(run),
                  "--finetune", str(GOLDEN_CASES["original_xs"][0]),
                  "--input-size", str(SIZE), "--batch-size", "3", "--epochs", "1",
                  "--steps-per-epoch", "2", "--warmup-epochs", "0", "--val-split=",
                  "--jit-compile", "false", "--fit-verbose", "0"]) == 0
    out = tmp / "converted"
    assert convert(["run", "--checkpoint", str(run / "model.keras"),
                    "--formats", "int8,coreml_float16", "--input-size", str(SIZE),
                    "--images", str(SAMPLES), "--num-calibration", "8",
                    "--num-evaluation", "10", "--latency-runs", "0",
                    "--output-dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    return {"data": data, "out": out, "report": report,
            "rows": {row["format"]: row for row in report["formats"]}}


def test_the_files_carry_the_users_class_names(road):
    assert sorted(NAMES) == sorted(os.listdir(road["data"]))
    names = sorted(NAMES)  # the trainer's class order: sorted folder names
    assert road["report"]["info"]["labels_source"] == "model.json"
    int8 = road["out"] / road["rows"]["int8"]["file"]
    assert read(str(int8))[1][LABEL_FILE].decode().splitlines() == names
    assert file_labels(str(int8)) == names
    spec = inspect_coreml(str(road["out"] / road["rows"]["coreml_float16"]["file"]))
    assert spec["labels"] == names and spec["predicted_feature"] == "classLabel"
    assert road["rows"]["int8"]["fidelity"]["sqnr_db"] > 15  # a regression guard: 19.8 dB measured at 64 px


def test_eval_reads_the_labels_from_the_file(road):
    """swiftformer-eval on the user's folder: the label file maps folder names to outputs."""
    result = evaluate(str(road["out"] / road["rows"]["int8"]["file"]), str(road["data"]))
    assert result["images"] == 2 * len(NAMES) and result["label_scheme"] == "model classes"


def test_mediapipe_answers_with_the_users_names(road, tmp_path):
    from keras_swiftformer.images import list_images, load_images
    from tests.support.mediapipe_tasks import mediapipe_python, run_mediapipe

    python, why = mediapipe_python()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    photos = np.clip(np.round(load_images(list_images(road["data"]), SIZE)), 0, 255)
    np.save(tmp_path / "photos.npy", photos.astype(np.uint8))
    path = str(road["out"] / road["rows"]["int8"]["file"])
    result = run_mediapipe(python, [path], str(tmp_path / "photos.npy"))["results"][path]
    assert "error" not in result, result
    assert set(result["names"]) <= set(NAMES) and result["names"]
