"""tests/support: the generated references and the committed photos (the test data itself)."""

import re

import numpy as np
import pytest

from keras_swiftformer.imagenet import class_index
from tests.support import (
    GOLDEN_CASES,
    HAS_SHARED_FIXTURES,
    PHOTOS,
    SAMPLES,
    SHARED_FIXTURES,
    golden,
    photos_by_class,
    reference,
)

torch = pytest.importorskip("torch")


def test_generated_cases_are_always_there():
    assert {"original_xs", "original_l1", "timm_xs", "hf_xs"} <= set(GOLDEN_CASES)
    for checkpoint, data, _ in GOLDEN_CASES.values():
        assert checkpoint.exists() and data.is_file()


def test_timm_and_official_goldens_agree_and_hf_differs():
    """One set of weights: timm's math on the official file is timm's own output; the
    transformers model (all-ones token weights) gives other logits on the same weights."""
    official, timm, hf = golden("original_xs"), golden("timm_xs"), golden("hf_xs")
    np.testing.assert_array_equal(official["logits"], timm["logits"])
    np.testing.assert_array_equal(official["inputs_nchw"], hf["inputs_nchw"])
    assert np.max(np.abs(hf["logits"] - official["logits"])) > 1.0
    # Realistic scales: the attention branches move the logits (not the 1e-5 of a fresh model).
    assert 1.0 < np.max(np.abs(official["logits"])) < 1e3


def test_official_file_has_the_official_key_names():
    state = torch.load(GOLDEN_CASES["original_xs"][0], map_location="cpu")["model"]
    for key in ("patch_embed.0.weight", "network.0.2.attn.w_g", "network.0.2.attn.Proj.weight",
                "network.1.proj.weight", "network.0.0.layer_scale", "dist_head.weight"):
        assert key in state, key
    assert not [k for k in state if k.startswith(("stem.", "stages.", "head_dist."))]


@pytest.mark.skipif(not HAS_SHARED_FIXTURES, reason="needs ../shared/fixtures")
def test_key_maps_reproduce_the_shared_fixtures():
    from safetensors.numpy import load_file

    official = {k: v.numpy() for k, v in torch.load(
        SHARED_FIXTURES / "original/swiftformer_xs_random.pth", map_location="cpu")["model"].items()}
    timm = load_file(SHARED_FIXTURES / "timm/swiftformer_xs_random/model.safetensors")
    hf = load_file(SHARED_FIXTURES / "hf/swiftformer_xs_random/model.safetensors")
    for mapped, expected in ((reference.timm_to_official(timm), official),
                             (reference.official_to_hf(official), hf)):
        assert sorted(mapped) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(mapped[key], value, err_msg=key)


def test_committed_photos_are_labelled_and_licensed():
    readme = (PHOTOS / "README.md").read_text()
    names = sorted(p.name for p in PHOTOS.glob("*.jpg"))
    assert len(names) == 7
    for name in names:
        index, synset = name.split("_")[:2]
        assert class_index()[int(index)][0] == synset, name
        assert re.search(rf"\| {re.escape(name)} \|.*\| (CC0|public domain) \|", readme), name
    assert len(photos_by_class(SAMPLES)) >= 7
