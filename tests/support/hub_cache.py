"""Prepared offline caches of the two places weights come from, for tests that never go online:
the Hugging Face hub's cache (``hf://``) and the Keras cache of the weight tags (``imagenet``).
"""

import hashlib
import os
import pathlib
import shutil

import pytest


def add_snapshot(cache, repo_id, commit, files, ref="main"):
    """Writes `files` ({name: source path or bytes}) as snapshot `commit` of `repo_id` in the
    hub's cache layout (content-addressed blobs, relative symlinks), `ref` pointing at it."""
    storage = pathlib.Path(cache) / ("models--" + repo_id.replace("/", "--"))
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else pathlib.Path(content).read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    if ref:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty HF_HUB_CACHE, offline (the environment and huggingface_hub's constants, which
    it reads once at import)."""
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def weights_cache(tmp_path, monkeypatch):
    """An empty ``$KERAS_HOME/models/swiftformer`` with the hub's address pointing at a closed
    local port: the download code runs for real and fails as offline."""
    from keras_swiftformer import sources

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(sources, "HUB_URL", "http://127.0.0.1:9/{repo}/resolve/main/{file}")
    return tmp_path / "models" / "swiftformer"


def place_tag(cache, tag, variant, src):
    """Copies the checkpoint file `src` where weight tag `tag` of `variant` is cached."""
    from keras_swiftformer.sources import weight_source

    source = weight_source(tag, variant)
    folder = pathlib.Path(cache) / source.repo.replace("/", "--")
    folder.mkdir(parents=True)
    shutil.copy(src, folder / source.file)
    return folder / source.file
