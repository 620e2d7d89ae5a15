"""Shared test helpers: where the reference fixtures are, golden cases, tolerances."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SWIFTFORMER_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
SAMPLES = SHARED / "images" / "imagenet_samples"

#: name -> (checkpoint, golden .npz, variant); the formats users hold, with reference outputs.
GOLDEN_CASES = {
    "original_xs": (FIXTURES / "original/swiftformer_xs_random.pth",
                    FIXTURES / "original/golden_xs.npz", "XS"),
    "original_l1": (FIXTURES / "original/swiftformer_l1_random.pth",
                    FIXTURES / "original/golden_l1.npz", "L1"),
    "timm_xs": (FIXTURES / "timm/swiftformer_xs_random",
                FIXTURES / "timm/swiftformer_xs_random/golden_timm.npz", "XS"),
    "hf_xs": (FIXTURES / "hf/swiftformer_xs_random",
              FIXTURES / "hf/swiftformer_xs_random/golden_hf.npz", "XS"),
}


def golden(case):
    """The golden arrays of `case`, inputs already NHWC."""
    data = dict(np.load(GOLDEN_CASES[case][1]))
    for key in ("inputs_nchw", "inputs_odd_nchw"):
        data[key.replace("_nchw", "")] = data[key].transpose(0, 2, 3, 1)
    return data


def tolerance(reference):
    """The fixtures' bound for a float32 port: 1e-4 x max(1, max|reference|)."""
    return 1e-4 * max(1.0, float(np.max(np.abs(reference))))


def assert_close_to_golden(actual, reference, scale=1.0):
    err = float(np.max(np.abs(np.asarray(actual, np.float64) - reference)))
    bound = scale * tolerance(reference)
    assert err <= bound, f"max |error| {err:.3g} exceeds {bound:.3g}"
    return err


def run_python(code, env=None, timeout=600):
    """Runs `code` in a fresh interpreter (another Keras backend, a clean process); returns
    stdout. Fails the test with the output if it exits non-zero."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        pytest.fail(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc.stdout


@pytest.fixture(scope="session")
def golden_model():
    """golden_model(case) -> the Keras model of that checkpoint (logits, normalised input,
    any input size), built once per session."""
    from keras_swiftformer import SwiftFormer

    cache = {}

    def get(case):
        if case not in cache:
            checkpoint, _, variant = GOLDEN_CASES[case]
            cache[case] = SwiftFormer(variant, weights=str(checkpoint), input_shape=(None, None, 3),
                                      include_preprocessing=False, classifier_activation=None)
        return cache[case]

    return get

