"""Keras SwiftFormer -> Core ML ML program (``.mlpackage``) for iPhone.

The program is written from the folded inference graph (`converters.coreml.graph`) with
coremltools' MIL builder and converted by ``coremltools.convert`` (no TensorFlow frontend, so
TensorFlow's version and ``tf.keras`` do not matter). The package takes an RGB image (a camera
``CVPixelBuffer`` works): the image type subtracts the mean pixel, the ``1 / (255 std)`` of the
ImageNet normalisation is folded into the first convolution, exactly.

Compression (`converters.coreml.compression`) is applied to the float16 program.
"""

import os

from converters.coreml.formats import (
    INPUT_NAME,
    LABEL_NAME,
    LOGITS_NAME,
    METADATA_PREFIX,
    PROBABILITIES_NAME,
    check_options,
    coremltools,
    imagenet_labels,
)
from converters.formats import COREML_FORMATS, file_name
from keras_swiftformer.files import atomic_output

#: `metadata` keys stored in the model's own fields; the others become user metadata.
_MODEL_FIELDS = ("license", "author", "description", "version")


def _model_metadata(model):
    """Variant and token weighting read from a SwiftFormer model."""
    from keras_swiftformer.config import SwiftFormerConfig

    config = SwiftFormerConfig.from_model(model)
    return {"variant": config.variant or "custom", "token_weighting": config.token_weighting}


def convert_program(program, *, precision, classifier, class_labels, target="iOS16",
                    pass_pipeline=None):
    """``coremltools.convert`` of a `converters.coreml.graph.build_program` program: an
    in-memory ``MLModel`` with its outputs named `PROBABILITIES_NAME` and `LABEL_NAME` (a
    classifier) or `LOGITS_NAME`."""
    ct = coremltools()
    mlmodel = ct.convert(
        program,
        convert_to="mlprogram",
        classifier_config=ct.ClassifierConfig(list(class_labels)) if classifier else None,
        compute_precision=(ct.precision.FLOAT16 if precision == "float16"
                           else ct.precision.FLOAT32),
        minimum_deployment_target=getattr(ct.target, target),
        pass_pipeline=pass_pipeline or ct.PassPipeline.DEFAULT,
        skip_model_load=True,
    )
    spec = mlmodel.get_spec()
    new_name = PROBABILITIES_NAME if classifier else LOGITS_NAME
    for output in spec.description.output:
        if (output.type.WhichOneof("Type") in ("multiArrayType", "dictionaryType")
                and output.name != new_name):
            ct.utils.rename_feature(spec, output.name, new_name)
    return ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)


def convert_to_coreml(model, *, precision="float16", classifier=True, class_labels=None,
                      image_size=None, metadata=None, target="iOS16", pass_pipeline=None):
    """Converts a Keras SwiftFormer classifier to an uncompressed in-memory ``MLModel``.

    Arguments as `export_coreml`, but `model` may also be its `coreml_graph`, written as it is
    (`converters.coreml.calibrated` rounds its weights first); `target` the minimum deployment
    target ("iOS16", "iOS17"), `pass_pipeline` a ``coremltools.PassPipeline`` other than the
    default. Returns a
    ``coremltools.models.MLModel`` (ML program) with its input ``image``, outputs named and
    metadata set.
    """
    from converters.coreml.graph import CoreMLGraph, build_program, coreml_graph

    graph = model if isinstance(model, CoreMLGraph) else coreml_graph(model, image_size)
    classes = graph.logits.shape[-1]
    check_options(precision, None, classifier, class_labels, classes)
    labels = None
    if classifier:
        labels = list(class_labels) if class_labels is not None else imagenet_labels()
    program = build_program(graph, classifier=classifier, opset=target)
    mlmodel = convert_program(program, precision=precision, classifier=classifier,
                              class_labels=labels, target=target, pass_pipeline=pass_pipeline)
    metadata = dict(metadata or {})
    height, width = graph.image_size
    info = {**_model_metadata(graph.source),
            **{k: v for k, v in metadata.items() if k not in _MODEL_FIELDS}}
    info.update(precision=precision, compression="none", classifier=str(bool(classifier)),
                image_size=f"{height}x{width}", classes=str(classes))
    _set_metadata(mlmodel, info, metadata, classifier)
    return mlmodel


def _set_metadata(mlmodel, info, metadata, classifier):
    from keras_swiftformer import __version__

    mlmodel.author = str(metadata.get("author", "keras-swiftformer"))
    mlmodel.license = str(metadata.get("license", ""))
    mlmodel.version = str(metadata.get("version", __version__))
    mlmodel.short_description = str(metadata.get(
        "description",
        f"SwiftFormer-{info['variant']} ImageNet classifier (Shaker et al., ICCV 2023), "
        f"converted by keras-swiftformer {__version__}."))
    for key, value in info.items():
        mlmodel.user_defined_metadata[METADATA_PREFIX + key] = str(value)
    mlmodel.input_description[INPUT_NAME] = ("RGB image; the program applies the ImageNet "
                                             "mean and std to its [0, 255] pixels")
    if classifier:
        mlmodel.output_description[PROBABILITIES_NAME] = "softmax probability of each class"
        mlmodel.output_description[LABEL_NAME] = "most likely class"
    else:
        mlmodel.output_description[LOGITS_NAME] = "logits (mean of the two heads)"


def save_coreml(mlmodel, path):
    """Saves `mlmodel` to `path` (``.mlpackage``) atomically; returns `path`."""
    path = os.fspath(path)
    if not path.endswith(".mlpackage"):
        raise ValueError(f"A Core ML ML program is saved as a .mlpackage folder, got {path}")
    with atomic_output(path) as tmp:
        mlmodel.save(tmp)
    return path


def recipe_of(recipe):
    """The `converters.formats.CoreMLRecipe` of a recipe, a Core ML `Format` or its name
    (``"coreml_int8"``); None: float16, uncompressed."""
    from converters.formats import CoreMLRecipe, Format, get_format

    if recipe is None:
        return CoreMLRecipe()
    if isinstance(recipe, (str, Format)):
        fmt = get_format(recipe)
        if fmt.coreml is None:
            raise ValueError(f"{fmt.name} is a {fmt.target} format, not a Core ML one")
        return fmt.coreml
    if not isinstance(recipe, CoreMLRecipe):
        raise ValueError(f"Expected a Core ML format or CoreMLRecipe, got {recipe!r}")
    return recipe


def export_coreml(model, path, recipe=None, *, classifier=True, class_labels=None,
                  image_size=None, metadata=None, calibration=None):
    """Exports a Keras SwiftFormer classifier to a Core ML ``.mlpackage`` (iOS 16+).

    Args:
        model: a SwiftFormer classifier (``include_top=True``; with or without its
            ``preprocessing`` layer and softmax, which are replaced).
        path: output folder, ending in ``.mlpackage``; written atomically.
        recipe: a `converters.formats.CoreMLRecipe` (compute precision and compression),
            or a Core ML format (``"coreml_int8"``); default float16, uncompressed. A
            compression that quantises activations (``w8a8``) needs `calibration`.
        classifier: outputs ``classLabel`` and ``probabilities`` (a label -> probability
            dictionary); False: one ``logits`` (1, classes) array.
        class_labels: class names; default the ImageNet names for 1000 classes.
        image_size: (H, W) of the image input; default the model's, else 224 x 224.
        metadata: ``license``, ``author``, ``description``, ``version`` and any other keys
            (``source_checkpoint``, ``variant``, ``token_weighting``...), stored as
            ``keras_swiftformer.<key>`` user metadata.
        calibration: (N, H, W, 3) RGB images in [0, 255] whose activation ranges ``w8a8``
            quantises to (a few dozen photos of the kind the app sees).

    Returns:
        `path`.
    """
    if not os.fspath(path).endswith(".mlpackage"):
        raise ValueError(f"A Core ML ML program is saved as a .mlpackage folder, got {path}")
    paths = _export(model, {os.fspath(path): recipe_of(recipe)}, calibration,
                    dict(classifier=classifier, class_labels=class_labels,
                         image_size=image_size, metadata=metadata))
    return paths[os.fspath(path)]


def export_coreml_formats(model, directory, formats=COREML_FORMATS, *,
                          name="swiftformer", calibration=None, **options):
    """Exports `model` in several `converters.formats.COREML_FORMATS`, converting once per
    precision and target.

    Args:
        calibration: images for ``w8a8`` (see `export_coreml`).
        options: `export_coreml`'s ``classifier``, ``class_labels``, ``image_size``,
            ``metadata``.

    Returns:
        {format: path of ``<directory>/<name>_<format>.mlpackage``}.
    """
    unknown = [f for f in formats if f not in COREML_FORMATS]
    if unknown:
        raise ValueError(f"Unknown Core ML formats {unknown}: choose from "
                         f"{', '.join(COREML_FORMATS)}")
    jobs = {os.path.join(directory, file_name(name, fmt)): recipe_of(fmt) for fmt in formats}
    paths = _export(model, jobs, calibration, options)
    return dict(zip(formats, paths.values()))


def _export(model, jobs, calibration, options):
    """Writes {path: `CoreMLRecipe`}, converting once per (precision, minimum OS); a
    compression rounded on the calibration photos (`converters.coreml.calibrated`) converts its
    own rounded program when `calibration` is given (palettes fall back to nearest rounding
    without it)."""
    from converters.coreml.calibrated import calibrated_program
    from converters.coreml.compression import compress_coreml

    for recipe in jobs.values():
        check_options(recipe.precision, recipe.compression, options.get("classifier", True),
                      options.get("class_labels"))
        if recipe.compression and recipe.compression.calibrated and calibration is None:
            raise ValueError(f"{recipe.compression.name} quantises activations: give "
                             "calibration images (N, H, W, 3) RGB in [0, 255]")
    converted, paths = {}, {}
    for path, recipe in jobs.items():
        precision, compression, target = recipe.precision, recipe.compression, recipe.minimum_os
        if compression is not None and compression.rounding == "gptq" and calibration is not None:
            mlmodel = calibrated_program(
                model, compression, calibration, image_size=options.get("image_size"),
                convert=lambda graph, pass_pipeline: convert_to_coreml(
                    graph, precision="float16", target=target, pass_pipeline=pass_pipeline,
                    **options))
        else:
            if (precision, target) not in converted:
                converted[precision, target] = convert_to_coreml(model, precision=precision,
                                                                 target=target, **options)
            mlmodel = converted[precision, target]
        paths[path] = save_coreml(compress_coreml(mlmodel, compression), path)
    return paths
