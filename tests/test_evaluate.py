"""converters.evaluate (swiftformer-eval): labels, top-k, the transform per source, JSON."""

import json
import os

import numpy as np
import pytest

from converters.evaluate import dataset_labels, main
from keras_swiftformer import SwiftFormer
from keras_swiftformer.images import load_images
from tests.support import GOLDEN_CASES, SAMPLES, TINY, labelled_tree


@pytest.fixture(scope="module")
def val_tree(tmp_path_factory):
    """val/<synset>/<photo> symlinks, one photo of each of the first 10 classes of SAMPLES
    (7 from a bare clone)."""
    return labelled_tree(tmp_path_factory.mktemp("val"), SAMPLES, classes=10)


def expected_topk(model, paths, labels, size, crop_pct):
    scores = model.predict(load_images(paths, size, crop_pct), verbose=0)
    order = np.argsort(-scores, axis=-1)
    return (order[:, 0] == labels).mean(), (order[:, :5] == labels[:, None]).any(1).mean()


def test_keras_model_with_sidecar_classes_and_tflite(tmp_path, val_tree):
    from converters.litert.tflite import export_tflite

    model = SwiftFormer(**TINY, classes=len(os.listdir(val_tree)), input_shape=(48, 48, 3))
    model.save(tmp_path / "tiny.keras")
    classes = sorted(os.listdir(val_tree))[::-1]  # the model's output order: reversed folders
    (tmp_path / "tiny.json").write_text(json.dumps({"classes": classes, "crop_pct": 0.9}))
    export_tflite(model, tmp_path / "tiny.tflite")

    out = tmp_path / "acc.json"
    assert main([str(tmp_path / "tiny.keras"), str(tmp_path / "tiny.tflite"), "--images",
                 str(val_tree), "--json", str(out), "--classes", str(tmp_path / "tiny.json"),
                 "--batch-size", "4"]) == 0
    keras_result, tflite_result = json.load(open(out))["results"]
    paths = [str(val_tree / f) for f in keras_result["files"]]
    labels = np.array([classes.index(f.split("/")[0]) for f in keras_result["files"]])
    assert keras_result["labels"] == labels.tolist()
    assert (keras_result["crop_pct"], keras_result["size"]) == (0.9, [48, 48])
    top1, top5 = expected_topk(model, paths, labels, 48, 0.9)
    assert keras_result["top1"] == pytest.approx(top1)
    assert keras_result["top5"] == pytest.approx(top5)
    assert tflite_result["kind"] == "tflite" and tflite_result["images"] == len(classes)
    assert tflite_result["crop_pct"] == 0.9  # the sidecar beside tiny.tflite (tiny.json)
    agree = np.mean([a[0] == b[0] for a, b in zip(keras_result["top5_indices"],
                                                  tflite_result["top5_indices"])])
    assert agree >= 0.9


def test_checkpoint_uses_its_source_crop_and_file_name_labels(tmp_path):
    out = tmp_path / "acc.json"
    checkpoint = str(GOLDEN_CASES["timm_xs"][0])
    assert main([checkpoint, "--images", str(SAMPLES), "--limit", "3", "--json", str(out)]) == 0
    result = json.load(open(out))["results"][0]
    assert result["kind"] == "checkpoint (timm)" and result["crop_pct"] == 0.95
    assert result["label_scheme"] == "file-name index" and result["size"] == [224, 224]
    names = sorted(os.listdir(SAMPLES))[:3]
    assert result["labels"] == [int(n.split("_")[0]) for n in names]


def test_folders_that_do_not_fit_the_model_are_refused(tmp_path, val_tree, capsys):
    paths, labels, scheme = dataset_labels(str(val_tree), num_outputs=1000)
    assert scheme == "ImageNet synsets" and labels.max() < 1000
    assert len(paths) == len(os.listdir(val_tree))
    with pytest.raises(ValueError, match="not among the model's classes"):
        dataset_labels(str(val_tree), classes=["cat", "dog"])
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "photo.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="<class index>_"):
        dataset_labels(str(tmp_path / "flat"))
    model = SwiftFormer(**TINY, classes=3, input_shape=(32, 32, 3))
    model.save(tmp_path / "three.keras")
    assert main([str(tmp_path / "three.keras"), "--images", str(val_tree)]) == 2
    assert f"Labels reach {len(paths) - 1} but the model has 3 outputs" in capsys.readouterr().err
