"""keras_swiftformer.weights: weights="imagenet" from the cache, offline errors, hashes."""

import dataclasses
import os
import shutil

import pytest

from keras_swiftformer import SwiftFormerXS
from keras_swiftformer import sources as sources_lib
from keras_swiftformer import weights as weights_lib
from keras_swiftformer.preprocessing import FORMAT_DEFAULTS
from tests.support import FIXTURES, assert_close_to_golden, golden
from tests.support.hub_cache import place_tag, weights_cache  # noqa: F401  (a fixture)


@pytest.fixture
def cache(weights_cache):
    return weights_cache


def _place(cache, tag, variant, src):
    return place_tag(cache, tag, variant, src)


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
    assert not any(p.is_dir() for p in cache.rglob("*"))


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
    _publish_hash(monkeypatch, "imagenet", "XS", "0" * 64)
    with pytest.raises(weights_lib.WeightsDownloadError, match="expected 0000"):
        weights_lib.download("imagenet", "XS")
    _publish_hash(monkeypatch, "imagenet", "XS", weights_lib.sha256(path))
    assert weights_lib.download("imagenet", "XS") == str(path)


def _publish_hash(monkeypatch, tag, variant, digest):
    source = sources_lib.SOURCES[(tag, variant)]
    monkeypatch.setitem(sources_lib.SOURCES, (tag, variant),
                        dataclasses.replace(source, sha256=digest))


def _serve(monkeypatch, folder):
    """Points the hub at a local folder laid out as the hub is (file:// URLs): the real
    download code (keras.utils.get_file) runs on local files."""
    monkeypatch.setattr(sources_lib, "HUB_URL", folder.as_uri() + "/{repo}/{file}")


def _hub_copy(tmp_path, tag, variant, src):
    source = sources_lib.weight_source(tag, variant)
    target = tmp_path / "hub" / source.repo / source.file
    target.parent.mkdir(parents=True)
    shutil.copy(src, target)
    return target


def test_download_through_get_file_checks_the_published_hash(cache, tmp_path, monkeypatch):
    hub = _hub_copy(tmp_path, "imagenet", "XS",
                    FIXTURES / "timm/swiftformer_xs_random/model.safetensors")
    _serve(monkeypatch, tmp_path / "hub")
    _publish_hash(monkeypatch, "imagenet", "XS", "f" * 64)
    with pytest.raises(weights_lib.WeightsDownloadError, match="hash"):
        weights_lib.download("imagenet", "XS")
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing half-written stays
    _publish_hash(monkeypatch, "imagenet", "XS", weights_lib.sha256(hub))
    path = weights_lib.download("imagenet", "XS")
    assert weights_lib.sha256(path) == weights_lib.sha256(hub)
    _assert_source_matches_golden("imagenet", "timm_xs", "l2")


def test_every_variant_has_both_sources_with_their_facts():
    for variant in ("XS", "S", "L1", "L3"):
        timm = sources_lib.weight_source("imagenet", variant)
        hf = sources_lib.weight_source("imagenet-hf", variant)
        assert (timm.preprocessing.token_weighting, timm.preprocessing.crop_pct) == ("l2", 0.95)
        assert (hf.preprocessing.token_weighting, hf.preprocessing.crop_pct,
                hf.preprocessing.crop_mode) == ("ones", 1.0, "squash")
    with pytest.raises(ValueError, match="Unknown weights source"):
        sources_lib.weight_source("imagenet-22k", "XS")
    with pytest.raises(ValueError, match="needs a variant"):
        sources_lib.weight_source("imagenet", None)


def test_source_urls_point_at_the_hub_repositories():
    assert weights_lib.source_url("imagenet", "L3") == (
        "https://huggingface.co/timm/swiftformer_l3.dist_in1k/resolve/main/model.safetensors")
    assert weights_lib.source_url("imagenet-hf", "S") == (
        "https://huggingface.co/MBZUAI/swiftformer-s/resolve/main/pytorch_model.bin")


def test_format_defaults_match_the_publishers_code():
    """timm's pretrained_cfg and transformers' processor for SwiftFormer, read from the installed
    packages (the official evaluation transform is not installable: see preprocessing.py)."""
    from tests.support.reference import import_timm

    timm = import_timm()  # first: it lets torchvision, which transformers imports, load
    from transformers.image_utils import PILImageResampling
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    for variant in ("xs", "s", "l1", "l3"):
        cfg = timm.models.get_pretrained_cfg(f"swiftformer_{variant}.dist_in1k").to_dict()
        ours = FORMAT_DEFAULTS["timm"]
        assert (cfg["crop_pct"], cfg["interpolation"], cfg.get("crop_mode") or "center") == (
            ours.crop_pct, ours.interpolation, ours.crop_mode)
        assert (tuple(cfg["mean"]), tuple(cfg["std"])) == (ours.mean, ours.std)

    # {"torchvision": "ViTImageProcessor", "pil": "ViTImageProcessorPil"}: one set of defaults,
    # two backends; the PIL one needs no torchvision ops (see tests/support/reference.py).
    assert IMAGE_PROCESSOR_MAPPING_NAMES["swiftformer"]["pil"] == "ViTImageProcessorPil"
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    hf = FORMAT_DEFAULTS["hf"]
    processor = ViTImageProcessorPil()
    assert not getattr(processor, "do_center_crop", False)  # a resize to size x size, no crop
    assert processor.size == {"height": 224, "width": 224}
    assert PILImageResampling(processor.resample).name.lower() == hf.interpolation
    assert (hf.crop_mode, hf.crop_pct) == ("squash", 1.0)
