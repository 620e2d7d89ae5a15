"""MediaPipe Tasks for the tests, in a virtual environment of its own.

mediapipe 1.2.2 would move absl-py and bring opencv into our environment, so it lives in a venv
(no system site packages) made once and cached: ``$SWIFTFORMER_MEDIAPIPE_PYTHON`` if set (a
Python that has ``mediapipe==1.2.2``), else ``$XDG_CACHE_HOME/keras-swiftformer/mediapipe-1.2.2``
(``~/.cache/...``), created on first use with ``pip install mediapipe==1.2.2``.

Run as a script by that venv's Python, this module opens `.tflite` files in MediaPipe's
``ImageClassifier`` and reads their metadata with MediaPipe's own schema bindings:

    python tests/support/mediapipe_tasks.py SPEC.json  ->  JSON on stdout
"""

import json
import os
import subprocess
import sys

REQUIREMENT = "mediapipe==1.2.2"


def mediapipe_python():
    """(path of a Python with MediaPipe, None) or (None, why there is none)."""
    given = os.environ.get("SWIFTFORMER_MEDIAPIPE_PYTHON")
    if given:
        return (given, None) if os.path.exists(given) else (None, f"{given} does not exist")
    cache = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    venv = os.path.join(cache, "keras-swiftformer", REQUIREMENT.replace("==", "-"))
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(os.path.join(venv, "ready")):
        return python, None
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True,
                       capture_output=True, timeout=300)
        subprocess.run([python, "-m", "pip", "install", "-q", REQUIREMENT], check=True,
                       capture_output=True, text=True, timeout=1200)
    except (subprocess.SubprocessError, OSError) as err:
        detail = getattr(err, "stderr", "") or ""
        return None, f"cannot install {REQUIREMENT} into {venv}: {err} {detail[-500:]}"
    with open(os.path.join(venv, "ready"), "w") as f:
        f.write(REQUIREMENT + "\n")
    return python, None


def run_mediapipe(python, models, images_path=None, timeout=900):
    """Runs this module in MediaPipe's venv on `models` (paths) and the uint8 images of the
    ``.npy`` file `images_path` (N, H, W, 3); returns its JSON reply (see `_main`)."""
    spec = json.dumps({"models": [os.fspath(m) for m in models], "images": images_path})
    proc = subprocess.run([python, os.path.abspath(__file__), spec], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "GLOG_minloglevel": "2",
                               "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise RuntimeError(f"MediaPipe run failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _metadata(path):
    """The model's metadata read with MediaPipe's generated schema bindings."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as mfb
    from mediapipe.tasks.metadata import schema_py_generated as sfb

    with open(path, "rb") as f:
        buf = bytearray(f.read())
    model = sfb.Model.GetRootAsModel(buf, 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name().decode() == "TFLITE_METADATA":
            data = model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
            break
    else:
        return None
    if not mfb.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0):
        return {"error": "no M001 identifier"}
    meta = mfb.ModelMetadataT.InitFromObj(mfb.ModelMetadata.GetRootAsModelMetadata(data, 0))
    graph = meta.subgraphMetadata[0]
    image, scores = graph.inputTensorMetadata[0], graph.outputTensorMetadata[0]
    norm = image.processUnits[0].options
    return {"name": meta.name.decode(), "version": meta.version.decode(),
            "license": meta.license.decode(), "min_parser_version": meta.minParserVersion.decode(),
            "input": image.name.decode(), "color_space": image.content.contentProperties.colorSpace,
            "mean": list(map(float, norm.mean)), "std": list(map(float, norm.std)),
            "output": scores.name.decode(),
            "label_files": [(f.name.decode(), f.type) for f in scores.associatedFiles or []]}


def _main(spec):
    """Classifies every image with every model; prints {"results": {model: {"top1": [index],
    "names": [label], "error": text}}, "metadata": {model: `_metadata`}}."""
    import numpy as np
    from mediapipe import Image, ImageFormat
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions

    spec = json.loads(spec)
    images = np.load(spec["images"]) if spec.get("images") else np.zeros((1, 8, 8, 3), np.uint8)
    results, metadata = {}, {}
    for path in spec["models"]:
        metadata[path] = _metadata(path)
        options = ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path),
                                         max_results=1)
        try:
            with ImageClassifier.create_from_options(options) as classifier:
                top = [classifier.classify(Image(image_format=ImageFormat.SRGB,
                                                 data=np.ascontiguousarray(image)))
                       .classifications[0].categories[0] for image in images]
            results[path] = {"top1": [c.index for c in top],
                             "names": [c.category_name for c in top]}
        except Exception as err:  # reported to the test, which says which file failed
            results[path] = {"error": f"{type(err).__name__}: {err}"}
    print(json.dumps({"results": results, "metadata": metadata}))


if __name__ == "__main__":
    _main(sys.argv[1])
