"""Golden parity on the other Keras backends (each in a fresh interpreter)."""

import pytest

from tests.support import run_python

SCRIPT = """
import numpy as np
from keras_swiftformer import SwiftFormer
from tests.support import GOLDEN_CASES, golden, tolerance
import keras
assert keras.backend.backend() == {backend!r}, keras.backend.backend()
for case in {cases!r}:
    checkpoint, _, variant = GOLDEN_CASES[case]
    model = SwiftFormer(variant, weights=str(checkpoint), input_shape=(None, None, 3),
                        include_preprocessing=False, classifier_activation=None)
    data = golden(case)
    for key in ("", "_odd"):
        err = np.abs(np.asarray(model.predict(data["inputs" + key], verbose=0), np.float64)
                     - data["logits" + key]).max()
        assert err < tolerance(data["logits" + key]), (case, key, err)
        print(case, key or "_224", "max error", err)
print("PARITY OK")
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_golden_parity_on_backend(backend):
    pytest.importorskip(backend)
    code = SCRIPT.format(backend=backend, cases=["original_xs", "timm_xs", "hf_xs"])
    out = run_python(code, env={"KERAS_BACKEND": backend})
    assert "PARITY OK" in out
