"""web/: the page classifies a photo in headless Chromium through MediaPipe Tasks for web (WASM,
CPU delegate) as the LiteRT interpreter does on the same pixels.

The photo goes to the page at the model's input size, as a PNG, and the page's ``?crop=1`` keeps
the whole square: MediaPipe then neither crops nor resamples, so both sides see the same pixels
(the float32 file shows it: the page's logits are the interpreter's). int8 kernels of different
builds (the browser's WASM XNNPACK, this machine's) round differently, hence the int8 tolerance
and a photo whose top-1 leads by a clear margin.
"""

import re

import numpy as np
import pytest

from tests.support import PHOTOS, browser

SIZE = 96
#: Least lead of the interpreter's top-1 logit over its top-2 on the chosen photo.
MARGIN = 0.5
#: Largest |page score - interpreter logit| over the page's top-5, per format.
TOLERANCE = {"float32": 1e-3, "int8": MARGIN / 2}
TIMEOUT_MS = 120_000

WHY_NOT = browser.unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """XS at SIZE with realistic weights as int8 and float32 files with classifier metadata, the
    committed photo whose int8 top-1 leads most (as a SIZE x SIZE PNG), and each file's
    interpreter logits on it."""
    from PIL import Image

    from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference
    from converters.litert.metadata import add_classifier_metadata
    from converters.litert.runtime import TFLiteRunner
    from converters.litert.tflite import export_tflite
    from converters.targets import ClassifierInfo
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.imagenet import class_names
    from keras_swiftformer.images import load_images
    from keras_swiftformer.random_weights import realistic_weights

    folder = tmp_path_factory.mktemp("web")
    model = SwiftFormer("XS", input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    folded = for_inference(realistic_weights(model))
    paths = sorted(PHOTOS.glob("*.jpg"))
    images = load_images(paths, SIZE)
    calibration = np.concatenate([images, images[:, :, ::-1]])  # and their mirror images
    files, logits = {}, {}
    for fmt in ("int8", "float32"):
        path = folder / f"swiftformer_xs_{fmt}.tflite"
        if fmt == "int8":
            export_tflite(folded, path, fmt, calibration=calibration, float_ops=FOLDED_FLOAT_OPS)
        else:
            export_tflite(folded, path, fmt)
        plain = path.read_bytes()
        path.write_bytes(add_classifier_metadata(plain, fmt,
                                                 ClassifierInfo("XS", tuple(class_names()))))
        files[fmt], logits[fmt] = path, TFLiteRunner(path).predict(images)
    # the float32 file again, its metadata saying what a conversion without weights says
    files["random"] = folder / "swiftformer_xs_random.tflite"
    files["random"].write_bytes(add_classifier_metadata(
        plain, "float32", ClassifierInfo("XS", tuple(class_names()),
                                         source="none (random weights)")))
    ranked = np.sort(logits["int8"], axis=1)
    best = int(np.argmax(ranked[:, -1] - ranked[:, -2]))
    photo = folder / f"{paths[best].stem}_{SIZE}.png"
    Image.fromarray(images[best].astype(np.uint8)).save(photo)
    return {"files": files, "photo": photo, "margin": float(ranked[best, -1] - ranked[best, -2]),
            "logits": {fmt: values[best] for fmt, values in logits.items()}}


@pytest.fixture(scope="module")
def site(models, tmp_path_factory):
    """Base URL of the page, with both model files beside it."""
    folder = browser.make_site(tmp_path_factory.mktemp("site"), models["files"].values())
    with browser.serve(folder) as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    with browser.chromium() as instance:
        yield instance


def run_page(chromium, url, photo=None):
    """Opens `url`, gives it `photo` through the file input (if any) and waits for the result
    or an error; returns what the page shows."""
    page = chromium.new_page()
    try:
        page.goto(url)
        if photo is not None:
            page.set_input_files("#file", str(photo))
        done = ("done", "error") if photo is not None else ("ready", "error")
        page.wait_for_function(f"{list(done)}.includes(document.body.dataset.state)",
                               timeout=TIMEOUT_MS)
        return page.evaluate("""() => ({
            state: document.body.dataset.state,
            status: document.getElementById("status").textContent,
            top1: document.getElementById("top1").dataset.top1,
            time: document.getElementById("time").textContent,
            ms: Number(document.getElementById("time").dataset.ms),
            call: Number(document.getElementById("time").dataset.call),
            about: document.getElementById("about").textContent,
            random: document.getElementById("about").dataset.random,
            scores: document.getElementById("about").dataset.scores,
            warmup: document.getElementById("warmup").textContent,
            warmupMs: Number(document.getElementById("warmup").dataset.ms),
            rows: [...document.querySelectorAll("#results li")].map((li) => ({
                index: Number(li.dataset.index), label: li.dataset.label,
                shown: li.querySelector(".label").textContent,
                score: Number(li.dataset.score)})),
        })""")
    finally:
        page.close()


@pytest.mark.parametrize("fmt", ["int8", "float32"])
def test_page_top1_is_the_interpreters_on_the_same_pixels(models, site, chromium, fmt):
    from keras_swiftformer.imagenet import class_names

    # int8 is the page's default model (the file beside it); float32 comes through ?model=.
    query = "?crop=1" + ("" if fmt == "int8" else f"&model={models['files'][fmt].name}")
    shown = run_page(chromium, site + query, models["photo"])
    assert shown["state"] == "done", shown["status"]
    assert models["photo"].name in shown["status"]

    logits = models["logits"][fmt]
    expected = np.argsort(logits)[::-1][:5]
    assert models["margin"] >= MARGIN, models["margin"]
    names = class_names()
    assert shown["top1"] == names[expected[0]]
    rows = shown["rows"]
    assert len(rows) == 5 and rows[0]["index"] == expected[0]
    for row in rows:  # ImageNet names, in the order of the file's label list, shown readably
        assert row["label"] == names[row["index"]]
        assert row["shown"] == row["label"].replace("_", " ")
    scores = [row["score"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    errors = [abs(row["score"] - logits[row["index"]]) for row in rows]
    assert max(errors) <= TOLERANCE[fmt], (fmt, errors)
    if fmt == "float32":
        assert [row["index"] for row in rows] == list(expected)
    assert re.fullmatch(r"\d+\.\d ms", shown["time"]) and shown["ms"] > 0, shown["time"]
    # the scores are logits (the metadata says so), the weights are not random, and the time
    # shown is of the call after the warm-up
    assert shown["scores"] == "logits" and "logits" in shown["about"], shown["about"]
    assert shown["random"] == "false" and "RANDOM" not in shown["about"]
    assert shown["call"] == 2 and shown["warmupMs"] > 0
    assert shown["warmup"].startswith("call 1 was the warm-up"), shown["warmup"]


def test_page_says_when_the_weights_are_random(models, site, chromium):
    shown = run_page(chromium, site + f"?crop=1&model={models['files']['random'].name}",
                     models["photo"])
    assert shown["state"] == "done", shown["status"]
    assert shown["random"] == "true" and "weights are RANDOM" in shown["about"], shown["about"]
    assert shown["scores"] == "logits"


def test_page_reports_a_model_it_cannot_load(site, chromium):
    shown = run_page(chromium, site + "?model=missing.tflite")
    assert shown["state"] == "error"
    assert shown["status"].startswith("Cannot load missing.tflite"), shown["status"]
    assert shown["rows"] == [] and shown["top1"] is None
