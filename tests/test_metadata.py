"""converters.metadata: the TFLite metadata flatbuffer, the packed label file, MediaPipe's input
rules. (MediaPipe itself opens the pipeline's files in tests/test_pipeline.py.)"""

import json

import numpy as np
import pytest

from converters import metadata
from converters.runtime import TFLiteRunner
from keras_swiftformer.preprocessing import FORMAT_DEFAULTS

LABELS = [f"class_{i}" for i in range(1000)]


@pytest.fixture(scope="module")
def tiny_float32(tmp_path_factory):
    """A tiny SwiftFormer (64x64, 1000 classes) as float32 `.tflite` bytes."""
    from converters.tflite import convert
    from keras_swiftformer import SwiftFormer

    model = SwiftFormer(depths=(1, 1, 1, 1), widths=(16, 16, 32, 32), input_shape=(64, 64, 3),
                        classifier_activation=None)
    return bytes(convert(model, "float32"))


def buffer_positions(content):
    """Where each constant buffer's data starts in a `.tflite` (bytes from the start)."""
    from ai_edge_litert.schema_py_generated import Model

    model = Model.GetRootAsModel(bytearray(content), 0)
    positions = []
    for i in range(model.BuffersLength()):
        table = model.Buffers(i)._tab
        offset = table.Offset(4)
        if offset and table.VectorLen(offset):
            positions.append(table.Vector(offset))
    return positions


def test_flatbuffer_round_trip():
    meta = {"name": "m", "version": "1", "min_parser_version": "1.0.0",
            "subgraph_metadata": [{
                "input_tensor_metadata": [{
                    "name": "image", "stats": {"max": [255.0], "min": [0.0]},
                    "content": {"content_properties": {"type": "ImageProperties",
                                                       "value": {"color_space": 1}}},
                    "process_units": [{"options": {"type": "NormalizationOptions", "value": {
                        "mean": [0.5, 0.0, 0.0], "std": [2.0, 1.0, 1.0]}}}]}],
                "output_tensor_metadata": [{"name": "logits", "associated_files": [
                    {"name": "labels.txt", "type": 2}]}]}]}
    buf = metadata.encode_metadata(meta)
    assert buf[4:8] == b"M001"
    assert metadata.decode_metadata(buf) == meta
    with pytest.raises(metadata.MetadataError, match="has no field"):
        metadata.encode_metadata({"name": "m", "colour": "red"})
    with pytest.raises(metadata.MetadataError, match="no M001 identifier"):
        metadata.decode_metadata(b"\x00" * 16)


def test_classifier_metadata_attached_read_back_and_replaced(tiny_float32):
    content = metadata.add_classifier_metadata(
        tiny_float32, "XS", "float32", LABELS, source_checkpoint="ckpt.pth", license="MIT",
        preprocessing=FORMAT_DEFAULTS["timm"])
    meta, files = metadata.read(content)
    assert meta["name"] == "SwiftFormer-XS (float32)" and meta["license"] == "MIT"
    assert meta["min_parser_version"] == metadata.MIN_PARSER_VERSION
    assert "ckpt.pth" in meta["description"]
    (image,) = meta["subgraph_metadata"][0]["input_tensor_metadata"]
    assert image["process_units"][0]["options"] == {
        "type": "NormalizationOptions", "value": {"mean": [0.0] * 3, "std": [1.0] * 3}}
    assert image["stats"] == {"max": [255.0], "min": [0.0]} and "64x64" in image["description"]
    (scores,) = meta["subgraph_metadata"][0]["output_tensor_metadata"]
    assert scores["name"] == "logits" and "not probabilities" in scores["description"]
    assert scores["associated_files"][0]["name"] == metadata.LABEL_FILE
    assert files[metadata.LABEL_FILE].decode().splitlines() == LABELS
    info = json.loads(files[metadata.INFO_FILE])
    assert info["preprocessing"]["crop_pct"] == 0.95 and info["input"]["dtype"] == "float32"
    assert metadata.mediapipe_ready(content) is None
    # The model is unchanged, its constants still 16-byte aligned (mappable without copies).
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(TFLiteRunner(content=content).predict(x),
                                  TFLiteRunner(content=tiny_float32).predict(x))
    assert all(p % 16 == 0 for p in buffer_positions(content))
    # Written again: one metadata buffer, the new files only.
    again = metadata.add_classifier_metadata(content, "XS", "float32", None, probabilities=True)
    meta, files = metadata.read(again)
    (scores,) = meta["subgraph_metadata"][0]["output_tensor_metadata"]
    assert scores["name"] == "probability" and scores["stats"] == {"max": [1.0], "min": [0.0]}
    assert list(files) == [metadata.INFO_FILE] and "associated_files" not in scores
    assert abs(len(again) - len(content)) < 20_000  # labels gone, not a second copy added


def test_mediapipe_input_rules(tiny_float32):
    assert metadata.mediapipe_ready(tiny_float32) == "no TFLite metadata"
    from converters.litert_inspect import flatbuffer_utils

    fb = flatbuffer_utils()
    model = fb.read_model_from_bytearray(bytearray(tiny_float32))
    graph = model.subgraphs[0]
    graph.tensors[graph.inputs[0]].type = 9  # INT8: what MediaPipe refuses
    int8_input = bytes(fb.convert_object_to_bytearray(model))
    labelled = metadata.add_classifier_metadata(int8_input, "XS", "int8", LABELS)
    assert "input is int8" in metadata.mediapipe_ready(labelled)
    assert metadata.tensor_io(labelled)[0]["dtype"] == "int8"
