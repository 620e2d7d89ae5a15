"""Where ``weights=`` comes from: ImageNet sources (download, cache, hash) or a file.

``weights="imagenet"`` is timm's hub repositories ``timm/swiftformer_{xs,s,l1,l3}.dist_in1k``:
the current official weights (L2 token weighting), at the paper's accuracy. ``"imagenet-hf"`` is
Hugging Face's ``MBZUAI/swiftformer-*``, converted from the first release's weights and loaded
with the all-ones token weighting they were trained with.

A download is cached under ``~/.keras/models/swiftformer/`` (or ``$KERAS_HOME``) and converted
once to canonical ``.safetensors`` (no torch needed afterwards). Checkpoint files are read by
`converters.checkpoints`; this module only resolves where they are.
"""

import dataclasses
import hashlib
import os

#: Source name -> (hub repository pattern, file, token weighting, evaluation crop fraction).
IMAGENET_SOURCES = {
    "imagenet": dict(repo="timm/swiftformer_{v}.dist_in1k", file="model.safetensors",
                     token_weighting="l2", crop_pct=0.95),
    "imagenet-hf": dict(repo="MBZUAI/swiftformer-{v}", file="pytorch_model.bin",
                        token_weighting="ones", crop_pct=0.875),
}
HUB_URL = "https://huggingface.co/{repo}/resolve/main/{file}"

#: Known SHA-256 of the hub files, checked on every download and load. A file whose hash is not
#: listed here is accepted once and its hash is recorded beside it in the cache (trust on first
#: use), so a later change of the cached file is still detected.
KNOWN_SHA256 = {}

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


def source_url(source, variant):
    spec = IMAGENET_SOURCES[source]
    return HUB_URL.format(repo=spec["repo"].format(v=variant.lower()), file=spec["file"])


def _check_hash(path, url):
    actual = sha256(path)
    expected = KNOWN_SHA256.get(url)
    record = path + ".sha256"
    if expected is None and os.path.exists(record):
        with open(record) as f:
            expected = f.read().strip()
    if expected is not None and actual != expected:
        raise WeightsDownloadError(
            f"{path} has SHA-256 {actual}, expected {expected} for {url}: delete it to download "
            "it again"
        )
    if not os.path.exists(record):
        with open(record, "w") as f:
            f.write(actual + "\n")


def download(source, variant, directory=None):
    """Path of the hub file of `source` for `variant`, downloaded once into the cache.

    Raises:
        WeightsDownloadError: offline or a hash mismatch; the message says where to put the
        file by hand.
    """
    import urllib.request

    if source not in IMAGENET_SOURCES:
        raise ValueError(f"Unknown weights source {source!r}; known: {sorted(IMAGENET_SOURCES)}")
    directory = directory or cache_dir()
    url = source_url(source, variant)
    spec = IMAGENET_SOURCES[source]
    path = os.path.join(directory, spec["repo"].format(v=variant.lower()).replace("/", "--"),
                        spec["file"])
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = path + ".part"
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as f:
                while block := response.read(1 << 20):
                    f.write(block)
        except OSError as err:
            if os.path.exists(partial):
                os.remove(partial)
            raise WeightsDownloadError(
                f"Could not download {url} ({err}). Offline? Download it elsewhere and place it "
                f"at {path}, or pass weights=<path to a checkpoint>."
            ) from err
        os.replace(partial, path)
    _check_hash(path, url)
    return path


@dataclasses.dataclass
class WeightsSource:
    """What a builder needs from ``weights=``: the architecture it implies and a loader."""

    checkpoint: object = None  # converters.checkpoints.Checkpoint
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
            from converters.checkpoints import CheckpointError

            raise CheckpointError(
                f"{self.checkpoint.path} has {found}-class heads but classes={classes}: pass "
                f"classes={found}, or ignore_head=True to start new {classes}-class heads"
            )

    def load_into(self, model, ignore_head=False):
        if self.keras_path is not None:
            try:
                model.load_weights(self.keras_path, skip_mismatch=False)
            except ValueError as err:
                raise ValueError(f"{self.keras_path} does not fit {model.name}: {err}") from err
            return
        from converters.mapping import load_tensors

        load_tensors(model, self.checkpoint.tensors, ignore_head, source=self.checkpoint.path)


def _converted(source, variant):
    """The hub file of `source`, converted once to canonical .safetensors; its path."""
    from converters.checkpoints import read_checkpoint
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
    """``weights=`` argument -> `WeightsSource` (reads a checkpoint, downloads ImageNet ones)."""
    if isinstance(weights, str) and weights in IMAGENET_SOURCES:
        if variant is None:
            raise ValueError(f"weights={weights!r} needs a variant ('XS', 'S', 'L1', 'L3')")
        from converters.checkpoints import read_checkpoint

        checkpoint = read_checkpoint(_converted(weights, str(variant).upper()), variant=variant)
        return WeightsSource(checkpoint,
                             token_weighting_default=IMAGENET_SOURCES[weights]["token_weighting"])
    if hasattr(weights, "tensors"):  # an already read converters.checkpoints.Checkpoint
        if variant is not None and weights.variant != str(variant).upper():
            from converters.checkpoints import CheckpointError

            raise CheckpointError(f"{weights.path} is SwiftFormer-{weights.variant}, not {variant}")
        return WeightsSource(weights)
    path = os.fspath(weights)
    if path.endswith(".weights.h5"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such weights file: {path}")
        if variant is None:
            raise ValueError(f"Loading {path} needs the variant: SwiftFormer('XS', weights=...)")
        return WeightsSource(keras_path=path)
    from converters.checkpoints import read_checkpoint

    return WeightsSource(read_checkpoint(path, variant=variant))
