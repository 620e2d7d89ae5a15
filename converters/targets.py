"""A target per runtime: one small protocol, registered by name (keras-hub's
``ExporterRegistry`` is the model).

A `converters.formats.Format` names its target ("litert", "coreml"); the target turns the
format's typed recipe into a file and knows everything about files of its kind:

    target = target_of("int8")                # or get_target("litert")
    extra = target.export(fmt, job, path)     # the file, whole or not at all -> row fields
    scores = target.run(path, images)         # (N, classes) as the file outputs them
    info = target.inspect(rows, inspection)   # ops, partitions, GPU engine / op counts
    text = target.describe(fmt, file_name)    # the model card's "how to run"

A new runtime is a package with a `Target` subclass and one `register_target` line here (or in
its own ``__init__``). Suffix tests live here only (`target_of_file`). Pure Python: importing
this module loads no runtime; each target's module is imported on first use. The suffixes
themselves are the format registry's (`converters.formats.SUFFIXES`).
"""

import dataclasses
import importlib
import os
import shutil

from converters.formats import SUFFIXES, compressed_format, get_format
#: Target name -> "module:Class" of its implementation (imported on first use).
_REGISTRY = {"litert": "converters.litert.target:LiteRTTarget",
             "coreml": "converters.coreml.target:CoreMLTarget"}
_INSTANCES = {}


@dataclasses.dataclass(frozen=True)
class ClassifierInfo:
    """What every exported file says about the classifier it holds.

    Attributes:
        variant: "XS", "S", "L1", "L3" or "CUSTOM".
        labels: class names in output order (None: none known).
        labels_source: where the names came from ("ImageNet", "model.json", a file...).
        probabilities: the output is softmax probabilities (else logits).
        source: where the weights came from (a checkpoint, a tag, an ``hf://`` address).
        license: the weights' licence text written into the files (None: the default line).
        preprocessing: the weights' evaluation transform
            (`keras_swiftformer.sources.Preprocessing`); None: the default.
        token_weighting: "l2" or "ones".
    """

    variant: str
    labels: tuple = None
    labels_source: str = None
    probabilities: bool = False
    source: str = None
    license: str = None
    preprocessing: object = None
    token_weighting: str = None


@dataclasses.dataclass
class ExportJob:
    """One Keras model exported to several formats: what every target reads.

    Attributes:
        model: the float Keras classifier (fixed input size) the files are made from.
        about: the `ClassifierInfo` every file carries.
        calibration: (N, H, W, 3) float images in [0, 255] for the calibrated formats.
        graph: "keras" converts every LiteRT format from the model as built; "folded" (the
            default) lets each format's recipe say (`converters.formats.GRAPHS`).
        cache: what a target keeps between formats of this job (the folded graph, the int8
            calibration shared by ``int8`` and ``uint8``).
    """

    model: object
    about: ClassifierInfo
    calibration: object = None
    graph: str = "folded"
    cache: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Inspection:
    """What `Target.inspect` measures on a run's files.

    Attributes:
        output_dir: the folder the rows' ``file`` names are in.
        images: (N, H, W, 3) evaluation images (the GPU engine runs the first `gpu_images`).
        latency_runs: interleaved timed runs of each file on this host (0: off).
        gpu_images: images each file runs on a GPU engine (0: off).
    """

    output_dir: str
    images: object = None
    latency_runs: int = 0
    gpu_images: int = 0


class Target:
    """The protocol of a runtime target; subclasses set `name` and implement the methods.

    Attributes:
        name: the registry name (`converters.formats.Format.target`).
        evaluation_images: how many evaluation images `run` is given (None: all of them; the
            Core ML evaluator is slower than LiteRT).
    """

    name = None
    evaluation_images = None

    @property
    def suffix(self):
        return SUFFIXES[self.name]

    def owns(self, path):
        """Whether `path` has this target's suffix."""
        return str(os.fspath(path)).lower().endswith(self.suffix)

    def export(self, fmt, job, path):
        """Writes format `fmt` of `job` to `path`, whole or not at all (checked as far as the
        target can before the file appears); returns the row fields it knows (graph, ...)."""
        raise NotImplementedError

    def adopt(self, fmt, job, path):
        """Gives a file another tool wrote (`converters.compress`) what `export` would have
        (metadata); returns the row fields."""
        raise NotImplementedError(f"{self.name} files are only written by their target")

    def run(self, path, images):
        """(N, classes) scores of the file at `path` on (N, H, W, 3) images in [0, 255]."""
        raise NotImplementedError

    def reference(self, job, images, outputs):
        """What `run`'s outputs on `images` are compared with: the Keras model's `outputs`
        (probabilities with ``job.about.probabilities``, else logits)."""
        return outputs

    def size(self, path):
        """Bytes of the file (a package folder: all its files)."""
        if os.path.isdir(path):
            return sum(os.path.getsize(os.path.join(root, f))
                       for root, _, files in os.walk(path) for f in files)
        return os.path.getsize(path)

    def inspect(self, rows, inspection, progress=print):
        """Adds what the target measures to its `rows` (dicts with ``file``, ``format``) in
        place; returns the run-level lines ({"latency": ..., ...}) for the report."""
        return {}

    def describe(self, fmt, file_name):
        """One Markdown paragraph: how to run `file_name` (format `fmt`) on this runtime."""
        raise NotImplementedError


def register_target(name, factory, suffix):
    """Registers a target: `factory` a `Target` subclass or "module:Class"; `suffix` its files'
    (".tflite"). A name already registered is replaced."""
    _REGISTRY[name] = factory
    SUFFIXES[name] = suffix
    _INSTANCES.pop(name, None)


def get_target(name):
    """The `Target` registered as `name`; ValueError naming the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown target {name!r}: choose from {', '.join(_REGISTRY)}")
    if name not in _INSTANCES:
        factory = _REGISTRY[name]
        if isinstance(factory, str):
            module, _, cls = factory.partition(":")
            factory = getattr(importlib.import_module(module), cls)
        _INSTANCES[name] = factory()
    return _INSTANCES[name]


def target_of(fmt):
    """The `Target` that writes format `fmt` (a name or `converters.formats.Format`)."""
    record = compressed_format(fmt) if isinstance(fmt, str) else None
    return get_target((record or get_format(fmt)).target)


def target_of_file(path):
    """The target name whose files have `path`'s suffix, or None."""
    suffix = os.path.splitext(os.path.normpath(os.fspath(path)))[1].lower()
    return next((name for name, s in SUFFIXES.items() if s == suffix), None)


def discard(path):
    """Removes a file or package folder that a failed format left (nothing if absent)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)
