"""keras_swiftformer.training: losses, AGC, schedule, configuration, data, checkpoints
(fast, in-process; the training runs are in test_training_runs.py)."""

import json
import math
import os
import warnings

import numpy as np
import pytest

import keras
from keras_swiftformer import SwiftFormer
from keras_swiftformer.training import config as config_lib
from keras_swiftformer import images as images_lib
from keras_swiftformer.training import data as data_lib
from keras_swiftformer.training.augment import MixUpCutMix, SampleAugment
from keras_swiftformer.training.checkpoint import CheckpointMismatch, TrainingState
from keras_swiftformer.training.distribute import Runtime
from keras_swiftformer.training.losses import distillation_loss
from keras_swiftformer.training.optim import (
    AdamWAGC,
    adaptive_clip,
    agc_unit_axes,
    lr_schedule,
    no_decay_variables,
)
from keras_swiftformer.training.trainer import teacher_class_index
from tests.support import SAMPLES, TINY, photos_by_class
from tests.support.datasets import make_tree


# --- losses ----------------------------------------------------------------------------------

HEAD, DIST, TEACHER = [[2.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], [[0.0, 0.0, 3.0]]
TARGET = [[1.0, 0.0, 0.0]]


def loss(**kwargs):
    args = dict(targets=np.array(TARGET), head_logits=np.array(HEAD),
                dist_logits=np.array(DIST), teacher_logits=np.array(TEACHER))
    args.update(kwargs)
    return float(np.asarray(distillation_loss(**args))[0])


def test_hard_distillation_matches_hand_computed_value():
    # CE(head, class 0) = log(e^2 + 2) - 2; CE(dist, teacher argmax 2) = log(2 + e) - 0.
    head_ce, dist_ce = math.log(math.exp(2) + 2) - 2, math.log(2 + math.e)
    assert loss(distillation="hard") == pytest.approx(0.5 * head_ce + 0.5 * dist_ce, rel=1e-6)
    assert loss(distillation="hard", alpha=0.25) == pytest.approx(
        0.75 * head_ce + 0.25 * dist_ce, rel=1e-6)
    # Label smoothing 0.1 over 3 classes: targets (0.9333, 0.0333, 0.0333); the teacher's hard
    # label is not smoothed.
    smoothed = math.log(math.exp(2) + 2) - 2 * (0.9 + 0.1 / 3)
    assert loss(distillation="hard", smoothing=0.1) == pytest.approx(
        0.5 * smoothed + 0.5 * dist_ce, rel=1e-6)


def test_soft_distillation_matches_hand_computed_value_and_deit():
    tau = 2.0
    student = [0.0, 0.5, 0.0]
    teacher = [0.0, 0.0, 1.5]
    z_s = math.log(sum(math.exp(v) for v in student))
    z_t = math.log(sum(math.exp(v) for v in teacher))
    kl = sum(math.exp(t - z_t) * ((t - z_t) - (s - z_s)) for s, t in zip(student, teacher))
    head_ce = math.log(math.exp(2) + 2) - 2
    expected = 0.5 * head_ce + 0.5 * kl * tau**2 / 3  # DeiT: sum / numel * tau^2, numel = 1 * 3
    assert loss(distillation="soft", tau=tau) == pytest.approx(expected, rel=1e-6)

    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    head, dist, teach = (rng.normal(size=(4, 5)).astype("float32") for _ in range(3))
    labels = rng.integers(0, 5, 4)
    targets = np.eye(5, dtype="float32")[labels]
    # The official util/losses.py, soft branch, verbatim in its arithmetic.
    kd = F.kl_div(F.log_softmax(torch.tensor(dist) / tau, dim=1),
                  F.log_softmax(torch.tensor(teach) / tau, dim=1),
                  reduction="sum", log_target=True) * (tau * tau) / dist.size
    reference = 0.5 * F.cross_entropy(torch.tensor(head), torch.tensor(labels)) + 0.5 * kd
    ours = np.asarray(distillation_loss(targets, head, dist, teach, "soft", 0.5, tau)).mean()
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)


def test_no_distillation_is_cross_entropy_of_the_averaged_heads():
    average = [1.0, 0.5, 0.0]  # (HEAD + DIST) / 2
    expected = math.log(sum(math.exp(v) for v in average)) - 1.0
    assert loss(distillation="none", teacher_logits=None) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="teacher_logits"):
        loss(distillation="hard", teacher_logits=None)


# --- adaptive gradient clipping --------------------------------------------------------------

def test_agc_matches_hand_computed_values():
    # Dense kernel (in=2, out=2): one unit per output column; norms 5 and 1, clip 0.01 -> 0.05
    # and 0.01. Column 0's gradient (norm 0.5) is scaled to norm 0.05; column 1's (0.005) stays.
    kernel = np.array([[3.0, 0.0], [4.0, 1.0]])
    grad = np.array([[0.3, 0.003], [0.4, 0.004]])
    np.testing.assert_allclose(adaptive_clip(grad, kernel, (0,)),
                               [[0.03, 0.003], [0.04, 0.004]], rtol=1e-6)
    # A zero bias: whole-tensor norm floored at eps 1e-3 -> max norm 1e-5; gradient norm 5e-5.
    np.testing.assert_allclose(adaptive_clip(np.array([3e-5, 4e-5]), np.zeros(2), None),
                               [0.6e-5, 0.8e-5], rtol=1e-6)
    # Layer scale: every element its own unit (PyTorch (C, 1, 1)).
    np.testing.assert_allclose(
        adaptive_clip(np.array([-1.0, 0.001]), np.array([1e-5, 2.0]), ()), [-1e-5, 0.001],
        rtol=1e-6)


def timm_adaptive_clip(grad, param, clip=0.01, eps=1e-3):
    """timm.utils.agc.adaptive_clip_grad on PyTorch-layout arrays (NumPy transcription)."""
    def norm(x):
        if x.ndim <= 1:
            return np.linalg.norm(x)
        return np.sqrt((x**2).sum(axis=tuple(range(1, x.ndim)), keepdims=True))

    max_norm = np.maximum(norm(param), eps) * clip
    grad_norm = norm(grad)
    return np.where(grad_norm < max_norm, grad, grad * (max_norm / np.maximum(grad_norm, 1e-6)))


def test_agc_units_equal_timm_on_the_pytorch_layout():
    from keras_swiftformer.mapping import PARAMETERS

    model = SwiftFormer(**TINY, classes=5, input_shape=(32, 32, 3))
    units = agc_unit_axes(model)
    rng = np.random.default_rng(1)
    seen = set()
    for layer in model.layers:
        kind = type(layer).__name__
        for variable in layer.trainable_weights:
            short = variable.path.rsplit("/", 1)[-1]
            _, transform = PARAMETERS[kind][short]
            value = rng.normal(size=variable.shape).astype("float32")
            grad = (rng.normal(size=variable.shape) * 10 ** rng.uniform(-4, 0)).astype("float32")
            ours = np.asarray(adaptive_clip(grad, value, units[variable.path]))
            theirs = transform.to_keras(timm_adaptive_clip(transform.to_torch(grad),
                                                           transform.to_torch(value)))
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-9,
                                       err_msg=variable.path)
            seen.add((kind, short))
    assert {("Conv2D", "kernel"), ("DepthwiseConv2D", "kernel"), ("Dense", "kernel"),
            ("LayerScale", "gamma"), ("AdditiveTokenMixing", "w_g"),
            ("BatchNormalization", "gamma")} <= seen


def test_adamw_agc_clips_before_the_adamw_update_and_decays_as_official():
    model = SwiftFormer(**TINY, classes=5, input_shape=(32, 32, 3))
    skipped = {v.path for v in no_decay_variables(model)}
    # timm's factory decays tensors of more than one dimension in PyTorch: layer scales
    # (C, 1, 1), w_g (D, 1), kernels; not biases or BatchNorm scales and offsets.
    assert {"stem-0/bias", "stem-1/gamma", "stem-1/beta", "head/bias"} <= skipped
    assert not {"stages-0-blocks-0-layer_scale_1/gamma", "stages-0-blocks-0-attn/w_g",
                "stem-0/kernel", "head/kernel"} & skipped

    w1, w2 = keras.Variable(np.array([[3.0, 0.0], [4.0, 1.0]]), name="k1"), \
        keras.Variable(np.array([[3.0, 0.0], [4.0, 1.0]]), name="k2")
    grad = np.array([[0.3, 0.003], [0.4, 0.004]], "float32")
    agc = AdamWAGC(learning_rate=0.1, weight_decay=0.0, agc_clip_factor=0.01,
                   agc_unit_axes={w1.path: (0,)})
    plain = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.0)
    agc.apply([grad], [w1])
    plain.apply([np.asarray(adaptive_clip(grad, w2.numpy(), (0,)))], [w2])
    np.testing.assert_allclose(w1.numpy(), w2.numpy(), rtol=1e-6)


def test_schedule_warms_up_then_decays_to_the_floor():
    schedule = lr_schedule(1e-3, total_steps=100, warmup_steps=10, warmup_lr=1e-6, min_lr=1e-5)
    values = [float(schedule(step)) for step in (0, 5, 10, 55, 100, 150)]
    assert values[0] == pytest.approx(1e-6)
    assert values[1] == pytest.approx((1e-6 + 1e-3) / 2, rel=1e-3)
    assert values[2] == pytest.approx(1e-3)
    assert values[2] > values[3] > values[4]
    assert values[4] == pytest.approx(1e-5, rel=1e-3) and values[5] == pytest.approx(1e-5)


# --- configuration ---------------------------------------------------------------------------

def test_recipe_defaults_variant_changes_and_explicit_values():
    xs = config_lib.make_config(data="d", output_dir="o", variant="xs")
    assert (xs.rand_augment, xs.mixup, xs.cutmix, xs.reprob) == ("", 0.0, 0.0, 0.25)
    s = config_lib.make_config(data="d", output_dir="o", variant="S")
    assert s.rand_augment == "rand-m9-mstd0.5" and s.mixup == 0.0
    l1 = config_lib.make_config(data="d", output_dir="o", variant="L1")
    assert (l1.mixup, l1.cutmix, l1.clip_mode, l1.clip_grad) == (0.8, 1.0, "agc", 0.01)
    assert (l1.weight_decay, l1.warmup_epochs, l1.min_lr, l1.epochs) == (0.025, 5, 1e-5, 300)
    assert l1.replace(batch_size=256).peak_lr == pytest.approx(2e-3 * 256 / 2048)
    explicit = config_lib.make_config(data="d", output_dir="o", variant="XS", mixup=0.8)
    assert explicit.mixup == 0.8 and explicit.cutmix == 0.0
    assert config_lib.parse_rand_augment("rand-m9-mstd0.5-inc1") == (2, 9.0, 0.5)


@pytest.mark.parametrize("values, message", [
    (dict(batch_size=0), "batch_size"),
    (dict(variant="XXL"), "variant"),
    (dict(mixup=-1), "mixup"),
    (dict(distillation="hard"), "teacher"),
    (dict(rand_augment="autoaug"), "rand_augment"),
    (dict(warmup_epochs=400), "warmup_epochs"),
    (dict(colour=1), "Unknown training options: colour"),
])
def test_bad_options_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        config_lib.make_config(data="d", output_dir="o", **values)


def test_config_file_then_command_line(tmp_path):
    from keras_swiftformer.training.cli import resolve

    (tmp_path / "run.json").write_text(json.dumps({"batch-size": 64, "epochs": 7,
                                                    "recipe": "finetune"}))
    config, _ = resolve(["--config", str(tmp_path / "run.json"), "--data", "d", "--output-dir",
                         "o", "--epochs", "9", "--depths", "1", "1", "1", "1", "--widths",
                         "16", "16", "32", "32"])
    assert (config.batch_size, config.epochs, config.mixup, config.depths) == (64, 9, 0.0,
                                                                                (1, 1, 1, 1))
    pytest.importorskip("yaml")
    (tmp_path / "run.yaml").write_text("batch_size: 32\nmixed_precision: mixed_bfloat16\n")
    assert config_lib.read_config_file(str(tmp_path / "run.yaml")) == {
        "batch_size": 32, "mixed_precision": "mixed_bfloat16"}


# --- data ------------------------------------------------------------------------------------

def test_bad_folders_and_images_give_clear_errors_or_skips(tmp_path):
    root = make_tree(tmp_path)
    (root / "train" / "empty_class").mkdir()
    with pytest.raises(ValueError, match="Empty class folder.*empty_class"):
        images_lib.read_image_folder(str(root / "train"))
    (root / "train" / "empty_class").rmdir()
    good = (root / "train" / "class0" / "1.jpg").read_bytes()
    (root / "train" / "class1" / "bad.jpg").write_bytes(good[: len(good) // 2])
    (root / "train" / "class2" / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="2 bad image.*truncated JPEG"):
        data_lib.read_split(str(root), "train")
    with pytest.warns(UserWarning, match="Skipping 2 bad image"):
        kept = data_lib.read_split(str(root), "train", on_bad="skip")
    assert len(kept) == 12 and "class1/bad.jpg" not in kept.keys
    with pytest.raises(ValueError, match="training set lacks"):
        images_lib.read_image_folder(str(root / "val"), classes=["class0", "class1"])


def test_batch_must_divide_across_workers_and_devices():
    with pytest.raises(ValueError, match="12 does not divide across 5 workers"):
        data_lib.check_shard(12, (0, 5))
    with pytest.raises(ValueError, match="does not divide across 4 devices"):
        Runtime(replicas=4).check_batch(6)


def test_teacher_with_another_class_count_is_refused(tmp_path):
    config = config_lib.make_config(data="d", output_dir="o", teacher=str(tmp_path))
    with pytest.raises(ValueError, match="teacher predicts 7 classes but the data has 3"):
        teacher_class_index(config, ["a", "b", "c"], 7)
    synsets = ["n01440764", "n01443537"]  # tench, goldfish: ImageNet classes 0 and 1
    assert teacher_class_index(config, synsets, 1000) == [0, 1]
    assert teacher_class_index(config, synsets, 2) is None


def batches(dataset, count):
    return [{k: v.numpy() for k, v in element.items()} for element in dataset.take(count)]


def test_worker_shards_make_the_global_batch_and_resume_skips_exactly(tmp_path):
    image_set = data_lib.read_split(str(make_tree(tmp_path)), "train")
    augment = SampleAugment("rand-m9-mstd0.5", reprob=0.5)
    augmentation = data_lib.Augmentation(seed=5, sample_augment=augment)
    make = lambda **kw: data_lib.train_dataset(image_set, 4, 32, augmentation, **kw)
    whole = batches(make(), 5)
    halves = [batches(make(shard=(i, 2)), 5) for i in range(2)]
    for step, batch in enumerate(whole):
        for key in batch:
            joined = np.concatenate([halves[0][step][key], halves[1][step][key]])
            np.testing.assert_array_equal(joined, batch[key])  # bitwise: same augmentation
    resumed = batches(make(start_step=3), 2)
    for a, b in zip(resumed, whole[3:5]):
        np.testing.assert_array_equal(a["image"], b["image"])
    # 12 images, batches of 4: the first 3 batches are one permutation (each image once).
    labels = np.concatenate([b["label"] for b in whole[:3]]).argmax(-1)
    assert np.bincount(labels).tolist() == [4, 4, 4]
    assert not np.array_equal(whole[0]["image"], whole[3]["image"])
    assert whole[0]["image"].shape == (4, 32, 32, 3) and whole[0]["image"].max() <= 255


def test_validation_is_padded_with_zero_weights_and_sharded(tmp_path):
    image_set = data_lib.read_split(str(make_tree(tmp_path)), "val")  # 6 images
    full = batches(data_lib.eval_dataset(image_set, 4, 32), 10)
    assert [b["weight"].tolist() for b in full] == [[1, 1, 1, 1], [1, 1, 0, 0]]
    second = batches(data_lib.eval_dataset(image_set, 4, 32, shard=(1, 2)), 10)
    np.testing.assert_array_equal(second[1]["image"], full[1]["image"][2:])


def test_saved_teacher_logits_must_cover_every_image(tmp_path):
    image_set = data_lib.read_split(str(make_tree(tmp_path)), "train")
    path = tmp_path / "logits.npz"
    np.savez(path, files=np.array(image_set.keys[1:]), logits=np.zeros((11, 5)))
    with pytest.raises(ValueError, match="no logits for 1 training image"):
        data_lib.read_teacher_logits(str(path), image_set)
    logits = np.arange(60, dtype="float32").reshape(12, 5)
    np.savez(path, files=np.array(image_set.keys[::-1]), logits=logits)
    np.testing.assert_array_equal(data_lib.read_teacher_logits(str(path), image_set),
                                  logits[::-1])


def test_mixup_cutmix_mixes_images_labels_and_teacher_logits_alike():
    images = np.broadcast_to(np.arange(8, dtype="float32")[:, None, None, None], (8, 16, 16, 3))
    labels = np.eye(8, dtype="float32")
    for mixup, cutmix in ((0.8, 0.0), (0.0, 1.0), (0.8, 1.0)):
        layer = MixUpCutMix(mixup, cutmix, seed=1)
        for _ in range(3):
            x, y, t = (np.asarray(v) for v in layer(images, labels, labels * 10))
            np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
            np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), y @ np.arange(8), rtol=1e-4)
            np.testing.assert_allclose(t, y * 10, rtol=1e-5)


# --- checkpoints and outputs -----------------------------------------------------------------

def test_checkpoint_round_trip_prunes_and_refuses_other_models(tmp_path):
    model = SwiftFormer(**TINY, classes=3, input_shape=(32, 32, 3))
    optimizer = keras.optimizers.AdamW()
    optimizer.build(model.trainable_variables)
    state = TrainingState(model.weights, optimizer)
    record = {"config": {"batch_size": 8, "depths": (1, 1, 1, 1)}}
    for epoch in (1, 2, 3):
        state.save(str(tmp_path), epoch, record, keep=2)
    assert sorted(os.listdir(tmp_path)) == ["epoch-0002.npz", "epoch-0003.npz"]
    before = [np.array(w) for w in model.weights]
    for w in model.weights:
        w.assign(np.zeros(w.shape))
    assert state.restore(str(tmp_path / "epoch-0003.npz"),
                         expected=record["config"])["epoch"] == 3
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, np.array(b))
    with pytest.raises(CheckpointMismatch, match="batch_size=8, this run has 16"):
        state.restore(str(tmp_path / "epoch-0003.npz"), expected={"batch_size": 16})
    other = SwiftFormer(depths=(1, 1, 1, 1), widths=(16, 16, 32, 48), classes=3,
                        input_shape=(32, 32, 3))
    with pytest.raises(CheckpointMismatch):
        TrainingState(other.weights, optimizer).restore(str(tmp_path / "epoch-0003.npz"))


def test_one_writer_per_checkpoint_file():
    from keras_swiftformer.training.checkpoint import checkpoint_dir, is_writer

    assert [is_writer("chief", rank) for rank in range(3)] == [True, False, False]
    assert all(is_writer("worker", rank) for rank in range(3))
    folders = {checkpoint_dir("out", "worker", rank) for rank in range(3)}
    assert len(folders) == 3  # each worker its own folder
    assert checkpoint_dir("out", "chief", 2) == os.path.join("out", "checkpoints")
    assert checkpoint_dir("out", "none", 0) is None


def test_a_finished_model_is_never_overwritten_silently(tmp_path):
    from keras_swiftformer.training import train

    (tmp_path / "model.keras").write_text("finished")
    config = config_lib.make_config(data=str(tmp_path / "missing"), output_dir=str(tmp_path),
                                    **TINY)
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(config)
    assert (tmp_path / "model.keras").read_text() == "finished"


def test_samples_map_to_imagenet_synset_folders():
    names = [path.name for path in photos_by_class(SAMPLES, 3)]
    synsets = [name.split("_")[1] for name in names]
    assert data_lib.imagenet_class_indices(synsets) == [int(n.split("_")[0]) for n in names]
    assert data_lib.imagenet_class_indices(["cats", "dogs"]) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SampleAugment("", color_jitter=0.4, reprob=0.25)  # Keras accepts the mapped factors
