"""Resumable training state: atomic checkpoints that one writer owns.

A checkpoint is one ``.npz`` file, ``epoch-NNNN.npz``, holding every variable training changes
(the network's weights and BatchNorm statistics, the optimiser's slots, step counter and EMA,
the random generators' states) keyed by position and path, and a JSON record (epoch, step and
the configuration fields in `config.RESUME_FIELDS`). It is written to a temporary name and
renamed, so a killed run leaves the previous checkpoint intact; the oldest are removed past
`keep`.

Writers: with ``mode="chief"`` only process 0 writes, into ``<output>/checkpoints`` (a folder
all hosts share); with ``mode="worker"`` every process writes its own
``<output>/checkpoints/worker-<i>``. No two processes ever write one file. Every process
restores the same state, and the processes check that they agree on the epoch.

Keras's `BackupAndRestore` is not used: it writes in place (a kill mid-write loses the backup),
every worker would write the same file, and it does not restore random-generator states.
"""

import glob
import json
import os
import re
import warnings
import zipfile

import keras
import numpy as np

from keras_swiftformer.commands import UserError
from keras_swiftformer.files import atomic_output
from keras_swiftformer.training.distribute import to_numpy

PATTERN = re.compile(r"epoch-(\d{4,})\.npz$")


class CheckpointMismatch(ValueError):
    """A checkpoint that does not belong to this configuration."""


def checkpoint_dir(output, mode, process_id):
    """Where this process reads and writes checkpoints (None for mode "none")."""
    if mode == "none":
        return None
    base = os.path.join(output, "checkpoints")
    return base if mode == "chief" else os.path.join(base, f"worker-{process_id}")


def is_writer(mode, process_id):
    return mode == "worker" or (mode == "chief" and process_id == 0)


def list_checkpoints(directory):
    """[(epoch, path)] in `directory`, oldest first."""
    if directory is None or not os.path.isdir(directory):
        return []
    found = []
    for path in glob.glob(os.path.join(directory, "epoch-*.npz")):
        match = PATTERN.search(os.path.basename(path))
        if match:
            found.append((int(match[1]), path))
    return sorted(found)


class TrainingState:
    """The variables a checkpoint holds: `variables` (model-side, in a fixed order) and the
    optimiser's."""

    def __init__(self, variables, optimizer):
        self.variables = list(variables)
        self.optimizer = optimizer

    def _entries(self):
        entries = [(f"v{i:05d}:{v.path}", v) for i, v in enumerate(self.variables)]
        entries += [(f"o{i:05d}:{v.path}", v) for i, v in enumerate(self.optimizer.variables)]
        return entries

    def save(self, directory, epoch, record, keep=2):
        """Writes ``epoch-<epoch>.npz`` atomically; removes checkpoints beyond `keep`."""
        arrays = {key: to_numpy(v) for key, v in self._entries()}
        arrays["__record__"] = np.asarray(json.dumps({**record, "epoch": epoch}))
        path = os.path.join(directory, f"epoch-{epoch:04d}.npz")
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        for _, old in list_checkpoints(directory)[:-keep]:
            os.remove(old)
        return path

    def restore(self, path, expected=None):
        """Loads `path` into the variables; returns its record.

        Raises:
            CheckpointMismatch: other variables, or a configuration field in `expected`
                (a dict) with another value.
        """
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            record = json.loads(str(data["__record__"]))
            for name, value in (expected or {}).items():
                if _normal(record.get("config", {}).get(name)) != _normal(value):
                    raise CheckpointMismatch(
                        f"{path} was written with {name}={record.get('config', {}).get(name)!r}"
                        f", this run has {value!r}: use another --output-dir, or the same options")
            entries = self._entries()
            stored = {_unnumbered(key): key for key in set(data.files) - {"__record__"}}
            wanted = {_unnumbered(key) for key, _ in entries}
            if set(stored) != wanted:
                diff = sorted(set(stored) ^ wanted)[:6]
                raise CheckpointMismatch(f"{path} holds other variables than this model "
                                         f"(differences: {diff})")
            for key, variable in entries:
                value = data[stored[_unnumbered(key)]]
                if tuple(value.shape) != tuple(variable.shape):
                    raise CheckpointMismatch(f"{path}: {key} has shape {value.shape}, the model "
                                             f"{tuple(variable.shape)}")
                variable.assign(value)
        return record


#: What reading a truncated or garbled ``.npz`` raises (not `CheckpointMismatch`: that one is
#: a checkpoint of another run, and no older one beside it would fit either).
DAMAGED = (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError)


def restore_newest_intact(state, found, expected=None):
    """Restores the newest readable checkpoint of `found` ([(epoch, path)], oldest first) into
    `state`, warning about each damaged one skipped; returns its epoch (0 if `found` is empty).

    Raises:
        UserError: every checkpoint is damaged.
        CheckpointMismatch: the newest intact one belongs to another configuration.
    """
    damaged = []
    for epoch, path in reversed(found):
        try:
            state.restore(path, expected)
        except CheckpointMismatch:
            raise
        except DAMAGED as err:
            damaged.append(f"{os.path.basename(path)} ({type(err).__name__})")
            continue
        if damaged:
            warnings.warn(f"damaged checkpoint(s) {', '.join(damaged)} in "
                          f"{os.path.dirname(path)}: resuming from {os.path.basename(path)}")
        return epoch
    if damaged:
        raise UserError(f"no intact checkpoint in {os.path.dirname(found[-1][1])} (damaged: "
                        f"{', '.join(damaged)}): remove them, or pass --overwrite to start "
                        "afresh")
    return 0


def _unnumbered(key):
    """`key` without the ``_<n>`` suffixes Keras gives a second object of one name in a
    process (``adam_wagc_1``, ``seed_generator_15``): the position prefix keeps keys apart."""
    return re.sub(r"_\d+(?=/|$)", "", key)


def _normal(value):
    return list(value) if isinstance(value, tuple) else value


class Checkpointer(keras.callbacks.Callback):
    """Saves a `TrainingState` at the end of every epoch (writer processes only).

    Args:
        state: the `TrainingState`.
        directory: this process's checkpoint folder.
        record: JSON-able dict stored in every checkpoint (the configuration).
        writer: whether this process writes.
        keep: checkpoints kept.
    """

    def __init__(self, state, directory, record, writer, keep=2):
        super().__init__()
        self.state, self.directory, self.record = state, directory, record
        self.writer, self.keep = writer, keep

    def on_epoch_end(self, epoch, logs=None):
        # Every process reads the step counter (a collective-free read of replicated values).
        step = int(to_numpy(self.state.optimizer.iterations))
        if self.writer:
            os.makedirs(self.directory, exist_ok=True)
            self.state.save(self.directory, epoch + 1, {**self.record, "step": step,
                                                        "logs": _jsonable(logs)}, self.keep)


def _jsonable(logs):
    return {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
