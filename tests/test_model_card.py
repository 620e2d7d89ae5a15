"""converters.model_card: MODEL_CARD.md from the pipeline's report data."""

import os

import pytest
import yaml

from converters.model_card import CARD_NAME, model_card, paper_bibtex, write_model_card
from converters.report import markdown_table

INFO = {"checkpoint": "/data/swiftformer_xs", "source": "hf://timm/swiftformer_xs.dist_in1k@"
        + "a" * 40, "format_in": "timm", "random_weights": False, "crop_pct": 0.95,
        "variant": "XS", "token_weighting": "l2", "input_shape": [224, 224, 3],
        "calibration_images": 24, "evaluation_images": 40, "image_source": "photos",
        "synthetic_images": False, "versions": "keras 3.15.1, tensorflow 2.21.0",
        "latency": "LiteRT + XNNPACK, 1 thread", "license": "Apache-2.0"}
ROWS = [
    {"format": "float32", "file": "swiftformer_xs_float32.tflite", "graph": "folded",
     "size_bytes": 12_800_000, "max_abs_error": 2e-5, "sqnr_db": 95.2, "top1_agreement": 1.0,
     "evaluation_images": 40, "latency_ms": 7.5, "mediapipe": True},
    {"format": "int8", "file": "swiftformer_xs_int8.tflite", "graph": "folded",
     "size_bytes": 3_500_000, "sqnr_db": 21.0, "top1_agreement": 0.95, "mediapipe": True},
    {"format": "coreml_float16", "file": "swiftformer_xs_coreml_float16.mlpackage",
     "graph": "folded", "size_bytes": 6_400_000, "sqnr_db": 60.0,
     "coreml_ops": {"count": 300, "transposes": 2}},
    {"format": "int16x8", "file": "swiftformer_xs_int16x8.tflite",
     "error": "ConverterError: int16x8 unsupported op"},
]
LABELS = [f"class_{i}" for i in range(12)]


def front_matter(card):
    assert card.startswith("---\n")
    end = card.index("\n---\n", 4)
    return yaml.safe_load(card[4:end]), card[end + 5:]


def test_card_has_every_section_and_valid_front_matter():
    card = model_card(INFO, ROWS, LABELS)
    meta, body = front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "keras"
    assert meta["pipeline_tag"] == "image-classification"
    assert {"swiftformer", "tflite", "coreml", "mediapipe"} <= set(meta["tags"])
    assert meta["base_model"] == "timm/swiftformer_xs.dist_in1k"
    assert "datasets" not in meta  # 12 custom labels: not ImageNet's
    for section in ("# SwiftFormer-XS", "## Model", "## Weights", "## Preprocessing",
                    "## Labels", "## Fidelity and latency", "## How to run", "## Citation"):
        assert f"\n{section}\n" in f"\n{body}", section
    assert INFO["source"] in body and "timm checkpoint format" in body
    # Preprocessing per the timm format: centre crop at 0.95 (235 for 224), bicubic.
    assert "bicubic resize of the shorter side to 235" in body and "0-255" in body
    assert "12 classes" in body and "`class_0`" in body and "`class_9`" in body
    assert "`class_10`" not in body and "(2 more)" in body
    assert markdown_table(ROWS) in body
    for row in ROWS[:3]:
        assert row["file"] in body
    for snippet in ("ImageClassifier.createFromOptions(context", "MediaPipeTasksVision",
                    "@mediapipe/tasks-vision", "VNCoreMLRequest", "VNClassificationObservation"):
        assert snippet in body, snippet
    assert 'setModelAssetPath("swiftformer_xs_float32.tflite")' in body
    assert '"swiftformer_xs_coreml_float16", withExtension: "mlmodelc"' in body
    assert "@InProceedings{Shaker_2023_ICCV" in body and paper_bibtex() in body


def test_error_rows_are_listed_as_failed():
    body = front_matter(model_card(INFO, ROWS, LABELS))[1]
    failed = body[body.index("**Failed formats**"):body.index("## How to run")]
    assert "`int16x8`: FAILED: ConverterError: int16x8 unsupported op" in failed
    assert "float32" not in failed


def test_random_weights_say_so_and_imagenet_labels_by_default():
    info = {"checkpoint": "none (random weights)", "random_weights": True, "crop_pct": 0.875,
            "variant": "XS", "input_shape": [256, 320, 3], "synthetic_images": True}
    rows = [{"format": "float32", "file": "swiftformer_xs_float32.tflite"}]  # no metrics
    card = model_card(info, rows)
    meta, body = front_matter(card)
    assert "random-weights" in meta["tags"] and "datasets" not in meta
    assert "**This is not a trained model.**" in body and "Latency: not measured" in body
    assert "1000 classes" in body and "`tench`" in body and "imagenet_classes.tsv" in body
    assert "256x320" in body and "resize of the shorter side to 292" in body  # int(256/0.875)
    assert "VNCoreMLRequest" not in body  # no .mlpackage among the files


def test_hugging_face_format_is_a_plain_resize_and_unknown_licence_is_other():
    info = {**INFO, "format_in": "hf", "crop_pct": 1.0, "token_weighting": "ones"}
    del info["license"], info["source"]
    meta, body = front_matter(model_card(info, ROWS[:1]))
    assert meta["license"] == "other" and "--license" in body
    assert meta["datasets"] == ["imagenet-1k"] and "base_model" not in meta
    assert "bilinear resize of the whole image to 224x224" in body and "no crop" in body
    assert "which is this resize" in body  # MediaPipe's stretch matches it


def test_write_model_card_is_atomic(tmp_path):
    path = write_model_card(tmp_path / "out", INFO, ROWS, LABELS)
    assert path == os.path.join(tmp_path / "out", CARD_NAME)
    with open(path, encoding="utf-8") as f:
        assert f.read() == model_card(INFO, ROWS, LABELS)
    assert os.listdir(tmp_path / "out") == [CARD_NAME]
    with pytest.raises(TypeError, match="report rows .*NoneType"):
        write_model_card(tmp_path / "bad", INFO, [None])
    assert not os.path.exists(tmp_path / "bad")
