"""QAT against post-training int8 on SwiftFormer-XS (fixture weights, real photos), at a reduced
size so that it fits the test budget; `benchmarks/compress_report.py` measures 224 px and L1."""

import numpy as np
import pytest

from tests.support import GOLDEN_CASES, SAMPLES

# Through our guard, which keeps tf.keras meaning Keras 3 for the rest of the session.
pytest.importorskip("converters.tfmot", exc_type=ImportError)

SIZE, IMAGES, STEPS = 96, 48, 40


def test_qat_beats_post_training_int8_on_xs(tmp_path):
    """Same fine-tuning / calibration photos for both, other photos to evaluate: the QAT file,
    converted with no representative dataset, has a higher SQNR than the converter's min/max
    post-training int8 (from the folded graph) and its top-1 agreement within one photo, at
    about its size, is integer except for the attention's RMS statistics, has int8 input quantised
    with the range learnt in training, and runs through the runtime helper."""
    from benchmarks.int8_report import converter_int8
    from converters.compress import measure_format, qat_model
    from converters.inference_graph import for_inference
    from converters.runtime import TFLiteRunner
    from converters.tfmot.export import FLOAT_OPS, convert_qat
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
    # The converter's own min/max post-training int8, the baseline these numbers were measured
    # against; the default int8 (GPTQ weights, chosen ranges) is measured against QAT in
    # benchmarks/int8_report.py.
    ptq = measure_format("int8", converter_int8(for_inference(model), images),
                         {}, model.name, evaluation, reference, tmp_path)
    student = qat_model(model, images, steps=STEPS)
    content = convert_qat(student, io="int8")
    qat = measure_format("qat_int8", content, {}, model.name, evaluation, reference, tmp_path)
    print(f"XS {SIZE} px: int8 {ptq['sqnr_db']:.2f} dB / {ptq['top1_agreement']:.3f}, "
          f"qat_int8 {qat['sqnr_db']:.2f} dB / {qat['top1_agreement']:.3f}")
    assert qat["sqnr_db"] > ptq["sqnr_db"] + 1.0, (qat, ptq)  # measured: +1.9 dB
    # One photo is 2 points of top-1 here (measured 44 vs 45 of 48; the random-weight model's
    # argmax has near ties); benchmarks/compress_report.py compares 100 photos at 224 px.
    assert qat["top1_agreement"] >= ptq["top1_agreement"] - 1.5 / IMAGES, (qat, ptq)
    assert sorted(float_ops(content)) == sorted(FLOAT_OPS)
    runner = TFLiteRunner(content=content)
    assert runner.input_shape == (1, SIZE, SIZE, 3) and runner.input_dtype == np.int8
    quantize_layer, = [layer for layer in student.layers
                       if type(layer).__name__ == "QuantizeLayer"]  # TFMOT's input quantiser
    low, high = (v.numpy() for v in quantize_layer.weights[:2])
    assert low == 0 and high == 255  # the photos' pixel range, seen in training
    scale, zero_point = runner.input_quantization
    assert scale == pytest.approx((high - low) / 255, rel=1e-3)
    assert zero_point == round(-128 - low / scale)
    assert np.isclose(qat["size_bytes"], ptq["size_bytes"], rtol=0.2)
