"""The model card of a conversion: ``MODEL_CARD.md`` beside the converted files.

Markdown as the Hugging Face Hub and Kaggle Models show it: YAML front matter (licence, library,
tags, pipeline tag, datasets where known), then what the model and its weights are, the
preprocessing the weights expect, the labels, the file to ship per runtime
(`converters.report.choose_files`), the measured fidelity, latency and accuracy
(`converters.report.markdown_table`), the files of the run, how to run the chosen files
(MediaPipe Tasks on Android, iOS and the web; Core ML through Vision) and the paper's citation.
Its input is the run's typed `converters.results.Report`; facts it lacks are left out. Every
text that came from the user (labels, licence, sources, file names) is escaped for Markdown and
HTML (`converters.report.md_text`, `md_code`).
"""

import json
import os
import re
import textwrap

from converters import results as R
from converters.report import (TARGETS, add_accuracy, choose_files, markdown_table, md_code,
                               md_text, ship_lines, write_report)
from keras_swiftformer.config import IMAGENET_MEAN, IMAGENET_STD

CARD_NAME = "MODEL_CARD.md"
#: Labels shown in the card before "...".
FIRST_LABELS = 10
#: Where the class names come from when none are given (`keras_swiftformer.imagenet`).
IMAGENET_LABELS_SOURCE = ("the 1000 ImageNet-1k classes in index order "
                          "(keras_swiftformer/data/imagenet_classes.tsv: WordNet synsets, the "
                          "first lemma of each)")
#: A licence given as a Hub licence id (apache-2.0, mit, cc-by-4.0...) rather than a text.
_LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")
#: File names the code examples may quote as they are.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _yaml(value):
    """`value` as a YAML scalar or flow list: JSON, with <, > and & as \\u escapes so that no
    renderer that shows the front matter as text can find a tag in it."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _front_matter(fields):
    lines = ["---"] + [f"{key}: {_yaml(value)}" for key, value in fields.items() if value]
    return "\n".join(lines + ["---", ""])


def _license(info):
    """(Hub licence id, sentence about the weights' licence, as Markdown)."""
    given = info.license
    if info.random_weights:
        return "apache-2.0", ("None: the weights are random. The code that made these files is "
                              "keras-swiftformer, Apache-2.0.")
    if given and _LICENSE_ID.fullmatch(str(given)):
        return str(given).lower(), f"{md_text(given)} (as given to the conversion)."
    if given:
        return "other", md_text(given)
    return "other", ("The licence of the source checkpoint, which the conversion was not told "
                     "(`swiftformer-convert --license`): check it at the source before "
                     "redistributing these files.")


def _size(info):
    shape = info.input_shape or [224, 224, 3]
    return int(shape[0] or 224), int(shape[1] or 224)


def _resize_text(info, height, width):
    crop_pct, mode, interp = info.crop_pct, info.crop_mode, md_text(info.interpolation)
    if mode == "squash" and crop_pct == 1:
        return (f"{interp} resize of the whole image to {height}x{width} (aspect ratio not "
                "kept), no crop")
    if mode == "squash":
        return (f"{interp} resize of the whole image to {int(height / crop_pct)}x"
                f"{int(width / crop_pct)} (aspect ratio not kept), then a centre crop of "
                f"{height}x{width} (crop_pct {crop_pct})")
    return (f"{interp} resize of the shorter side to {int(min(height, width) / crop_pct)} "
            f"(aspect ratio kept), then a centre crop of {height}x{width} (crop_pct {crop_pct})")


def _weights_section(info):
    source = info.source or info.checkpoint
    fmt = info.format_in
    _, licence = _license(info)
    if info.random_weights:
        lines = ["**This is not a trained model.** No checkpoint was given, so the files carry "
                 "random weights drawn at a trained model's scale: their fidelity and latency "
                 "numbers are real, their predictions are meaningless."]
    else:
        lines = [f"- **Source**: {md_code(source)}"
                 + (f" ({md_text(fmt)} checkpoint format)" if fmt else "")]
        if info.trained_from:
            lines.append(f"- **Trained from**: {md_code(info.trained_from)}")
    if info.token_weighting:
        lines.append(f"- **Token weighting** of the attention: {md_code(info.token_weighting)}"
                     + (" (all tokens weighted 1, Hugging Face's port and the first official "
                        "release)" if info.token_weighting == "ones" else
                        " (normalised over the tokens, the current official code and timm)"))
    lines.append(f"- **Licence of the weights**: {licence}")
    return lines


def _labels_section(labels):
    if labels is None:
        from keras_swiftformer.imagenet import class_names

        labels, source = class_names(), IMAGENET_LABELS_SOURCE
    else:
        labels, source = list(labels), "given to the conversion"
    shown = ", ".join(md_code(name) for name in labels[:FIRST_LABELS])
    more = f", ... ({len(labels) - FIRST_LABELS} more)" if len(labels) > FIRST_LABELS else ""
    return [f"{len(labels)} classes, {source}: {shown}{more}.", "",
            "The `.tflite` files carry them as MediaPipe's packed label file (TFLite metadata); "
            "the Core ML classifier programs as their class labels."], labels


def _preprocessing_section(info):
    height, width = _size(info)
    mean = ", ".join(f"{v:g}" for v in IMAGENET_MEAN)
    std = ", ".join(f"{v:g}" for v in IMAGENET_STD)
    lines = [
        f"- **Input**: one RGB image, {height}x{width}, pixel values 0-255 as decoded (float; "
        "the int8/uint8-input files quantise them with the scale and zero point in their "
        "metadata). Do not normalise: the model applies the ImageNet mean "
        f"({mean}) and std ({std}) of [0, 1] pixels inside."]
    if info.crop_pct is None or info.crop_mode is None or info.interpolation is None:
        return lines + ["- **Resize**: the evaluation transform of these weights was not "
                        "recorded."]
    stretch = info.crop_mode == "squash" and info.crop_pct == 1
    return lines + [
        f"- **Resize**: {_resize_text(info, height, width)}, as the weights were evaluated"
        + (f" ({md_text(info.format_in)} format)." if info.format_in else "."),
        "- MediaPipe's ImageClassifier stretches the whole image to the input size"
        + (", which is this resize." if stretch else
           ": crop the image first for the reference accuracy."),
        "- In Python: " + md_code(
            f"keras_swiftformer.imagenet.load_images(paths, ({height}, {width}), "
            f"crop_pct={info.crop_pct}, crop_mode={json.dumps(str(info.crop_mode))}, "
            f"interpolation={json.dumps(str(info.interpolation))})") + ".",
    ]


def _files_section(report, files, sizes):
    """The files of this run (`files`: names on disk, failed formats' left out)."""
    if not files:
        return ["No file of this run is on disk."]
    formats = {r.file: r.format for r in report.formats if r.file}
    lines = []
    for name in files:
        size = f", {sizes[name] / 1e6:.2f} MB" if sizes.get(name) is not None else ""
        what = f" ({md_text(formats[name])}{size})" if name in formats else \
            (f" ({size[2:]})" if size else "")
        lines.append(f"- {md_code(name)}{what}")
    return lines


def _kotlin(tflite):
    return f'''```kotlin
import android.util.Log
import com.google.mediapipe.framework.image.BitmapImageBuilder
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.vision.imageclassifier.ImageClassifier

// {tflite} in app/src/main/assets
val options = ImageClassifier.ImageClassifierOptions.builder()
    .setBaseOptions(BaseOptions.builder().setModelAssetPath("{tflite}").build())
    .setMaxResults(5)
    .build()
val classifier = ImageClassifier.createFromOptions(context, options)
val result = classifier.classify(BitmapImageBuilder(bitmap).build())
for (category in result.classificationResult().classifications()[0].categories()) {{
    Log.i("SwiftFormer", "${{category.categoryName()}} ${{category.score()}}")
}}
```'''


def _swift_mediapipe(tflite):
    name, ext = os.path.splitext(tflite)
    return f'''```swift
import MediaPipeTasksVision  // pod 'MediaPipeTasksVision'; MPPImageClassifier in Objective-C

let options = ImageClassifierOptions()
options.baseOptions.modelAssetPath = Bundle.main.path(forResource: "{name}", ofType: "{ext[1:]}")!
options.maxResults = 5
let classifier = try ImageClassifier(options: options)
let result = try classifier.classify(image: try MPImage(uiImage: uiImage))
for category in result.classificationResult.classifications.first?.categories ?? [] {{
    print(category.categoryName ?? "", category.score)
}}
```'''


def _javascript(tflite):
    return f'''```js
import {{ FilesetResolver, ImageClassifier }} from "@mediapipe/tasks-vision";

const vision = await FilesetResolver.forVisionTasks(
  "https://cdn.jsdelivr.net/npm/@mediapipe/tasks-vision/wasm");
const classifier = await ImageClassifier.createFromOptions(vision, {{
  baseOptions: {{ modelAssetPath: "{tflite}" }},
  maxResults: 5,
}});
const result = classifier.classify(document.querySelector("img"));
for (const category of result.classifications[0].categories) {{
  console.log(category.categoryName, category.score);
}}
```'''


def _swift_vision(mlpackage, pre):
    name = os.path.splitext(mlpackage)[0]
    option = (".scaleFill  // the whole image, stretched: this model's resize"
              if pre["crop_mode"] == "squash" else
              ".centerCrop  // the largest centred square: the reference crop with crop_pct 1")
    return f'''```swift
import CoreML
import Vision

// Xcode compiles {mlpackage} into {name}.mlmodelc in the app bundle.
let url = Bundle.main.url(forResource: "{name}", withExtension: "mlmodelc")!
let model = try VNCoreMLModel(for: MLModel(contentsOf: url))
let request = VNCoreMLRequest(model: model) {{ request, _ in
    let observations = request.results as? [VNClassificationObservation] ?? []
    for observation in observations.prefix(5) {{
        print(observation.identifier, observation.confidence)
    }}
}}
request.imageCropAndScaleOption = {option}
try VNImageRequestHandler(cgImage: cgImage).perform([request])
```'''


def _example(choices, target, rows, runtime):
    """The file a code example uses: the chosen file of `target`, else the first that runs
    there; only a plain file name (the examples quote it as it is)."""
    from converters.report import runtime_of

    chosen = next((c.file for c in choices if c.target == target), None)
    if chosen is None:
        chosen = next((r.file for r in rows if r.ok and r.file and runtime_of(r) == runtime
                       and not (r.mediapipe and r.mediapipe.ok is False)), None)
    return chosen if chosen and _PLAIN_NAME.fullmatch(chosen) else None


def _usage_section(report, choices, info):
    tflite = _example(choices, TARGETS[0], report.formats, "litert")
    mlpackage = _example(choices, TARGETS[2], report.formats, "coreml")
    lines = []
    if tflite:
        lines += [f"The examples use {md_code(tflite)}, the file to ship for MediaPipe (above); "
                  "any `.tflite` file of this run that MediaPipe opens works the same way.", "",
                  "### Android: MediaPipe Tasks (Kotlin)", "", _kotlin(tflite), "",
                  "### iOS: MediaPipe Tasks (Swift)", "", _swift_mediapipe(tflite), "",
                  "### Web: MediaPipe Tasks (JavaScript, `@mediapipe/tasks-vision`)", "",
                  _javascript(tflite), ""]
    else:
        lines += ["No `.tflite` file of this conversion opens in MediaPipe.", ""]
    if mlpackage:
        lines += ["### iOS and macOS: Core ML with Vision (Swift)", "",
                  "For the `.mlpackage` files (a classifier program: its outputs are "
                  f"`classLabel` and `probabilities`); {md_code(mlpackage)}, the file to ship "
                  "for Core ML, as the example.", "",
                  _swift_vision(mlpackage, {"crop_mode": info.crop_mode}), ""]
    return lines


def paper_bibtex():
    """The paper's BibTeX entry, as `keras_swiftformer.model`'s docstring gives it."""
    import keras_swiftformer.model

    doc = keras_swiftformer.model.__doc__
    match = re.search(r"^( *)@InProceedings\{.*?^\1\}", doc, re.S | re.M)
    if match is None:
        raise ValueError("keras_swiftformer.model's docstring has no @InProceedings entry")
    return textwrap.dedent(match.group(0))


def model_card(report, files=None, sizes=None):
    """The model card of a conversion, as Markdown with YAML front matter.

    Args:
        report: the run's `converters.results.Report` (its labels None: ImageNet-1k's).
        files: the names of this run's files on disk (`write_model_card` finds them); None:
            the files of the rows that did not fail.
        sizes: {file name: bytes} shown beside `files`.
    """
    if not isinstance(report, R.Report):
        raise TypeError("model_card takes a converters.results.Report (converters.results."
                        f"as_report makes one of the pipeline's info and rows); got "
                        f"{type(report).__name__}")
    info, rows = report.info, report.formats
    variant = md_text(info.variant or "?")
    licence_id, _ = _license(info)
    label_lines, labels = _labels_section(report.labels)
    trained = not info.random_weights
    imagenet = trained and len(labels) == 1000
    runtimes = {r.runtime or ("coreml" if r.coreml_ops else "litert") for r in rows if r.ok}
    tags = (["swiftformer", "image-classification", "vision", "mobile", "keras"]
            + (["tflite", "litert", "mediapipe"] if "litert" in runtimes else [])
            + (["coreml"] if "coreml" in runtimes else [])
            + ([] if trained else ["random-weights"]))
    front = _front_matter({
        "license": licence_id, "library_name": "keras", "tags": tags,
        "pipeline_tag": "image-classification",
        "datasets": ["imagenet-1k"] if imagenet else None,
        "base_model": info.hub_repo,
    })
    failed = [r for r in rows if r.error]
    if files is None:
        files = [r.file for r in rows if r.ok and r.file]
    files = [f for f in files if f not in {r.file for r in failed}]
    choices = choose_files(report)
    height, width = _size(info)
    lines = [front, f"# SwiftFormer-{variant}" + ("" if trained else " (random weights)"), "",
             f"SwiftFormer-{variant} (Shaker et al., ICCV 2023), an image classifier with "
             f"efficient additive attention, converted by keras-swiftformer to LiteRT "
             f"(`.tflite`) and Core ML (`.mlpackage`) files for phones, at a fixed "
             f"{height}x{width} input.", "",
             "## Model", "",
             f"- **Architecture**: SwiftFormer-{variant}, input {height}x{width}x3, "
             f"{len(labels)} classes; the outputs are the mean of the classification and "
             "distillation heads.",
             "- **Paper**: [SwiftFormer: Efficient Additive Attention for Transformer-based "
             "Real-time Mobile Vision Applications](https://arxiv.org/abs/2303.15446)",
             "- **Official code**: https://github.com/Amshaker/SwiftFormer"]
    if info.versions:
        lines.append(f"- **Converted with**: {md_text(info.versions)}")
    lines += ["", "## Weights", ""] + _weights_section(info)
    lines += ["", "## Preprocessing", ""] + _preprocessing_section(info)
    lines += ["", "## Labels", ""] + label_lines
    lines += ["", "## Which file to ship", ""] + ship_lines(choices)
    lines += ["", "## Fidelity, latency and accuracy", "",
              "Each file's outputs against the Keras float32 model"
              + (f" on {info.evaluation_images} evaluation images"
                 if info.evaluation_images else "")
              + (f" ({md_text(info.image_source)})" if info.image_source else "")
              + ", never used for calibration."
              + (" The images were synthetic, so the integer formats' fidelity is not "
                 "representative of photos." if info.synthetic_images else ""),
              f"Latency: {md_text(info.latency or 'not measured')}.", ""]
    if info.accuracy is not None:
        from converters.report import accuracy_text

        lines += [f"Labelled accuracy: {md_text(accuracy_text(info.accuracy))}; the files' "
                  "own in the top-1 % and top-5 % columns.", ""]
    lines += [markdown_table(rows), ""]
    if failed:
        lines += ["**Failed formats** (no file of theirs is part of this run):", ""]
        lines += [f"- {md_code(r.format)}: FAILED: {md_text(r.error)}" for r in failed] + [""]
    lines += ["## Files", ""] + _files_section(report, files, sizes or {}) + [""]
    lines += ["## How to run", ""] + _usage_section(report, choices, info)
    lines += ["## Citation", "", "The SwiftFormer paper:", "", "```bibtex", paper_bibtex(),
              "```", ""]
    return "\n".join(lines)


def _disk_size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path)
                   for f in names)
    return os.path.getsize(path)


def run_files(output_dir, report, folder=None):
    """The names of this run's files on disk: those of `folder` (a started
    `converters.output.OutputFolder`), else of the folder's run manifest, else the report's
    rows' files and report files that exist; ``MODEL_CARD.md`` last."""
    from converters.output import read_manifest

    if folder is not None:
        names = folder.files()
    elif read_manifest(output_dir) is not None:
        names = [n for n in read_manifest(output_dir)["files"]
                 if os.path.lexists(os.path.join(output_dir, str(n)))]
    else:
        names = [n for n in [r.file for r in report.formats if r.ok and r.file]
                 + ["report.json", "report.md", "report.png"]
                 if n and os.path.lexists(os.path.join(output_dir, n))]
    return [n for n in names if n != CARD_NAME] + [CARD_NAME]


def write_model_card(output_dir, report, rows=None, labels=None, folder=None):
    """Writes `model_card` to ``output_dir/MODEL_CARD.md`` atomically, listing the run's files
    on disk (`run_files`); returns its path.

    Args:
        report: a `converters.results.Report`; or the pipeline's info dict with `rows` and
            `labels` (`converters.results.as_report`).
        folder: the run's `converters.output.OutputFolder`, when one is open.
    """
    from keras_swiftformer.files import atomic_output

    if not isinstance(report, R.Report):
        report = R.as_report(report, rows, labels)
    files = run_files(output_dir, report, folder)
    sizes = {n: _disk_size(os.path.join(output_dir, n)) for n in files
             if os.path.lexists(os.path.join(output_dir, n))}
    card = model_card(report, files, sizes)
    path = os.path.join(output_dir, CARD_NAME)
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(card)
    return path


def write_outputs(output_dir, report, folder=None):
    """Writes the report files (`converters.report.write_report`) and
    ``MODEL_CARD.md`` of `report`, recording each in `folder` (a started
    `converters.output.OutputFolder`) when given; returns the paths (``model_card`` too)."""
    paths = write_report(output_dir, report)
    report = R.load(paths["json"])  # as written: with its creation time
    if folder is not None:
        for path in paths.values():
            folder.record(path)
    paths["model_card"] = write_model_card(output_dir, report, folder=folder)
    if folder is not None:
        folder.record(paths["model_card"])
    return paths


def update_accuracy(output_dir, evaluation):
    """``swiftformer-convert report OUTPUT_DIR --accuracy acc.json``: adds the accuracy of
    `evaluation` (swiftformer-eval --json output: a path or its dict) to the folder's
    report.json, report.md, report.png and MODEL_CARD.md; returns their paths.

    Raises:
        ValueError (`converters.results.ReportError` for the report): one line, with the fix.
    """
    report = R.load(output_dir)
    if not isinstance(evaluation, dict):
        try:
            with open(evaluation, encoding="utf-8") as f:
                evaluation = json.load(f)
        except OSError as err:
            raise R.ReportError(f"Cannot read {evaluation}: {err.strerror or err}") from None
        except ValueError:
            raise R.ReportError(f"{evaluation} is not JSON: give the file swiftformer-eval "
                                "--json wrote") from None
    return write_outputs(output_dir, add_accuracy(report, evaluation))
