"""keras_swiftformer.weights: weights="imagenet" from the cache, offline errors, hashes."""

import os
import shutil

import pytest

from keras_swiftformer import SwiftFormerXS
from keras_swiftformer import weights as weights_lib
from tests.support import FIXTURES, assert_close_to_golden, golden


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # A closed local port: the download code runs for real and fails as offline.
    monkeypatch.setattr(weights_lib, "HUB_URL", "http://127.0.0.1:9/{repo}/resolve/main/{file}")
    return tmp_path / "models" / "swiftformer"


def _place(cache, source, variant, src):
    spec = weights_lib.IMAGENET_SOURCES[source]
    folder = cache / spec["repo"].format(v=variant.lower()).replace("/", "--")
    folder.mkdir(parents=True)
    shutil.copy(src, folder / spec["file"])
    return folder / spec["file"]


def _assert_source_matches_golden(source, case, token_weighting):
    data = golden(case)
    model = SwiftFormerXS(weights=source, include_preprocessing=False,
                          classifier_activation=None)
    assert model.get_layer("stages-0-blocks-2-attn").token_weighting == token_weighting
    assert_close_to_golden(model.predict(data["inputs"], verbose=0), data["logits"])


def test_offline_without_cache_gives_a_clear_error(cache):
    with pytest.raises(weights_lib.WeightsDownloadError, match=r"Offline\?.*place it at"):
        SwiftFormerXS(weights="imagenet")
    assert not any(p.suffix == ".part" for p in cache.rglob("*"))


def test_imagenet_from_cached_timm_file(cache):
    path = _place(cache, "imagenet", "XS", FIXTURES / "timm/swiftformer_xs_random/model.safetensors")
    _assert_source_matches_golden("imagenet", "timm_xs", "l2")
    assert os.path.exists(str(path) + ".canonical.safetensors")
    assert os.path.exists(str(path) + ".sha256")


def test_imagenet_hf_source_uses_all_ones_weighting(cache):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    state = {k: torch.from_numpy(v) for k, v in
             load_file(FIXTURES / "hf/swiftformer_xs_random/model.safetensors").items()}
    tmp = cache.parent / "hf.bin"
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp)
    _place(cache, "imagenet-hf", "XS", tmp)
    _assert_source_matches_golden("imagenet-hf", "hf_xs", "ones")


def test_changed_cached_file_fails_its_recorded_hash(cache):
    path = _place(cache, "imagenet", "XS", FIXTURES / "timm/swiftformer_xs_random/model.safetensors")
    weights_lib.download("imagenet", "XS")
    with open(path, "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(weights_lib.WeightsDownloadError, match="SHA-256"):
        weights_lib.download("imagenet", "XS")


def test_known_hash_is_checked(cache, monkeypatch):
    path = _place(cache, "imagenet", "XS", FIXTURES / "timm/swiftformer_xs_random/model.safetensors")
    url = weights_lib.source_url("imagenet", "XS")
    monkeypatch.setitem(weights_lib.KNOWN_SHA256, url, "0" * 64)
    with pytest.raises(weights_lib.WeightsDownloadError, match="expected 0000"):
        weights_lib.download("imagenet", "XS")
    monkeypatch.setitem(weights_lib.KNOWN_SHA256, url, weights_lib.sha256(path))
    assert weights_lib.download("imagenet", "XS") == str(path)


def test_source_urls_point_at_the_hub_repositories():
    assert weights_lib.source_url("imagenet", "L3") == (
        "https://huggingface.co/timm/swiftformer_l3.dist_in1k/resolve/main/model.safetensors")
    assert weights_lib.source_url("imagenet-hf", "S") == (
        "https://huggingface.co/MBZUAI/swiftformer-s/resolve/main/pytorch_model.bin")
