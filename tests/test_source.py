"""keras_swiftformer.source: every kind of model source, per command, and its bad inputs.

Real parts only: checkpoints from the generated references (official, timm, Hugging Face),
`.keras` files written here, weight tags and ``hf://`` addresses from caches prepared offline
(`tests.support.hub_cache`).
"""

import json
import os

import numpy as np
import pytest

import keras
from keras_swiftformer import SwiftFormer, SwiftFormerXS
from keras_swiftformer.source import SourceError, check_labels, resolve_source
from tests.support import (FIXTURES, GOLDEN_CASES, SAMPLES, TINY, assert_close_to_golden,
                           golden, labelled_tree)
from tests.support.hub_cache import (add_snapshot, hub_cache, place_tag,  # noqa: F401
                                     weights_cache)

REPO = "timm/swiftformer_xs.dist_in1k"
COMMIT = "c" * 40
X64 = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)


def _logits(model, x=X64):
    return np.asarray(model.predict(x, verbose=0))


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    """A 3-class TINY SwiftFormer trained (as far as the source cares) at 48 px: model.keras
    with the model.json that swiftformer-train writes beside it."""
    folder = tmp_path_factory.mktemp("trained")
    model = SwiftFormer(**TINY, classes=3, input_shape=(None, None, 3), name="tiny")
    model.save(folder / "model.keras")
    (folder / "model.json").write_text(json.dumps(
        {"classes": ["cat", "dog", "eel"], "input_size": 48, "crop_pct": 0.9,
         "source": {"from": "scratch"}}))
    return folder


# -- each kind of source -------------------------------------------------------------------

@pytest.mark.parametrize("case, fmt, weighting, crop", [
    ("original_xs", "official", "l2", 0.875), ("timm_xs", "timm", "l2", 0.95),
    ("hf_xs", "hf", "ones", 1.0)])
def test_checkpoint_formats_resolve_with_their_facts(case, fmt, weighting, crop):
    src = resolve_source(GOLDEN_CASES[case][0])
    assert (src.kind, src.variant, src.token_weighting, src.classes) == (
        "checkpoint", "XS", weighting, 1000)
    assert (src.preprocessing.crop_pct, src.provenance["format_in"]) == (crop, fmt)
    assert (src.labels_source, len(src.labels), src.input_size) == ("ImageNet", 1000, None)
    info = src.info()
    assert (info["format_in"], info["random_weights"], info["input_shape"]) == (
        fmt, False, [224, 224, 3])
    data = golden(case)
    model = src.build(input_shape=(None, None, 3), include_preprocessing=False)
    assert_close_to_golden(model.predict(data["inputs"], verbose=0), data["logits"])


def test_nothing_is_random_weights_said_in_the_record():
    src = resolve_source(None, variant="s")
    assert (src.kind, src.variant, src.random_weights, src.classes) == ("random", "S", True, 1000)
    assert src.info()["checkpoint"] == "none (random weights)"
    assert "source" not in src.info()


def test_keras_file_carries_labels_input_size_and_crop(tiny_keras):
    src = resolve_source(tiny_keras / "model.keras")
    assert (src.kind, src.variant, src.classes) == ("keras", "CUSTOM", 3)
    assert (src.labels, src.labels_source) == (("cat", "dog", "eel"), "model.json")
    assert src.input_size == (48, 48) and src.preprocessing.crop_pct == 0.9
    assert src.provenance["trained_from"] == {"from": "scratch"}
    model = src.build()
    assert model.input_shape == (None, 48, 48, 3)
    assert src.info()["input_shape"] == [48, 48, 3]
    original = keras.saving.load_model(tiny_keras / "model.keras")
    x = X64[:, :48, :48]
    np.testing.assert_allclose(keras.ops.softmax(_logits(model, x)), _logits(original, x),
                               atol=1e-5)


def test_labels_file_wins_over_model_json(tiny_keras, tmp_path):
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    src = resolve_source(tiny_keras / "model.keras", labels=str(tmp_path / "names.txt"))
    assert (src.labels, src.labels_source) == (("a", "b", "c"), str(tmp_path / "names.txt"))
    assert resolve_source(None, labels=[f"n{i}" for i in range(1000)]).labels_source == "labels"


def test_weight_tag_from_the_prepared_cache(weights_cache):
    place_tag(weights_cache, "imagenet", "XS",
              FIXTURES / "timm/swiftformer_xs_random/model.safetensors")
    src = resolve_source("imagenet", variant="XS")
    assert (src.kind, src.variant, src.preprocessing.crop_pct) == ("tag", "XS", 0.95)
    assert src.provenance["tag"] == "imagenet" and src.provenance["hub_repo"] == REPO
    timm = resolve_source(FIXTURES / "timm/swiftformer_xs_random").build(input_shape=(64, 64, 3))
    np.testing.assert_array_equal(_logits(src.build(input_shape=(64, 64, 3))), _logits(timm))


def test_weight_tag_offline_names_what_to_do(weights_cache):
    with pytest.raises(SourceError, match=r"Offline\?.*give the checkpoint file itself, or "
                                          rf"hf://{REPO}"):
        resolve_source("imagenet", variant="XS")
    with pytest.raises(SourceError, match="needs a variant: give --variant"):
        resolve_source("imagenet")


def test_hub_address_from_the_prepared_cache_is_pinned(hub_cache):
    folder = FIXTURES / "timm/swiftformer_xs_random"
    add_snapshot(hub_cache, REPO, COMMIT, {"model.safetensors": folder / "model.safetensors"})
    src = resolve_source(f"hf://{REPO}")
    assert (src.kind, src.variant) == ("hub", "XS")
    assert src.provenance["source"] == f"hf://{REPO}@{COMMIT}"
    assert (src.info()["hub_repo"], src.info()["hub_revision"]) == (REPO, COMMIT)
    with pytest.raises(SourceError, match="not in the Hugging Face cache"):
        resolve_source("hf://org/missing")


# -- bad inputs: one line, naming the fix ----------------------------------------------------

def test_missing_corrupt_and_foreign_sources_are_named(tmp_path):
    with pytest.raises(SourceError, match="No such checkpoint: .*weight tags: imagenet"):
        resolve_source(tmp_path / "nothing.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SourceError, match="not a PyTorch checkpoint"):
        resolve_source(tmp_path / "bad.pth")
    (tmp_path / "bad.keras").write_bytes(b"PK not a zip")
    with pytest.raises(SourceError, match="is not a .keras archive"):
        resolve_source(tmp_path / "bad.keras")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(tmp_path / "seq.keras")
    with pytest.raises(SourceError, match="is not a keras_swiftformer SwiftFormer model"):
        resolve_source(tmp_path / "seq.keras")
    with pytest.raises(SourceError, match="token weighting 'l1'"):
        resolve_source(None, token_weighting="l1")


def test_headless_keras_refuses_heads_unless_new(tmp_path):
    SwiftFormer(**TINY, include_top=False, pooling="avg").save(tmp_path / "body.keras")
    src = resolve_source(tmp_path / "body.keras")
    assert (src.classes, src.labels, src.labels_source) == (None, None, None)
    with pytest.raises(SourceError, match="has no classifier heads"):
        src.require_heads()
    with pytest.raises(SourceError, match="has no classifier heads"):
        src.build(include_top=True)
    model = src.build(include_top=True, new_head=True, classes=4, input_shape=(32, 32, 3))
    assert model.output.shape == (None, 4)
    assert _logits(src.build(input_shape=(32, 32, 3)), X64[:, :32, :32]).shape == (2, 32)


@pytest.mark.parametrize("names, message", [
    (["cat", "dog\nfish", "eel"], "control character '\\\\n'"),
    (["cat", "dog\t", "eel"], "control character"),
    (["cat", "", "eel"], "every class needs a name"),
    (["cat", "cat", "eel"], "names the class 'cat' twice"),
    (["cat", "dog"], "2 class names in model.json but the model has 3 outputs"),
    ("cat dog eel", "must be a list of strings"),
])
def test_model_json_names_are_validated(tiny_keras, tmp_path, names, message):
    folder = tmp_path / "m"
    folder.mkdir()
    os.symlink(tiny_keras / "model.keras", folder / "model.keras")
    (folder / "model.json").write_text(json.dumps({"classes": names}))
    with pytest.raises(SourceError, match=message):
        resolve_source(folder / "model.keras")


def test_labels_file_and_bad_trained_size(tiny_keras, tmp_path):
    (tmp_path / "nul.txt").write_text("a\nb\x00\nc\n")
    with pytest.raises(SourceError, match="control character"):
        resolve_source(tiny_keras / "model.keras", labels=str(tmp_path / "nul.txt"))
    with pytest.raises(SourceError, match="Cannot read the labels file"):
        resolve_source(None, labels=str(tmp_path / "none.txt"))
    folder = tmp_path / "m"
    folder.mkdir()
    os.symlink(tiny_keras / "model.keras", folder / "model.keras")
    (folder / "model.json").write_text(json.dumps({"input_size": 100000}))
    with pytest.raises(SourceError, match="input_size 100000"):
        resolve_source(folder / "model.keras")
    assert check_labels(["a", "b"], 2, "x") == ("a", "b")


# -- per command ------------------------------------------------------------------------------

def test_weights_argument_takes_a_keras_file(tiny_keras):
    model = SwiftFormer(weights=str(tiny_keras / "model.keras"), classes=3,
                        input_shape=(48, 48, 3), classifier_activation=None)
    src = resolve_source(tiny_keras / "model.keras").build(input_shape=(48, 48, 3))
    np.testing.assert_array_equal(_logits(model, X64[:, :48, :48]), _logits(src, X64[:, :48, :48]))


def test_import_command_takes_hub_and_keras_and_keeps_a_folder(hub_cache, tiny_keras, tmp_path,
                                                               capsys):
    from converters.cli import main

    folder = FIXTURES / "timm/swiftformer_xs_random"
    add_snapshot(hub_cache, REPO, COMMIT, {"model.safetensors": folder / "model.safetensors"})
    assert main(["import", f"hf://{REPO}", str(tmp_path / "xs.keras")]) == 0
    imported = keras.saving.load_model(tmp_path / "xs.keras")
    expected = SwiftFormerXS(weights=str(folder), input_shape=(None, None, 3))
    np.testing.assert_allclose(_logits(imported), _logits(expected), atol=1e-6)
    assert main(["import", str(tiny_keras / "model.keras"), str(tmp_path / "t.keras")]) == 0
    (tmp_path / "old.keras").mkdir()
    (tmp_path / "old.keras" / "keep.txt").write_text("mine")
    assert main(["import", str(folder), str(tmp_path / "old.keras")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert (tmp_path / "old.keras" / "keep.txt").read_text() == "mine"


def test_train_finetune_and_teacher_take_hub_addresses(hub_cache, tmp_path):
    from keras_swiftformer.training import config as config_lib
    from keras_swiftformer.training.trainer import build_models

    folder = FIXTURES / "timm/swiftformer_xs_random"
    add_snapshot(hub_cache, REPO, COMMIT, {"model.safetensors": folder / "model.safetensors"})
    config = config_lib.make_config("finetune", data=str(tmp_path), output_dir=str(tmp_path / "o"),
                                    finetune=f"hf://{REPO}", teacher=f"hf://{REPO}",
                                    input_size=64)
    config_lib.validate(config)
    models = build_models(config, ["n01440764", "n01443537"])
    assert models.source["format"] == "timm" and models.source["new_head"]
    reference = SwiftFormerXS(weights=str(folder), input_shape=(64, 64, 3),
                              classifier_activation=None)
    np.testing.assert_allclose(_logits(models.teacher), _logits(reference), atol=1e-5)
    body = reference.get_layer("norm").get_weights()
    for a, b in zip(models.student.get_layer("norm").get_weights(), body):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="finetune .*not found: give a checkpoint"):
        config_lib.validate(config_lib.make_config("finetune", data="d", output_dir="o",
                                                   finetune=str(tmp_path / "none.pth")))


# -- swiftformer-eval --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def val_tree(tmp_path_factory):
    """val/<synset>/<photo>: one photo of each of 3 classes (SAMPLES)."""
    return labelled_tree(tmp_path_factory.mktemp("val"), SAMPLES, classes=3)


def _eval(args, capsys):
    from converters.evaluate import main

    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def test_eval_probes_are_one_line_errors(tmp_path, val_tree, capsys):
    from converters.litert.tflite import export_tflite

    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(tmp_path / "seq.keras")
    status, err = _eval([tmp_path / "seq.keras", "--images", val_tree], capsys)
    assert status == 2 and "not a keras_swiftformer SwiftFormer model" in err
    assert len(err.strip().splitlines()) == 1
    features = SwiftFormer(**TINY, include_top=False, input_shape=(32, 32, 3))
    export_tflite(features, tmp_path / "features.tflite")
    status, err = _eval([tmp_path / "features.tflite", "--images", val_tree], capsys)
    assert status == 2 and "is not an image classifier" in err
    status, err = _eval([tmp_path / "seq.keras", "--images", val_tree, "--batch-size", "0"],
                        capsys)
    assert status == 2 and "--batch-size 0 must be at least 1" in err
    status, err = _eval([tmp_path / "seq.keras", "--images", val_tree, "--input-size",
                         "100000"], capsys)
    assert status == 2 and "each side must be 32 to 4096" in err
    from converters.evaluate import dataset_labels

    with pytest.raises(ValueError, match="is a file: give a folder of photos"):
        dataset_labels(str(tmp_path / "seq.keras"))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "keep.txt").write_text("mine")
    status, err = _eval([tmp_path / "seq.keras", "--images", val_tree, "--json",
                         tmp_path / "results"], capsys)
    assert status == 2 and "is a folder" in err
    assert (tmp_path / "results" / "keep.txt").read_text() == "mine"


def test_eval_refuses_a_corrupt_photo_before_running(tmp_path, val_tree, capsys):
    import shutil

    tree = tmp_path / "val"
    shutil.copytree(val_tree, tree, symlinks=False)
    first = sorted(tree.iterdir())[0]
    (first / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 200 + b"\xff\xd9")
    SwiftFormer(**TINY, classes=1000, input_shape=(32, 32, 3)).save(tmp_path / "m.keras")
    status, err = _eval([tmp_path / "m.keras", "--images", tree], capsys)
    assert status == 2 and "broken.jpg" in err and "--on-bad-image skip" in err
    assert len(err.strip().splitlines()) == 1


def test_eval_maps_synset_folders_for_a_model_with_imagenet_names(val_tree):
    from converters.evaluate import dataset_labels
    from keras_swiftformer.imagenet import class_index, class_names

    paths, labels, scheme = dataset_labels(str(val_tree), classes=class_names(),
                                           num_outputs=1000)
    synsets = [s for s, _ in class_index()]
    assert scheme == "ImageNet synsets"
    assert [synsets[i] for i in labels] == [os.path.basename(os.path.dirname(p)) for p in paths]


def test_eval_runs_keras_tflite_mlpackage_and_hub_alike(tmp_path, val_tree, hub_cache, capsys):
    pytest.importorskip("coremltools")
    from converters.coreml.export import export_coreml
    from converters.evaluate import main
    from converters.litert.tflite import export_tflite

    folder = FIXTURES / "timm/swiftformer_xs_random"
    add_snapshot(hub_cache, REPO, COMMIT, {"model.safetensors": folder / "model.safetensors"})
    model = SwiftFormer(**TINY, classes=1000, input_shape=(32, 32, 3), name="tiny")
    model.save(tmp_path / "tiny.keras")
    export_tflite(model, tmp_path / "tiny.tflite")
    export_coreml(model, tmp_path / "tiny.mlpackage", "coreml_float32")
    out = tmp_path / "acc.json"
    assert main([str(tmp_path / n) for n in ("tiny.keras", "tiny.tflite", "tiny.mlpackage")]
                + [f"hf://{REPO}", "--images", str(val_tree), "--input-size", "32",
                   "--json", str(out)]) == 0
    results = json.load(open(out))["results"]
    assert [r["kind"] for r in results] == ["keras", "tflite", "coreml", "hub (timm)"]
    assert {r["label_scheme"] for r in results} == {"ImageNet synsets"}
    keras_top5, _, coreml_top5, _ = [r["top5_indices"] for r in results]
    assert [t[0] for t in coreml_top5] == [t[0] for t in keras_top5]
    assert results[3]["crop_pct"] == 0.95


def test_eval_help_imports_no_tensorflow():
    from tests.support import run_python

    out = run_python("import sys\nfrom converters.evaluate import build_parser\n"
                     "build_parser().format_help()\n"
                     "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'coremltools') "
                     "if m in sys.modules))\n")
    assert out.strip().splitlines()[-1] == "[]"


def test_hf_checkpoint_names_its_classes_from_config_json(tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "hf3"
    shutil.copytree(FIXTURES / "hf/swiftformer_xs_random", folder)
    tensors = load_file(folder / "model.safetensors")
    for name in ("head", "dist_head"):
        for kind in ("weight", "bias"):
            tensors[f"{name}.{kind}"] = tensors[f"{name}.{kind}"][:3].copy()
    save_file(tensors, folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "ant", "1": "bee", "2": "wasp"}
    (folder / "config.json").write_text(json.dumps(config))
    src = resolve_source(folder)
    assert (src.classes, src.labels, src.labels_source) == (3, ("ant", "bee", "wasp"),
                                                            "config.json")
    config["id2label"] = {"0": "ant", "1": "bee\nfly", "2": "wasp"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SourceError, match="class 1 in config.json .* control character"):
        resolve_source(folder)


def test_convert_run_takes_a_tag_and_a_hub_address(weights_cache, hub_cache, tmp_path, capsys):
    """`swiftformer-convert run` resolves what import, eval, train and flow resolve: a weight
    tag and an ``hf://`` address from prepared offline caches, each pinned in report.json."""
    from converters.cli import main
    from converters.results import load

    folder = FIXTURES / "timm/swiftformer_xs_random"
    place_tag(weights_cache, "imagenet", "XS", folder / "model.safetensors")
    add_snapshot(hub_cache, REPO, COMMIT, {"model.safetensors": folder / "model.safetensors"})
    fast = ["--formats", "float32", "--input-size", "64", "--latency-runs", "0",
            "--gpu-images", "0", "--num-calibration", "2", "--num-evaluation", "2"]
    for spec, extra in (("imagenet", ["--variant", "XS"]), (f"hf://{REPO}", [])):
        out = tmp_path / spec.replace("/", "_").replace(":", "")
        assert main(["run", "--checkpoint", spec, *extra, *fast, "--output-dir", str(out)]) == 0
        report = load(out)
        assert report.info.variant == "XS" and not report.info.random_weights
        assert [r.format for r in report.formats if not r.error] == ["float32"]
    assert report.info.hub_repo == REPO and report.info.hub_revision == COMMIT
    capsys.readouterr()
