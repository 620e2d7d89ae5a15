"""keras_swiftformer.hub: hf://ORG/REPO[@REVISION] checkpoints from the Hugging Face cache.

Never online: each test writes a cache in the hub's own layout (models--ORG--REPO/{blobs,
snapshots/<commit>,refs/main}) into a temporary HF_HUB_CACHE and runs with HF_HUB_OFFLINE=1.
"""

import os
import sys

import numpy as np
import pytest

from keras_swiftformer import SwiftFormerXS
from keras_swiftformer.checkpoints import CheckpointError, read_checkpoint
from keras_swiftformer.hub import HubError, parse
from tests.support import FIXTURES, run_python
from tests.support.hub_cache import add_snapshot, hub_cache  # noqa: F401  (a fixture)

pytest.importorskip("huggingface_hub")

REPO = "timm/swiftformer_xs.dist_in1k"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def timm_folder():
    return FIXTURES / "timm/swiftformer_xs_random"


@pytest.mark.parametrize("uri, expected", [
    ("hf://timm/swiftformer_xs.dist_in1k", ("timm/swiftformer_xs.dist_in1k", None)),
    ("hf://MBZUAI/swiftformer-xs@main", ("MBZUAI/swiftformer-xs", "main")),
    ("hf://org/repo@refs/pr/3", ("org/repo", "refs/pr/3")),
])
def test_parse(uri, expected):
    assert parse(uri) == expected


@pytest.mark.parametrize("uri", ["hf://", "hf://timm", "hf://a/b/c", "hf://a/b@", "hf://a/b@x@y",
                                 "hf:// a/b"])
def test_malformed_address_is_named(uri):
    with pytest.raises(HubError, match="expected hf://ORG/REPO"):
        parse(uri)
    with pytest.raises(CheckpointError, match="not a Hugging Face checkpoint address"):
        read_checkpoint(uri)


def test_cached_timm_repo_gives_the_local_folder_model(hub_cache):
    folder = timm_folder()
    add_snapshot(hub_cache, REPO, COMMIT_A, {"config.json": folder / "config.json",
                                             "model.safetensors": folder / "model.safetensors"})
    checkpoint = read_checkpoint(f"hf://{REPO}")
    assert (checkpoint.format, checkpoint.variant) == ("timm", "XS")
    assert checkpoint.source == f"hf://{REPO}@{COMMIT_A}"
    assert checkpoint.config is not None  # config.json beside the weights in the snapshot

    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    from_hub = SwiftFormerXS(weights=f"hf://{REPO}").predict(x, verbose=0)
    from_folder = SwiftFormerXS(weights=str(folder)).predict(x, verbose=0)
    np.testing.assert_array_equal(from_hub, from_folder)


def test_revision_pin_picks_that_snapshot(hub_cache):
    timm, hf = timm_folder(), FIXTURES / "hf/swiftformer_xs_random"
    add_snapshot(hub_cache, REPO, COMMIT_A, {"model.safetensors": timm / "model.safetensors"})
    add_snapshot(hub_cache, REPO, COMMIT_B, {"config.json": hf / "config.json",
                                             "model.safetensors": hf / "model.safetensors"})
    assert read_checkpoint(f"hf://{REPO}").format == "hf"  # refs/main -> B
    pinned = read_checkpoint(f"hf://{REPO}@{COMMIT_A}")
    assert (pinned.format, pinned.source) == ("timm", f"hf://{REPO}@{COMMIT_A}")
    local = read_checkpoint(timm)
    assert all(np.array_equal(pinned.tensors[k], v) for k, v in local.tensors.items())
    with pytest.raises(CheckpointError, match=f"{REPO}@{'c' * 40} .*not in the Hugging Face"):
        read_checkpoint(f"hf://{REPO}@{'c' * 40}")


def test_pytorch_bin_is_found_when_there_is_no_safetensors(hub_cache):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    state = {k: torch.from_numpy(v) for k, v in
             load_file(FIXTURES / "hf/swiftformer_xs_random/model.safetensors").items()}
    torch.save(state, hub_cache / "weights.bin")
    add_snapshot(hub_cache, "MBZUAI/swiftformer-xs", COMMIT_A,
                 {"pytorch_model.bin": hub_cache / "weights.bin"})
    checkpoint = read_checkpoint("hf://MBZUAI/swiftformer-xs")
    assert (checkpoint.format, os.path.basename(checkpoint.path)) == ("hf", "pytorch_model.bin")


def test_repo_not_in_the_cache_offline_is_named(hub_cache):
    expected = (r"hf://org/missing: org/missing \(its model.safetensors or pytorch_model.bin\) "
                r"is not in the Hugging Face cache \(.*models--org--missing\) and HF_HUB_OFFLINE=1")
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint("hf://org/missing")
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        SwiftFormerXS(weights="hf://org/missing")


def test_repo_with_other_weights_is_not_a_swiftformer(hub_cache):
    from safetensors.numpy import save

    data = save({"bert.embeddings.word_embeddings.weight": np.zeros((4, 2), np.float32)})
    add_snapshot(hub_cache, "org/bert", COMMIT_A, {"model.safetensors": data})
    with pytest.raises(CheckpointError, match=f"hf://org/bert@{COMMIT_A}: Not a SwiftFormer"):
        read_checkpoint("hf://org/bert")


def test_environment_variables_alone_select_cache_and_offline_mode(tmp_path):
    """A fresh interpreter, configured only by HF_HUB_CACHE and HF_HUB_OFFLINE=1, as a user is."""
    folder = timm_folder()
    add_snapshot(tmp_path, REPO, COMMIT_A, {"model.safetensors": folder / "model.safetensors"})
    out = run_python(
        "from keras_swiftformer.checkpoints import CheckpointError, read_checkpoint\n"
        f"print(read_checkpoint('hf://{REPO}').source)\n"
        "try:\n    read_checkpoint('hf://org/missing')\n"
        "except CheckpointError as err:\n    print(err)\n",
        env={"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert f"hf://{REPO}@{COMMIT_A}" in out
    assert "HF_HUB_OFFLINE=1" in out and str(tmp_path / "models--org--missing") in out


def test_without_huggingface_hub_the_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if absent
    with pytest.raises(ImportError, match="pip install huggingface_hub"):
        read_checkpoint(f"hf://{REPO}")
