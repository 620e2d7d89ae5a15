"""The model card of a conversion: ``MODEL_CARD.md`` beside the converted files.

Markdown as the Hugging Face Hub and Kaggle Models show it: YAML front matter (licence, library,
tags, pipeline tag, datasets where known), then what the model and its weights are, the
preprocessing the weights expect, the labels, the measured fidelity and latency
(`converters.report.markdown_table`), how to run each file (MediaPipe Tasks on Android, iOS and
the web; Core ML through Vision) and the paper's citation. Its input is the pipeline's report
data (`converters.pipeline.run_pipeline`'s ``info`` and ``rows``); missing keys are left out.
"""

import json
import os
import re
import textwrap

from converters.report import markdown_table
from keras_swiftformer.files import atomic_output
from keras_swiftformer.preprocessing import DEFAULT_PREPROCESSING, FORMAT_DEFAULTS

CARD_NAME = "MODEL_CARD.md"
#: Labels shown in the card before "...".
FIRST_LABELS = 10
#: Where the class names come from when none are given (`keras_swiftformer.imagenet`).
IMAGENET_LABELS_SOURCE = ("the 1000 ImageNet-1k classes in index order "
                          "(keras_swiftformer/data/imagenet_classes.tsv: WordNet synsets, the "
                          "first lemma of each)")
#: A licence given as a Hub licence id (apache-2.0, mit, cc-by-4.0...) rather than a text.
_LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")


def _yaml(value):
    """`value` as a YAML scalar or flow list (JSON strings and lists are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _front_matter(fields):
    lines = ["---"] + [f"{key}: {_yaml(value)}" for key, value in fields.items() if value]
    return "\n".join(lines + ["---", ""])


def _license(info):
    """(Hub licence id, sentence about the weights' licence)."""
    given = info.get("license")
    if info.get("random_weights"):
        return "apache-2.0", ("None: the weights are random. The code that made these files is "
                              "keras-swiftformer, Apache-2.0.")
    if given and _LICENSE_ID.fullmatch(str(given)):
        return str(given).lower(), f"{given} (as given to the conversion)."
    if given:
        return "other", f"{given}"
    return "other", ("The licence of the source checkpoint, which the conversion was not told "
                     "(`swiftformer-convert --license`): check it at the source before "
                     "redistributing these files.")


def _preprocessing(info):
    """The `keras_swiftformer.preprocessing.Preprocessing` facts of the run's weights, as a dict."""
    base = FORMAT_DEFAULTS.get(info.get("format_in"), DEFAULT_PREPROCESSING)
    return {"crop_pct": info.get("crop_pct", base.crop_pct),
            "crop_mode": info.get("crop_mode", base.crop_mode),
            "interpolation": info.get("interpolation", base.interpolation),
            "mean": base.mean, "std": base.std}


def _size(info):
    shape = info.get("input_shape") or [224, 224, 3]
    height, width = shape[0] or 224, shape[1] or 224
    return int(height), int(width)


def _resize_text(pre, height, width):
    crop_pct, mode, interp = pre["crop_pct"], pre["crop_mode"], pre["interpolation"]
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
    source = info.get("source") or info.get("checkpoint")
    fmt = info.get("format_in")
    _, licence = _license(info)
    if info.get("random_weights"):
        lines = ["**This is not a trained model.** No checkpoint was given, so the files carry "
                 "random weights drawn at a trained model's scale: their fidelity and latency "
                 "numbers are real, their predictions are meaningless."]
    else:
        lines = [f"- **Source**: `{source}`" + (f" ({fmt} checkpoint format)" if fmt else "")]
    if info.get("token_weighting"):
        lines.append(f"- **Token weighting** of the attention: `{info['token_weighting']}`"
                     + (" (all tokens weighted 1, Hugging Face's port and the first official "
                        "release)" if info["token_weighting"] == "ones" else
                        " (normalised over the tokens, the current official code and timm)"))
    lines.append(f"- **Licence of the weights**: {licence}")
    return lines


def _labels_section(labels):
    if labels is None:
        from keras_swiftformer.imagenet import class_names

        labels, source = class_names(), IMAGENET_LABELS_SOURCE
    else:
        labels, source = list(labels), "given to the conversion"
    shown = ", ".join(f"`{name}`" for name in labels[:FIRST_LABELS])
    more = f", ... ({len(labels) - FIRST_LABELS} more)" if len(labels) > FIRST_LABELS else ""
    return [f"{len(labels)} classes, {source}: {shown}{more}.", "",
            "The `.tflite` files carry them as MediaPipe's packed label file (TFLite metadata); "
            "the Core ML classifier programs as their class labels."], labels


def _preprocessing_section(info):
    pre = _preprocessing(info)
    height, width = _size(info)
    resize = _resize_text(pre, height, width)
    mean = ", ".join(f"{v:g}" for v in pre["mean"])
    std = ", ".join(f"{v:g}" for v in pre["std"])
    stretch = pre["crop_mode"] == "squash" and pre["crop_pct"] == 1
    return [
        f"- **Input**: one RGB image, {height}x{width}, pixel values 0-255 as decoded (float; "
        "the int8/uint8-input files quantise them with the scale and zero point in their "
        "metadata). Do not normalise: the model applies the ImageNet mean "
        f"({mean}) and std ({std}) of [0, 1] pixels inside.",
        f"- **Resize**: {resize}, as the weights were evaluated"
        + (f" ({info['format_in']} format)." if info.get("format_in") else "."),
        "- MediaPipe's ImageClassifier stretches the whole image to the input size"
        + (", which is this resize." if stretch else
           ": crop the image first for the reference accuracy."),
        "- In Python: `keras_swiftformer.imagenet.load_images(paths, "
        f"({height}, {width}), crop_pct={pre['crop_pct']}, crop_mode=\"{pre['crop_mode']}\", "
        f"interpolation=\"{pre['interpolation']}\")`.",
    ], pre


def _first_file(rows, suffix, prefer=("float32", "coreml_float16")):
    ok = [r for r in rows if not r.get("error") and str(r.get("file", "")).endswith(suffix)
          and r.get("mediapipe", True) is not False]
    ok.sort(key=lambda r: r.get("format") not in prefer)
    return ok[0]["file"] if ok else None


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


def _usage_section(rows, pre):
    tflite, mlpackage = _first_file(rows, ".tflite"), _first_file(rows, ".mlpackage")
    lines = []
    if tflite:
        lines += ["Any `.tflite` file above that MediaPipe opens works the same way; "
                  f"`{tflite}` as the example.", "",
                  "### Android: MediaPipe Tasks (Kotlin)", "", _kotlin(tflite), "",
                  "### iOS: MediaPipe Tasks (Swift)", "", _swift_mediapipe(tflite), "",
                  "### Web: MediaPipe Tasks (JavaScript, `@mediapipe/tasks-vision`)", "",
                  _javascript(tflite), ""]
    else:
        lines += ["No `.tflite` file of this conversion opens in MediaPipe.", ""]
    if mlpackage:
        lines += ["### iOS and macOS: Core ML with Vision (Swift)", "",
                  f"For the `.mlpackage` files (a classifier program: its outputs are "
                  f"`classLabel` and `probabilities`); `{mlpackage}` as the example.", "",
                  _swift_vision(mlpackage, pre), ""]
    return lines


def paper_bibtex():
    """The paper's BibTeX entry, as `keras_swiftformer.model`'s docstring gives it."""
    import keras_swiftformer.model

    doc = keras_swiftformer.model.__doc__
    match = re.search(r"^( *)@InProceedings\{.*?^\1\}", doc, re.S | re.M)
    if match is None:
        raise ValueError("keras_swiftformer.model's docstring has no @InProceedings entry")
    return textwrap.dedent(match.group(0))


def model_card(info, rows, labels=None):
    """The model card of a conversion, as Markdown with YAML front matter.

    Args:
        info: the pipeline's run facts (`converters.pipeline.run_pipeline`'s ``info``:
            checkpoint, format_in, random_weights, crop_pct, variant, token_weighting,
            input_shape, evaluation_images, image_source, latency, versions...); missing keys
            are left out.
        rows: the report rows (`converters.report.COLUMNS` keys); rows with ``error`` are
            listed as failed.
        labels: the class names; None: the ImageNet-1k names (`keras_swiftformer.imagenet`).
    """
    bad = [type(r).__name__ for r in rows if not isinstance(r, dict)]
    if not isinstance(info, dict) or bad:
        raise TypeError("model_card takes the pipeline's info dict and report rows (dicts); got "
                        f"{type(info).__name__} and rows of {sorted(set(bad)) or 'dict'}")
    variant = info.get("variant") or "?"
    licence_id, _ = _license(info)
    label_lines, labels = _labels_section(labels)
    trained = not info.get("random_weights")
    imagenet = trained and len(labels) == 1000
    suffixes = {os.path.splitext(str(r.get("file", "")))[1] for r in rows if not r.get("error")}
    tags = (["swiftformer", "image-classification", "vision", "mobile", "keras"]
            + (["tflite", "litert", "mediapipe"] if ".tflite" in suffixes else [])
            + (["coreml"] if ".mlpackage" in suffixes else [])
            + ([] if trained else ["random-weights"]))
    source = str(info.get("source") or info.get("checkpoint") or "")
    front = _front_matter({
        "license": licence_id,
        "library_name": "keras",
        "tags": tags,
        "pipeline_tag": "image-classification",
        "datasets": ["imagenet-1k"] if imagenet else None,
        "base_model": source[len("hf://"):].split("@")[0] if source.startswith("hf://") else None,
    })
    preprocessing_lines, pre = _preprocessing_section(info)
    failed = [r for r in rows if r.get("error")]
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
    if info.get("versions"):
        lines.append(f"- **Converted with**: {info['versions']}")
    lines += ["", "## Weights", ""] + _weights_section(info)
    lines += ["", "## Preprocessing", ""] + preprocessing_lines
    lines += ["", "## Labels", ""] + label_lines
    lines += ["", "## Fidelity and latency", "",
              "Each file's outputs against the Keras float32 model"
              + (f" on {info['evaluation_images']} evaluation images"
                 if info.get("evaluation_images") else "")
              + (f" ({info['image_source']})" if info.get("image_source") else "")
              + ", never used for calibration."
              + (" The images were synthetic, so the integer formats' fidelity is not "
                 "representative of photos." if info.get("synthetic_images") else ""),
              f"Latency: {info.get('latency') or 'not measured'}.", "",
              markdown_table(rows), ""]
    if failed:
        lines += ["**Failed formats** (no file was written):", ""]
        lines += [f"- `{r.get('format')}`: FAILED: {r['error']}" for r in failed] + [""]
    lines += ["## How to run", ""] + _usage_section(rows, pre)
    lines += ["## Citation", "", "The SwiftFormer paper:", "", "```bibtex", paper_bibtex(),
              "```", ""]
    return "\n".join(lines)


def write_model_card(output_dir, info, rows, labels=None):
    """Writes `model_card` to ``output_dir/MODEL_CARD.md`` atomically; returns its path."""
    card = model_card(info, rows, labels)
    path = os.path.join(output_dir, CARD_NAME)
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(card)
    return path
