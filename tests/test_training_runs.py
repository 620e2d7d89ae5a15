"""Training runs: data parallelism proven across processes (JAX) and devices (TF mirrored),
resuming after a kill, and fine-tuning on the sample photos.

The multi-process runs use two worker processes on this machine (gloo over 127.0.0.1, each
bounded by a timeout) and a tiny SwiftFormer on 32x32 images. AdamW's epsilon is raised to 1e-3
here: with the recipe's 1e-8, tensors whose gradient is structurally ~0 (a convolution bias
before BatchNorm) take steps of +-lr from float rounding alone, and one process sums a batch in
another order than two do.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import keras
from tests.support import GOLDEN_CASES, ROOT, SAMPLES, TINY, labelled_tree, run_python
from tests.support.datasets import make_tree

TIMEOUT = 900
TINY_ARGS = ["--depths", "1", "1", "1", "1", "--widths", "16", "16", "32", "32",
             "--input-size", "32", "--batch-size", "8", "--epochs", "2", "--warmup-epochs", "1",
             "--lr", "0.01", "--lr-batch", "8", "--opt-eps", "1e-3", "--val-split=",
             "--seed", "3", "--fit-verbose", "0", "--keep-checkpoints", "3"]
# The recipe's randomness on the accelerator (drop path, MixUp/CutMix); tf.data's is the same
# on any number of workers by construction (test_training.py checks it bitwise, RandAugment
# included), and Keras's image layers are slow to trace under JAX, so they are off here.
RECIPE_ARGS = ["--rand-augment=", "--color-jitter", "0", "--reprob", "0", "--drop-path", "0.1",
               "--mixup", "0.8", "--cutmix", "1.0"]


@pytest.fixture(scope="module")
def jax_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
            "KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data"), classes=4, per_class=8, size=(40, 48))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_workers(output, dataset, env, extra=()):
    """Starts two JAX worker processes of one run; returns the Popen objects."""
    port = free_port()
    procs = []
    for rank in range(2):
        log = open(os.path.join(output.parent, f"{output.name}-{rank}.log"), "a")
        args = [sys.executable, "-m", "keras_swiftformer.training.cli", "--data", str(dataset),
                "--output-dir", str(output), *TINY_ARGS, *RECIPE_ARGS, *extra,
                "--distribution", "jax", "--coordinator", f"127.0.0.1:{port}",
                "--num-processes", "2", "--process-id", str(rank)]
        procs.append(subprocess.Popen(args, env=env, cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT))
    return procs


def wait(procs, output, until=None):
    """Waits for `procs` (or for `until()`), killing them all on timeout or failure."""
    deadline, reached = time.time() + TIMEOUT, False
    while time.time() < deadline:
        if until is not None and until():
            reached = True
            break
        codes = [p.poll() for p in procs]
        if any(c not in (None, 0) for c in codes) or all(c == 0 for c in codes):
            break
        time.sleep(0.02)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
    codes = [p.returncode for p in procs]
    if (until is not None and not reached) or (until is None and any(codes)):
        logs = "\n".join(open(os.path.join(output.parent, f"{output.name}-{r}.log")).read()[-3000:]
                         for r in range(2))
        pytest.fail(f"workers ended with {codes} (timeout {TIMEOUT} s):\n{logs}")


def weights(path):
    import keras_swiftformer.layers  # noqa: F401

    model = keras.saving.load_model(path, compile=False)
    return {w.path: np.asarray(w) for w in model.weights}


def max_diff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def worker_digests(output):
    return [json.load(open(output / "workers" / f"worker-{r}.json"))["weights_sha256"]
            for r in range(2)]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, dataset, jax_env):
    """One JAX process on the same global batches, and one trained on worker 0's half only."""
    out = tmp_path_factory.mktemp("single")
    code = (
        "from keras_swiftformer.training.cli import resolve\n"
        "from keras_swiftformer.training import train\n"
        f"config, _ = resolve({['--data', str(dataset), '--output-dir', 'X', *TINY_ARGS]!r} + "
        f"{RECIPE_ARGS!r})\n"
        f"train(config.replace(output_dir={str(out / 'full')!r}, distribution='none'))\n"
        f"train(config.replace(output_dir={str(out / 'alone')!r}, distribution='none'), shard=(0, 2))\n"
    )
    run_python(code, env={k: jax_env[k] for k in jax_env if k.startswith(("JAX", "KERAS"))},
               timeout=TIMEOUT)
    return (weights(out / "full" / "model.keras"), weights(out / "alone" / "model.keras"),
            checkpoint_weights(out / "full" / "checkpoints" / "epoch-0001.npz"))


def checkpoint_weights(path):
    """Model-side arrays of a training checkpoint, by variable path."""
    with np.load(path) as data:
        return {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("v")}


def test_two_jax_workers_equal_one_process_also_after_a_kill(tmp_path, dataset, jax_env,
                                                              single_process):
    """Two worker processes: after epoch 1 (both killed right then) their checkpoint equals
    one process's on the same global batches; resumed, both end bitwise identical and equal
    to one process; one worker alone on its half differs, so the all-reduce is real."""
    output = tmp_path / "two"
    first = output / "checkpoints" / "epoch-0001.npz"
    wait(launch_workers(output, dataset, jax_env), output, until=first.exists)
    assert not (output / "model.keras").exists()  # killed mid-run
    full, alone, single_first = single_process
    two_first = checkpoint_weights(first)
    assert two_first.keys() == single_first.keys()
    assert max_diff(two_first, single_first) < 1e-5

    wait(launch_workers(output, dataset, jax_env), output)  # resumes from epoch 1
    info = json.load(open(output / "model.json"))
    assert (info["engine"], info["processes"], info["resumed_from_epoch"], info["steps"]) == (
        "jax", 2, 1, 8)
    digests = worker_digests(output)
    assert digests[0] == digests[1]
    two = weights(output / "model.keras")
    assert max_diff(two, full) < 1e-5
    assert max_diff(alone, full) > 1e-3 and max_diff(alone, two) > 1e-3


def test_mirrored_strategy_on_two_cpu_devices_equals_one_device(tmp_path, dataset):
    code = (
        "import numpy as np\n"
        "from keras_swiftformer.training.cli import resolve\n"
        "from keras_swiftformer.training import train\n"
        f"config, _ = resolve({['--data', str(dataset), '--output-dir', 'X', *TINY_ARGS]!r} + "
        "['--rand-augment=', '--mixup', '0', '--cutmix', '0', '--jit-compile', 'false'])\n"
        f"two = train(config.replace(output_dir={str(tmp_path / 'two')!r}, distribution='mirrored',"
        " cpu_devices=2))\n"
        f"one = train(config.replace(output_dir={str(tmp_path / 'one')!r}, distribution='none'))\n"
        "assert (two.runtime.engine, two.runtime.replicas, one.runtime.replicas) == "
        "('mirrored', 2, 1)\n"
        "d = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))\n"
        "        for a, b in zip(two.model.weights, one.model.weights))\n"
        "print('DIFF', d)\n"
    )
    out = run_python(code, env={"KERAS_BACKEND": "tensorflow"}, timeout=TIMEOUT)
    diff = float(out.split("DIFF")[-1])
    assert diff < 1e-5


def sample_tree(root, classes=10):
    """train/ and val/ trees of symlinks to the first photos (up to 2) of each of the first
    `classes` classes of SAMPLES, in folders named by synset (7 classes from a bare clone)."""
    return labelled_tree(root, SAMPLES, classes, splits=("train", "val"), per_class=2)


def test_finetune_on_samples_lowers_val_loss_and_saves_a_swiftformer(tmp_path):
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.training import make_config, train

    data = sample_tree(tmp_path / "data")
    config = make_config(
        "finetune", data=str(data), output_dir=str(tmp_path / "run"),
        finetune=str(GOLDEN_CASES["original_xs"][0]), input_size=64, batch_size=10,
        epochs=6, steps_per_epoch=2, warmup_epochs=0, lr=1e-3, lr_batch=10,
        crop_scale=(0.25, 1.0), freeze="stem", jit_compile="false", verbose=0)
    result = train(config)
    first, last = result.initial_val["xent"], result.history["val_xent"][-1]
    assert last < first - 0.2, (first, result.history["val_xent"])

    model = keras.saving.load_model(result.path, compile=False)
    info = json.load(open(tmp_path / "run" / "model.json"))
    assert info["source"]["new_head"] and info["classes"] == sorted(os.listdir(data / "train"))
    fresh = SwiftFormer("XS", classes=len(info["classes"]), input_shape=(None, None, 3))
    fresh.set_weights(model.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(fresh.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-7)
    # The frozen stem kept the checkpoint's weights; the rest moved.
    source = SwiftFormer("XS", weights=str(GOLDEN_CASES["original_xs"][0]))
    np.testing.assert_array_equal(model.get_layer("stem-0").kernel,
                                  source.get_layer("stem-0").kernel)
    assert not np.allclose(model.get_layer("norm").moving_mean,
                           source.get_layer("norm").moving_mean)


def test_finetune_from_keras_with_the_original_model_as_hard_teacher(tmp_path):
    """A 1000-class .keras model fine-tuned on 4 ImageNet classes, its own heads (restricted to
    those 4 synsets) teaching the new ``head_dist``; through the command line."""
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.training.cli import main

    original = SwiftFormer(**TINY)
    original.save(tmp_path / "original.keras")
    data = sample_tree(tmp_path / "data", classes=4)
    args = ["--recipe", "finetune", "--data", str(data), "--output-dir", str(tmp_path / "run"),
            "--finetune", str(tmp_path / "original.keras"), "--teacher", "original",
            "--input-size", "32", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch",
            "2", "--warmup-epochs", "0", "--val-split=", "--jit-compile", "false",
            "--fit-verbose", "0"]
    assert main(args) == 0
    info = json.load(open(tmp_path / "run" / "model.json"))
    assert info["distillation"] == "hard" and info["source"]["new_head"]
    assert info["steps"] == 2 and len(info["classes"]) == 4
    assert main(args) == 2  # a finished model is not overwritten without --overwrite
    bad = args + ["--overwrite", "--teacher-classes", str(tmp_path / "map.json")]
    (tmp_path / "map.json").write_text("[0, 1, 2]")  # three indices for four classes
    assert main(bad) == 2
