"""benchmarks.reference_torch: the PyTorch SwiftFormer the benchmark converts with litert-torch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.reference_torch import SwiftFormer, from_keras, load_canonical  # noqa: E402
from keras_swiftformer.checkpoints import read_checkpoint  # noqa: E402
from tests.support import GOLDEN_CASES, assert_close_to_golden, golden  # noqa: E402


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_logits_match_golden(case):
    checkpoint_path, _, variant = GOLDEN_CASES[case]
    checkpoint = read_checkpoint(str(checkpoint_path))
    model = load_canonical(SwiftFormer(variant, checkpoint.token_weighting), checkpoint.tensors)
    data = golden(case)
    with torch.no_grad():
        for key in ("", "_odd"):
            logits = model(torch.from_numpy(data[f"inputs{key}_nchw"])).numpy()
            assert_close_to_golden(logits, data[f"logits{key}"])


def test_weights_from_keras_give_the_keras_logits():
    from keras_swiftformer import SwiftFormerXS

    keras_model = SwiftFormerXS(weights=str(GOLDEN_CASES["hf_xs"][0]), input_shape=(64, 96, 3),
                                include_preprocessing=False, classifier_activation=None)
    model = from_keras(keras_model, "XS", "ones")
    x = np.random.default_rng(0).normal(0, 1, (2, 64, 96, 3)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    expected = keras_model.predict(x, verbose=0)
    assert np.max(np.abs(logits - expected)) < 1e-4 * np.max(np.abs(expected))


def test_tensors_that_do_not_fit_are_listed():
    tensors = {k: v.numpy() for k, v in SwiftFormer("XS").state_dict().items()}
    del tensors["stem.0.weight"]
    tensors["head.extra"] = np.zeros(1)
    expected = r"missing \['stem.0.weight'\].*unexpected \['head.extra'\]"
    with pytest.raises(ValueError, match=expected):
        load_canonical(SwiftFormer("XS"), tensors)
