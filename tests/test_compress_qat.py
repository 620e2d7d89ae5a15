"""QAT against post-training int8 on SwiftFormer-XS (fixture weights, real photos), at a reduced
size so that it fits the test budget; `benchmarks/compress_report.py` measures 224 px."""

import numpy as np
import pytest

from tests.support import GOLDEN_CASES, SAMPLES

# Through our guard, which keeps tf.keras meaning Keras 3 for the rest of the session.
pytest.importorskip("converters.tfmot", exc_type=ImportError)

SIZE, IMAGES, STEPS = 96, 48, 40


def test_qat_starts_from_post_training_int8_and_improves_it(tmp_path):
    """Same fine-tuning / calibration photos for both, other photos to evaluate: the QAT student
    computes what the post-training int8 file computes before fine-tuning; the QAT file, made by
    the same export path, has a higher SQNR than that file, the same ops in float, float32 input
    and output, and runs through the runtime helper."""
    from benchmarks.int8_report import nearest_int8
    from converters.litert import tflite
    from converters.compress import FineTuning, measure_format
    from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference
    from converters.metrics import fidelity
    from converters.litert.runtime import TFLiteRunner
    from converters.tfmot.int8_qat import qat_int8, student, tuned_weights
    from converters.tfmot.tflite_stats import float_ops
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.images import list_images, load_images

    checkpoint, _, variant = GOLDEN_CASES["original_xs"]
    model = SwiftFormer(variant, weights=str(checkpoint), input_shape=(SIZE, SIZE, 3),
                        classifier_activation=None)
    paths = list_images(SAMPLES)
    images = load_images(paths[0::2][:IMAGES], SIZE)
    evaluation = load_images(paths[1::2][:IMAGES], SIZE)
    reference = model.predict(evaluation, verbose=0)
    folded = for_inference(model)
    post_training = tflite.convert(folded, "int8", calibration=images,
                                   float_ops=FOLDED_FLOAT_OPS)
    ptq = measure_format("int8", post_training, {}, model.name, evaluation, reference, tmp_path)

    # Untrained, the student is the int8 file, and exports to it.
    untrained, _ = student(folded, images)
    start = fidelity(reference, untrained.predict(evaluation, verbose=0))
    assert start["sqnr_db"] == pytest.approx(ptq["sqnr_db"], abs=0.5), (start, ptq)
    # The same int8 weights (on the grid already), ranges calibrated again: the ranges come from
    # the float kernels of the CPU at hand, so the two files agree as closely as the student does.
    again = nearest_int8(tuned_weights(untrained, folded), images)
    assert fidelity(reference, TFLiteRunner(content=again).predict(evaluation))["sqnr_db"] == \
        pytest.approx(ptq["sqnr_db"], abs=0.5)

    content, _ = qat_int8(model, images, STEPS, FineTuning())
    qat = measure_format("qat_int8", content, {}, model.name, evaluation, reference, tmp_path)
    print(f"XS {SIZE} px: int8 {ptq['sqnr_db']:.2f} dB / {ptq['top1_agreement']:.3f}, "
          f"qat_int8 {qat['sqnr_db']:.2f} dB / {qat['top1_agreement']:.3f}")
    assert qat["sqnr_db"] > ptq["sqnr_db"] + 0.2, (qat, ptq)
    # One photo is 2 points of top-1 here (the random-weight model's argmax has near ties).
    assert qat["top1_agreement"] >= ptq["top1_agreement"] - 1.5 / IMAGES, (qat, ptq)
    assert float_ops(content) == float_ops(post_training)
    runner = TFLiteRunner(content=content)
    assert runner.input_shape == (1, SIZE, SIZE, 3) and runner.input_dtype == np.float32
    assert qat["size_bytes"] == pytest.approx(ptq["size_bytes"], rel=0.01)
