"""Where ``weights=`` comes from: a pretrained source (download, cache, hash) or a file.

``weights="imagenet"`` / ``"imagenet-hf"`` name rows of `keras_swiftformer.sources.SOURCES`
(hub repository, file, SHA-256, format). A download goes through ``keras.utils.get_file`` into
``~/.keras/models/swiftformer/`` (or ``$KERAS_HOME``) and is converted once to canonical
``.safetensors`` (no torch needed afterwards). Checkpoint files, and ``hf://ORG/REPO[@REVISION]``
Hugging Face Hub repositories (through huggingface_hub's cache, `keras_swiftformer.hub`), are read
by `keras_swiftformer.checkpoints`; their weights are assigned by `keras_swiftformer.mapping`.
A SwiftFormer ``.keras`` file gives its weights layer by layer. `keras_swiftformer.source` builds
the full record a command needs (labels, trained input size, transform) on top of this.
"""

import dataclasses
import functools
import hashlib
import os
import zipfile

from keras_swiftformer.checkpoints import CheckpointError, read_checkpoint
from keras_swiftformer.config import HEADS, SwiftFormerConfig
from keras_swiftformer.hub import is_hub_uri
from keras_swiftformer.mapping import copy_weights, load_tensors
from keras_swiftformer.sources import TAGS, weight_source

CACHE_SUBDIR = os.path.join("models", "swiftformer")


class WeightsDownloadError(OSError):
    """ImageNet weights could not be fetched (offline, or a hash mismatch)."""


def cache_dir():
    """``$KERAS_HOME/models/swiftformer`` (default ``~/.keras/models/swiftformer``)."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, CACHE_SUBDIR)


def sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def source_url(tag, variant):
    return weight_source(tag, variant).url


def _check_hash(path, source):
    """The file's SHA-256 against the source's published one, else against the one recorded
    beside it at first use (recorded now if there is none)."""
    actual = sha256(path)
    expected = source.sha256
    record = path + ".sha256"
    if expected is None and os.path.exists(record):
        with open(record) as f:
            expected = f.read().strip()
    if expected is not None and actual != expected:
        raise WeightsDownloadError(
            f"{path} has SHA-256 {actual}, expected {expected} for {source.url}: delete it to "
            "download it again"
        )
    if not os.path.exists(record):
        with open(record, "w") as f:
            f.write(actual + "\n")


def download(tag, variant, directory=None):
    """Path of the hub file of `tag` for `variant`, downloaded once into the cache with
    ``keras.utils.get_file`` (progress bar; the published SHA-256 checked where known).

    Raises:
        WeightsDownloadError: offline or a hash mismatch; the message says where to put the
        file by hand.
    """
    import keras

    source = weight_source(tag, variant)
    directory = directory or cache_dir()
    subdir = source.repo.replace("/", "--")
    path = os.path.join(directory, subdir, source.file)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:  # into a .part file that get_file removes on failure; renamed once whole
            partial = keras.utils.get_file(
                fname=source.file + ".part", origin=source.url, file_hash=source.sha256,
                hash_algorithm="sha256", cache_dir=directory, cache_subdir=subdir)
        except Exception as err:  # get_file raises bare Exception / ValueError (hash)
            partial = os.path.join(directory, subdir, source.file + ".part")
            if os.path.exists(partial):  # get_file keeps a file that fails its hash
                os.remove(partial)
            if not os.listdir(os.path.dirname(path)):  # leave no empty folder behind
                os.rmdir(os.path.dirname(path))
            raise WeightsDownloadError(
                f"Could not download {source.url} ({err}). Offline? Download it elsewhere and "
                f"place it at {path}, or give the checkpoint file itself, or hf://{source.repo} "
                "with a Hugging Face cache that holds it (HF_HUB_OFFLINE=1)"
            ) from err
        os.replace(partial, path)
    _check_hash(path, source)
    return path


@dataclasses.dataclass
class WeightsSource:
    """What a builder needs from ``weights=``: the architecture it implies and a loader.

    Exactly one of `checkpoint`, `keras_model` and `keras_path` is set.

    Attributes:
        checkpoint: a `keras_swiftformer.checkpoints.Checkpoint` (a file, folder, tag or
            ``hf://`` address).
        keras_model: a SwiftFormer loaded from a ``.keras`` file (its weights are copied by layer
            name); `keras_path` is then the file.
        keras_path: a ``.weights.h5`` file (with `keras_model` None), or the ``.keras`` file.
        kind: "checkpoint", "tag", "hub", "keras" or "weights.h5".
        tag: the `keras_swiftformer.sources.WeightSource` of a weight tag, else None.
        read: how `keras_model`'s variables are read (`keras_swiftformer.mapping.copy_weights`;
            training passes one for variables replicated across processes).
    """

    checkpoint: object = None
    keras_path: str = None
    token_weighting_default: str = None
    keras_model: object = None
    kind: str = "checkpoint"
    tag: object = None
    read: object = None

    @functools.cached_property
    def config(self):
        """The `SwiftFormerConfig` the weights imply (None for a ``.weights.h5`` file)."""
        if self.keras_model is not None:
            return SwiftFormerConfig.from_model(self.keras_model)
        if self.checkpoint is not None:
            return SwiftFormerConfig.from_checkpoint(self.checkpoint)
        return None

    @property
    def variant(self):
        config = self.config
        return config.variant if config is not None else None

    @property
    def classes(self):
        config = self.config
        return config.classes if config is not None else None

    @property
    def token_weighting(self):
        if self.token_weighting_default:
            return self.token_weighting_default
        config = self.config
        return config.token_weighting if config is not None else "l2"

    @property
    def path(self):
        return self.checkpoint.path if self.checkpoint is not None else self.keras_path

    def check_classes(self, classes):
        found = self.classes
        if found is not None and found != classes:
            raise CheckpointError(
                f"{self.path} has {found}-class heads but classes={classes}: pass "
                f"classes={found}, or new_head=True to start new {classes}-class heads"
            )

    def load_into(self, model, new_head=False):
        if self.keras_model is not None:
            skip = HEADS if new_head else ()
            copy_weights(self.keras_model, model, skip=skip, read=self.read)
            return
        if self.keras_path is not None:
            try:
                model.load_weights(self.keras_path, skip_mismatch=False)
            except ValueError as err:
                raise ValueError(f"{self.keras_path} does not fit {model.name}: {err}") from err
            return
        load_tensors(model, self.checkpoint.tensors, new_head, source=self.checkpoint.path)


def read_keras(path, variant=None):
    """A SwiftFormer ``.keras`` file -> (loaded model, its `SwiftFormerConfig`).

    Raises:
        CheckpointError: a missing file, one Keras cannot load (safe mode: no Lambda layers),
            a model that is not a `keras_swiftformer.SwiftFormer` (a ``Sequential`` included), or
            another `variant`.
    """
    import keras

    import keras_swiftformer.layers  # noqa: F401  (registers the custom layers)

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"No such model: {path} (give a .keras file saved by "
                              "swiftformer-train or swiftformer-convert import)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a .keras archive (not a zip file: truncated or "
                              "corrupt?): save it again, or give the checkpoint it came from")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises many kinds for a foreign or corrupt archive
        raise CheckpointError(f"{path} could not be loaded as a Keras model ({err}): give a "
                              ".keras file saved by keras_swiftformer") from None
    try:
        config = SwiftFormerConfig.from_model(model)
    except (ValueError, AttributeError) as err:  # AttributeError: a Sequential never called
        raise CheckpointError(f"{path} is not a keras_swiftformer SwiftFormer model ({err}): "
                              "give a .keras file saved by swiftformer-train or swiftformer-"
                              "convert import, or the checkpoint it came from") from None
    if variant is not None and config.variant != str(variant).upper():
        raise CheckpointError(f"{path} is SwiftFormer-{config.variant or 'CUSTOM'}, not "
                              f"{str(variant).upper()}: leave the variant out, or give a "
                              f"{str(variant).upper()} model")
    return model, config


def _converted(source, variant):
    """The hub file of `source`, converted once to canonical .safetensors; its path."""
    from safetensors.numpy import save_file

    raw = download(source, variant)
    converted = raw + ".canonical.safetensors"
    if not os.path.exists(converted):
        checkpoint = read_checkpoint(raw, variant=variant)
        tmp = converted + ".part"
        save_file(checkpoint.tensors, tmp)
        os.replace(tmp, converted)
    return converted


def resolve_weights(weights, variant=None):
    """``weights=`` argument -> `WeightsSource`: a weight tag (downloaded once), an
    ``hf://ORG/REPO[@REV]`` address, a checkpoint file or folder, a SwiftFormer ``.keras``
    file, a ``.weights.h5`` file, or an already read `Checkpoint`.

    Raises:
        CheckpointError / HubError (ValueError): a source that cannot be read or does not fit.
        WeightsDownloadError: a tag's file is neither cached nor downloadable.
    """
    if isinstance(weights, WeightsSource):  # already resolved (keras_swiftformer.source)
        if variant is not None and weights.variant != str(variant).upper():
            raise CheckpointError(f"{weights.path} is SwiftFormer-{weights.variant}, not {variant}")
        return weights
    if hasattr(weights, "tensors"):  # an already read keras_swiftformer.checkpoints.Checkpoint
        if variant is not None and weights.variant != str(variant).upper():
            raise CheckpointError(f"{weights.path} is SwiftFormer-{weights.variant}, not {variant}")
        return WeightsSource(weights)
    if not isinstance(weights, (str, os.PathLike)):
        raise CheckpointError(f"weights={weights!r} is not a weights source: give None, a "
                              f"weight tag ({', '.join(TAGS)}), hf://ORG/REPO or a path")
    path = os.fspath(weights)
    if path in TAGS:
        source = weight_source(path, variant)
        checkpoint = read_checkpoint(_converted(path, source.variant), variant=variant)
        return WeightsSource(checkpoint, kind="tag", tag=source,
                             token_weighting_default=source.preprocessing.token_weighting)
    if is_hub_uri(path):
        return WeightsSource(read_checkpoint(path, variant=variant), kind="hub")
    if path.endswith(".weights.h5"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such weights file: {path}")
        if variant is None:
            raise ValueError(f"Loading {path} needs the variant: SwiftFormer('XS', weights=...)")
        return WeightsSource(keras_path=path, kind="weights.h5")
    if path.endswith(".keras"):
        model, _ = read_keras(path, variant)
        return WeightsSource(keras_path=path, keras_model=model, kind="keras")
    return WeightsSource(read_checkpoint(path, variant=variant))
