"""keras_swiftformer.model: golden parity, parameter counts, options, saving, training."""

import hashlib

import numpy as np
import pytest

import keras
from keras_swiftformer import (
    MODEL_CONFIGS,
    SwiftFormer,
    SwiftFormerBackbone,
    SwiftFormerL1,
    SwiftFormerXS,
)
from keras_swiftformer.imagenet import preprocess_input
from keras_swiftformer.images import list_images, load_images
from tests.support import GOLDEN_CASES, SAMPLES, assert_close_to_golden, golden, run_python

# Reference trainable parameter counts (both heads, 1000 classes, BN statistics excluded).
REFERENCE_PARAMS = {"XS": 3_475_360, "S": 6_092_128, "L1": 12_057_920, "L3": 28_494_736}


@pytest.mark.parametrize("variant", sorted(MODEL_CONFIGS))
def test_trainable_parameters_equal_reference(variant):
    model = SwiftFormer(variant)
    count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert count == REFERENCE_PARAMS[variant]


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_logits_match_golden(case, golden_model):
    data, model = golden(case), golden_model(case)
    assert_close_to_golden(model.predict(data["inputs"], verbose=0), data["logits"])
    assert_close_to_golden(model.predict(data["inputs_odd"], verbose=0), data["logits_odd"])


@pytest.mark.parametrize("case", ["original_xs", "original_l1", "timm_xs"])
def test_pooled_features_match_golden(case):
    checkpoint, _, variant = GOLDEN_CASES[case]
    data = golden(case)
    model = SwiftFormer(variant, weights=str(checkpoint), include_top=False, pooling="avg",
                        include_preprocessing=False, input_shape=(None, None, 3))
    assert_close_to_golden(model.predict(data["inputs"], verbose=0), data["pooled"])
    assert_close_to_golden(model.predict(data["inputs_odd"], verbose=0), data["pooled_odd"])


def test_hf_checkpoint_defaults_to_all_ones_token_weighting(golden_model):
    data = golden("hf_xs")
    checkpoint = str(GOLDEN_CASES["hf_xs"][0])
    l2 = SwiftFormerXS(weights=checkpoint, token_weighting="l2", include_preprocessing=False,
                       classifier_activation=None)
    assert golden_model("hf_xs").get_layer("stages-0-blocks-2-attn").token_weighting == "ones"
    wrong = np.max(np.abs(l2.predict(data["inputs"], verbose=0) - data["logits"]))
    assert wrong > 100 * np.max(np.abs(golden_model("hf_xs").predict(data["inputs"], verbose=0)
                                       - data["logits"]))


def test_builtin_preprocessing_equals_normalised_input(golden_model):
    checkpoint, _, variant = GOLDEN_CASES["original_xs"]
    raw = SwiftFormer(variant, weights=str(checkpoint), classifier_activation=None)
    pixels = load_images(list_images(SAMPLES)[:2])
    expected = golden_model("original_xs").predict(preprocess_input(pixels, normalize=True),
                                                   verbose=0)
    np.testing.assert_allclose(raw.predict(pixels, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_softmax_top_and_headless_map_shapes():
    model = SwiftFormerXS(input_shape=(256, 320, 3))
    probs = model.predict(np.random.uniform(0, 255, (2, 256, 320, 3)), verbose=0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    headless = SwiftFormerXS(include_top=False, input_shape=(256, 320, 3))
    assert headless.output.shape == (None, 8, 10, 220)


def test_backbone_returns_four_strided_stage_maps():
    backbone = SwiftFormerBackbone("L1")
    out = backbone.predict(np.zeros((1, 224, 160, 3)), verbose=0)
    widths = MODEL_CONFIGS["L1"]["widths"]
    assert {k: v.shape for k, v in out.items()} == {
        f"P{i + 2}": (1, 224 // 2 ** (i + 2), 160 // 2 ** (i + 2), widths[i]) for i in range(4)
    }


def test_keras_file_round_trip_in_fresh_process(golden_model, tmp_path):
    model = golden_model("hf_xs")
    data = golden("hf_xs")
    path = tmp_path / "xs.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", data["inputs_odd"])
    expected = model.predict(data["inputs_odd"], verbose=0)
    out = run_python(
        "import hashlib, keras, numpy as np\n"
        "import keras_swiftformer  # registers the layers; no custom_objects\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        f"y = m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, y)\n"
        "print(hashlib.sha256(b''.join(np.asarray(w).tobytes() for w in m.weights)).hexdigest())\n"
        "print(m.get_layer('stages-0-blocks-2-attn').token_weighting)\n"
    )
    digest, weighting = out.split()[-2:]
    assert weighting == "ones"
    assert digest == hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.weights)).hexdigest()
    # Same weights and graph; oneDNN may sum in another order across processes (float32 noise).
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-6 * scale)


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="variant"):
        SwiftFormer("XXL")
    with pytest.raises(ValueError, match="token_weighting"):
        SwiftFormerXS(token_weighting="softmax")
    with pytest.raises(ValueError, match="pooling"):
        SwiftFormerXS(include_top=False, pooling="mean")


def test_fit_with_new_head_lowers_loss_and_updates_batchnorm():
    checkpoint = str(GOLDEN_CASES["original_xs"][0])
    paths = list_images(SAMPLES)[:20]
    x = load_images(paths, size=128)
    y = np.arange(len(paths)) % 10
    model = SwiftFormerXS(weights=checkpoint, classes=10, new_head=True,
                          input_shape=(128, 128, 3), drop_path_rate=0.1)
    assert any(layer.name.endswith("-drop_path") for layer in model.layers)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    before_mean = np.array(model.get_layer("stem-1").moving_mean)
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=10, epochs=6, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first
    assert not np.allclose(model.get_layer("stem-1").moving_mean, before_mean)


def test_l1_builder_accepts_input_tensor():
    image = keras.Input((96, 96, 3))
    model = SwiftFormerL1(input_tensor=image, include_top=False, pooling="avg")
    assert model.output.shape == (None, 384)
