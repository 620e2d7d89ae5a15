"""Where ``weights=`` comes from: a pretrained source (download, cache, hash) or a file.

``weights="imagenet"`` / ``"imagenet-hf"`` name rows of `keras_swiftformer.sources.SOURCES`
(hub repository, file, SHA-256, format). A download goes through ``keras.utils.get_file`` into
``~/.keras/models/swiftformer/`` (or ``$KERAS_HOME``) and is converted once to canonical
``.safetensors`` (no torch needed afterwards). Checkpoint files, and ``hf://ORG/REPO[@REVISION]``
Hugging Face Hub repositories (through huggingface_hub's cache, `keras_swiftformer.hub`), are read
by `keras_swiftformer.checkpoints`; their weights are assigned by `keras_swiftformer.mapping`.
"""

import dataclasses
import hashlib
import os

from keras_swiftformer.checkpoints import CheckpointError, read_checkpoint
from keras_swiftformer.mapping import load_tensors
from keras_swiftformer.sources import TAGS, weight_source

CACHE_SUBDIR = os.path.join("models", "swiftformer")


class WeightsDownloadError(RuntimeError):
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
            raise WeightsDownloadError(
                f"Could not download {source.url} ({err}). Offline? Download it elsewhere and "
                f"place it at {path}, or pass weights=<path to a checkpoint>."
            ) from err
        os.replace(partial, path)
    _check_hash(path, source)
    return path


@dataclasses.dataclass
class WeightsSource:
    """What a builder needs from ``weights=``: the architecture it implies and a loader."""

    checkpoint: object = None  # keras_swiftformer.checkpoints.Checkpoint
    keras_path: str = None  # a .weights.h5 file
    token_weighting_default: str = None

    @property
    def variant(self):
        return self.checkpoint.variant if self.checkpoint is not None else None

    @property
    def token_weighting(self):
        if self.token_weighting_default:
            return self.token_weighting_default
        return self.checkpoint.token_weighting if self.checkpoint is not None else "l2"

    def check_classes(self, classes):
        found = self.checkpoint.classes if self.checkpoint is not None else None
        if found is not None and found != classes:
            raise CheckpointError(
                f"{self.checkpoint.path} has {found}-class heads but classes={classes}: pass "
                f"classes={found}, or new_head=True to start new {classes}-class heads"
            )

    def load_into(self, model, new_head=False):
        if self.keras_path is not None:
            try:
                model.load_weights(self.keras_path, skip_mismatch=False)
            except ValueError as err:
                raise ValueError(f"{self.keras_path} does not fit {model.name}: {err}") from err
            return
        load_tensors(model, self.checkpoint.tensors, new_head, source=self.checkpoint.path)


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
    """``weights=`` argument -> `WeightsSource` (reads a checkpoint, a file or ``hf://`` address,
    downloads ImageNet ones)."""
    if isinstance(weights, str) and weights in TAGS:
        source = weight_source(weights, variant)
        checkpoint = read_checkpoint(_converted(weights, source.variant), variant=variant)
        return WeightsSource(checkpoint,
                             token_weighting_default=source.preprocessing.token_weighting)
    if hasattr(weights, "tensors"):  # an already read keras_swiftformer.checkpoints.Checkpoint
        if variant is not None and weights.variant != str(variant).upper():
            raise CheckpointError(f"{weights.path} is SwiftFormer-{weights.variant}, not {variant}")
        return WeightsSource(weights)
    path = os.fspath(weights)
    if path.endswith(".weights.h5"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such weights file: {path}")
        if variant is None:
            raise ValueError(f"Loading {path} needs the variant: SwiftFormer('XS', weights=...)")
        return WeightsSource(keras_path=path)
    return WeightsSource(read_checkpoint(path, variant=variant))
