"""Compression through TFMOT on the tf_keras twin: twin parity, range calibration, pruning,
clustering, and the pipeline's --qat / --prune / --cluster (tiny configuration;
`test_compress_qat.py` runs XS)."""

import re

import numpy as np
import pytest

from tests.support import TINY, relative_error, run_python

# Through our guard, which keeps tf.keras meaning Keras 3 for the rest of the session.
pytest.importorskip("converters.tfmot", exc_type=ImportError)

TINY64 = dict(TINY, input_shape=(64, 64, 3), classifier_activation=None)
ATTENTIONS = 4  # attention blocks of TINY64, each with a (1, D) w_g kernel left dense


def tiny_model(token_weighting="l2", token_sum="sum", seed=0, classes=10):
    """The tiny model with every weight drawn (BatchNorm statistics, layer scales, w_g), so
    that no branch is an identity."""
    from keras_swiftformer import SwiftFormer

    model = SwiftFormer(**TINY64, token_weighting=token_weighting, classes=classes)
    for layer in model.layers:
        if hasattr(layer, "token_sum"):
            layer.token_sum = token_sum
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "variance" in v.path:
            value = rng.uniform(0.5, 2.0, v.shape)
        elif "gamma" in v.path and "layer_scale" in v.path:
            value = rng.uniform(0.5, 1.0, v.shape)
        else:
            fan_in = int(np.prod(v.shape[:-1])) if len(v.shape) > 1 else 20
            value = rng.normal(0, 1 / np.sqrt(fan_in), v.shape)
        v.assign(value.astype("float32"))
    return model


def images(count, seed=0, size=64):
    from converters.pipeline import synthetic_images

    return synthetic_images(count, (size, size), seed).astype("float32")


@pytest.mark.parametrize("token_weighting,token_sum", [("l2", "sum"), ("ones", "mean")])
def test_twin_round_trip(token_weighting, token_sum):
    """Same outputs from the twin (1e-6 relative); weights back into a fresh Keras 3 model give
    the same outputs exactly."""
    import keras

    from converters.tfmot.twin import build_twin
    from keras_swiftformer.mapping import copy_weights

    model = tiny_model(token_weighting, token_sum)
    twin = build_twin(model)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    assert [tuple(w.shape) for w in twin.get_layer("stem-1").weights] == \
        [tuple(w.shape) for w in model.get_layer("stem-1").weights]
    x = images(4)
    reference = model.predict(x, verbose=0)
    assert relative_error(twin.predict(x, verbose=0), reference) < 1e-6
    fresh = keras.models.clone_model(model)
    assert copy_weights(twin, fresh) == len(model.weights)
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), reference)


def test_copy_weights_checks_every_layer():
    from keras_swiftformer import SwiftFormer

    from converters.tfmot.twin import build_twin
    from keras_swiftformer.mapping import copy_weights
    from keras_swiftformer.checkpoints import CheckpointError

    twin = build_twin(tiny_model())
    other = SwiftFormer(**{**TINY64, "widths": (16, 16, 32, 48)}, classes=10)
    with pytest.raises(CheckpointError, match=r"stages-3.* does not match"):
        copy_weights(twin, other)
    headless = SwiftFormer(**TINY64, include_top=False)
    with pytest.raises(CheckpointError, match="only in .*head"):
        copy_weights(twin, headless)


@pytest.mark.parametrize("token_weighting,token_sum", [("l2", "sum"), ("l2", "mean"),
                                                        ("ones", "sum")])
def test_observed_mix_is_the_mixins_math(token_weighting, token_sum):
    """The formula with observation points (QAT) equals the mixin's `_mix` in float."""
    from converters.tfmot.twin import AdditiveTokenMixing

    rng = np.random.default_rng(1)
    layer = AdditiveTokenMixing(token_weighting, token_sum)
    query, key = (rng.normal(size=(2, 8, 8, 16)).astype("float32") for _ in range(2))
    layer([query, key])
    layer.w_g.assign(rng.normal(size=(16, 1)).astype("float32"))
    plain = layer._mix(query, key, layer.w_g, token_weighting, token_sum)
    seen = []
    observed = layer._observed_mix(query, key, layer.w_g, token_weighting, token_sum,
                                   lambda name, x: seen.append(name) or x)
    assert seen == list(layer.points())  # every point, in computation order
    for a, b in zip(plain, observed):
        assert relative_error(b, a) < 1e-6


@pytest.mark.parametrize("token_weighting", ["l2", "ones"])
def test_folded_twin_round_trip_and_observed_points(token_weighting):
    """The twin of the folded graph (what QAT quantises) gives its outputs within 1e-6; its
    attention passes every point `points` names to the observer, in computation order, and
    computes the Keras 3 layer's function."""
    from converters.inference_graph import FoldedTokenMixing as Folded, for_inference
    from converters.tfmot.twin import FoldedTokenMixing, build_twin

    folded = for_inference(tiny_model(token_weighting), projections="conv")
    twin = build_twin(folded)
    x = images(4)
    assert relative_error(twin.predict(x, verbose=0), folded.predict(x, verbose=0)) < 1e-6

    rng = np.random.default_rng(3)
    query, key = (rng.normal(size=(2, 8, 8, 16)).astype("float32") for _ in range(2))
    reference, layer = Folded(token_weighting), FoldedTokenMixing(token_weighting)
    reference([query, key]), layer([query, key])
    w_g = rng.normal(size=(16, 1)).astype("float32")
    reference.w_g.assign(w_g), layer.w_g.assign(w_g)
    seen = []
    observed = layer._folded_mix([query, key], layer.w_g, lambda name, t: seen.append(name) or t)
    assert seen == list(layer.points())
    for a, b in zip(reference([query, key]), observed):
        assert relative_error(b, a) < 1e-6


def test_relative_adam_steps_by_each_tensors_scale():
    """The first step moves every element by the learning rate times its tensor's RMS (floored
    at MIN_SCALE), in the gradient's descent direction (plain Adam moves all by the learning
    rate)."""
    import tensorflow as tf

    from converters.tfmot.finetune import MIN_SCALE, RelativeAdam

    small = tf.Variable(np.full((3,), 1e-4, np.float32))
    large = tf.Variable(np.array([10.0, -20.0], np.float32))
    optimizer = RelativeAdam([small, large], learning_rate=1e-2)
    optimizer.apply_gradients([tf.constant([1.0, -2.0, 0.5]), tf.constant([3.0, -1e-3])])
    np.testing.assert_allclose(small.numpy(), 1e-4 - 1e-2 * MIN_SCALE * np.array([1, -1, 1]),
                               rtol=1e-4)
    rms = np.sqrt((100 + 400) / 2)
    np.testing.assert_allclose(large.numpy(), [10 - 1e-2 * rms, -20 + 1e-2 * rms], rtol=1e-5)


def test_missing_extra_names_it():
    """Without TFMOT, the import and the pipeline's --qat both name the extra to install."""
    out = run_python(
        "import sys\n"
        "sys.modules['tensorflow_model_optimization'] = None\n"
        "try:\n"
        "    import converters.tfmot\n"
        "except ImportError as err:\n"
        "    print('import:', err)\n"
        "from converters.cli import main\n"
        "sys.stderr = sys.stdout\n"
        "print('rc', main(['--qat', '--formats', 'float32', '--output-dir', 'unused']))\n")
    assert "import: " in out and "pip install 'keras-swiftformer[tfmot]'" in out.split("rc")[0]
    assert out.count("pip install 'keras-swiftformer[tfmot]'") == 2 and "rc 2" in out


def test_importing_tfmot_leaves_tf_keras_to_keras_3():
    """After `converters.tfmot` is imported, ``tf.keras`` still means Keras 3 (coremltools
    refuses Keras 3 models once it means tf_keras) and Keras 3 models still build."""
    out = run_python(
        "import os, keras, tensorflow as tf\n"
        "import converters.tfmot\n"
        "print(tf.keras.Model is keras.Model, os.environ.get('TF_USE_LEGACY_KERAS'))\n")
    assert out.split()[-2:] == ["True", "None"]


def test_calibration_sets_the_batch_range():
    """After `calibrate_ranges`, a moving-average range is the batch range (of the quantised
    graph: 1 % off the float one), not TFMOT's initial [-6, 6] nudged by an EMA of decay
    0.999."""
    import tf_keras

    from converters.tfmot import quantize

    inputs = tf_keras.Input((8,))
    dense = tf_keras.layers.Dense(4, name="dense")
    model = tf_keras.Model(inputs, dense(inputs))
    x = np.random.default_rng(2).normal(0, 1, (64, 8)).astype("float32")
    qat = quantize.quantize_twin(model)
    assert quantize.calibrate_ranges(qat, x, batch_size=64) >= 2
    y = dense(x).numpy()
    (low, high), = [(a.numpy(), b.numpy()) for a, b in quantize.moving_average_ranges(qat)
                    if "dense" in a.name]
    assert low == pytest.approx(min(y.min(), 0), rel=1e-2)
    assert high == pytest.approx(max(y.max(), 0), rel=1e-2)


def test_unstructured_pruning_reaches_its_target():
    """50 % of every Conv2D / Dense kernel but the first; depthwise kernels stay dense."""
    from converters.compress import FineTuning
    from converters.tfmot import finetune, sparsity
    from converters.tfmot.twin import build_twin

    model = tiny_model()
    pruned = sparsity.prune_twin(build_twin(model), target=0.5, steps=4)
    finetune.distill(pruned, model, images(8), steps=4, tuning=FineTuning(batch_size=8),
                     callbacks=sparsity.callbacks())
    stripped = sparsity.strip(pruned)
    summary = sparsity.sparsity_summary(stripped)
    assert summary["prunable_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert 0.8 < summary["prunable_fraction"] < 1
    assert summary["overall_sparsity"] == pytest.approx(0.5 * summary["prunable_fraction"],
                                                        abs=0.01)
    dwconv = stripped.get_layer("stages-0-blocks-0-local_representation-dwconv")
    assert np.all(dwconv.depthwise_kernel.numpy() != 0)
    assert np.all(stripped.get_layer("stem-0").kernel.numpy() != 0)


def check_rows(rows, directory, formats):
    """Rows of `formats`, in order, error-free, in the pipeline report's shape, their files
    written; returns them by format."""
    by_format = {row["format"]: row for row in rows}
    assert list(by_format) == formats
    for row in rows:
        assert "error" not in row, row
        assert (directory / row["file"]).stat().st_size == row["size_bytes"]
        assert {"max_abs_error", "max_rel_error", "sqnr_db", "top1_agreement", "zip_bytes",
                "kernel_sparsity", "max_unique_per_channel", "steps"} <= set(row)
    return by_format


def count_kernels(content):
    """CONV_2D and FULLY_CONNECTED kernels in a `.tflite` file."""
    from converters.tfmot.tflite_stats import kernels

    return sum(op != "DEPTHWISE_CONV_2D" for op, _, _ in kernels(content))


@pytest.mark.parametrize("options,message", [
    (dict(prune=("3:8",)), "Pruning spec '3:8'"),
    (dict(prune=("150%",)), "must be in (0, 1)"),
    (dict(cluster=(1,)), "Cluster count 1"),
    (dict(cluster=("many",)), "Cluster count 'many'"),
    (dict(qat=True, qat_steps=0), "qat_steps must be at least 1"),
    (dict(prune=("2:4",), prune_steps=-1), "prune_steps must be at least 1"),
    (dict(cluster=(8,), cluster_steps=2.5), "cluster_steps must be at least 1"),
])
def test_bad_compression_options_name_the_problem(options, message):
    from converters.compress import CompressionOptions

    with pytest.raises(ValueError, match=re.escape(message)):
        CompressionOptions(**options).check()


def test_compression_options():
    """Lists become tuples (the options stay hashable); each method has its own steps."""
    from converters.compress import CompressionOptions

    assert not CompressionOptions().enabled()
    options = CompressionOptions(qat=True, prune=["2:4", "50%"], cluster=["16"], qat_steps=7)
    assert options.check() is options and options.enabled()
    assert options.prune == ("2:4", "50%") and options.cluster == ("16",)
    assert (options.qat_steps, options.prune_steps, options.cluster_steps) == (7, 100, 100)
    assert CompressionOptions(cluster=(4,)).enabled()
    hash(options)


@pytest.mark.parametrize("qat", [
    False,
    pytest.param(True, marks=pytest.mark.slow),  # 5 minutes on 2 cores
])
def test_compress_formats_rows(qat, tmp_path):
    """`compress_formats` with ``qat``, ``prune=("2:4",)``, ``cluster=(8,)`` (on the tiny
    model): rows in the pipeline report's shape, each method with its own steps; the files hold
    what each method promises (every pruned kernel 2:4, <= 8 values per output channel of every
    clustered kernel, zipped smaller); with QAT, every int8 file takes and gives float32 (as
    ``int8``: MediaPipe refuses int8 input), ``qat_int8`` keeps in float what the post-training
    int8 keeps and its row says which int8 file to prefer, and the preserving QATs keep the 2:4
    pattern and the clusters through quantisation."""
    from converters.litert import tflite
    from converters.compress import CompressionOptions, compress_formats, zip_size
    from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference
    from converters.litert.runtime import TFLiteRunner
    from converters.tfmot.export import FLOAT_OPS
    from converters.tfmot.tflite_stats import float_ops, kernel_stats

    model, calibration, evaluation = tiny_model(), images(8), images(4, seed=1)
    reference = model.predict(evaluation, verbose=0)
    options = CompressionOptions(qat=qat, prune=["2:4"], cluster=[8], qat_steps=2,
                                 prune_steps=3, cluster_steps=4)
    lines = []
    rows = compress_formats(model, calibration, evaluation, reference, tmp_path, options,
                            progress=lines.append)
    compressed = ["pruned2of4_float32", "clustered8_float32"]
    if qat:
        compressed = ["qat_int8", "pruned2of4_float32", "pruned2of4_pqat_int8",
                      "clustered8_float32", "clustered8_cqat_int8"]
    by_format = check_rows(rows, tmp_path, compressed)
    assert "qat_int8: fine-tuning 2 steps on 8 images" in lines or not qat
    assert [by_format[f]["steps"] for f in compressed if "int8" not in f] == [3, 4]
    content = {fmt: (tmp_path / row["file"]).read_bytes() for fmt, row in by_format.items()}
    pruned = [fmt for fmt in compressed if fmt.startswith("pruned")]
    for fmt in pruned:
        row = by_format[fmt]
        assert row["kernels"] == count_kernels(content[fmt]) - 1 - ATTENTIONS, fmt
        assert row["m_by_n_kernels"] == row["kernels"], fmt
        assert row["kernel_sparsity"] == pytest.approx(0.5, abs=0.005), fmt
    assert by_format["pruned2of4_float32"]["depthwise_sparsity"] == 0
    assert 0.4 < by_format["pruned2of4_float32"]["overall_sparsity"] < 0.5
    for fmt in compressed:
        if fmt.startswith("clustered"):
            assert by_format[fmt]["max_unique_per_channel"] <= 8, fmt
        if fmt.endswith("int8"):
            runner = TFLiteRunner(content=content[fmt])
            output, = runner.interpreter.get_output_details()
            assert runner.input_dtype == np.float32 and output["dtype"] == np.float32, fmt
        if fmt.endswith("qat_int8") and fmt != "qat_int8":
            assert sorted(float_ops(content[fmt])) == sorted(FLOAT_OPS), fmt
    if qat:
        assert [by_format[f]["steps"] for f in compressed if "qat_int8" in f] == [2, 5, 6]
        post_training = tflite.convert(for_inference(model), "int8", calibration,
                                       float_ops=FOLDED_FLOAT_OPS)
        assert float_ops(content["qat_int8"]) == float_ops(post_training)
        assert kernel_stats(content["qat_int8"])["max_unique_per_channel"] > 8
        row = by_format["qat_int8"]
        assert {"start_sqnr_db", "start_top1_agreement", "note"} <= set(row)
        assert row["note"].endswith("prefer this file") or \
            row["note"].endswith("prefer the post-training int8 file")
    dense = zip_size(tflite.convert(model))
    assert by_format["pruned2of4_float32"]["zip_bytes"] < 0.8 * dense
    assert by_format["clustered8_float32"]["zip_bytes"] < 0.6 * dense


def test_qat_note_names_the_file_to_prefer():
    """The ``qat_int8`` row's note: against the int8 file's row when given, else its start."""
    from converters.compress import _note_qat

    row = {"sqnr_db": 30.0, "top1_agreement": 0.9, "start_sqnr_db": 28.0,
           "start_top1_agreement": 0.9}
    _note_qat(row)
    assert row["note"] == ("+2.0 dB SQNR over the post-training int8 (its start), top-1 "
                           "agreement no lower: prefer this file")
    _note_qat(row, {"sqnr_db": 29.0, "top1_agreement": 0.95})
    assert row["note"] == ("+1.0 dB SQNR over the post-training int8 (the int8 file), top-1 "
                           "agreement lower: less than the 1.5 dB that pays for the "
                           "fine-tuning, prefer the post-training int8 file")


def test_pruned_and_clustered_notes_say_what_they_give_and_need():
    """A pruned or clustered row's note: its SQNR at the default budget against the
    post-training int8, and the real fine-tuning it needs; a failed row gets none."""
    from converters.compress import _note_fine_tuned

    row = {"format": "pruned2of4_float32", "sqnr_db": 11.0, "steps": 100}
    _note_fine_tuned(row, 64, {"sqnr_db": 33.0})
    assert row["note"].startswith("11.0 dB SQNR after 100 distillation steps on 64 photos "
                                  "(-22.0 dB against the post-training int8)")
    assert "real fine-tuning run on your labelled data" in row["note"]
    failed = {"format": "clustered16_float32", "error": "ValueError: x"}
    _note_fine_tuned(failed, 64)
    assert "note" not in failed
