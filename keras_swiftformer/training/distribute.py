"""Where training runs: one device, the devices of one machine, or several machines.

Engines:

- ``"jax"`` (the multi-machine engine): Keras's JAX backend with
  `keras.distribution.DataParallel` over every device of every process; one process per host,
  joined by `keras.distribution.initialize` (a coordinator ``host:port``, the process count and
  index; or ``KERAS_DISTRIBUTION_*`` variables; or Slurm's, which JAX reads itself). Each process
  feeds its slice of every global batch; XLA all-reduces the gradients and the BatchNorm
  statistics (they are means over the global batch). On CPUs the processes talk through gloo.
- ``"mirrored"``: TensorFlow backend, `tf.distribute.MirroredStrategy` over the GPUs of one
  machine, with synchronised BatchNorm. (Keras 3.15's ``fit`` fails under
  ``MultiWorkerMirroredStrategy``, keras-team/keras#20585, so there is no TF multi-machine
  engine here.)
- ``"none"``: one device.
"""

import contextlib
import dataclasses
import os

import keras
import numpy as np

ENV_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"


@dataclasses.dataclass
class Runtime:
    """The engine this process trains with.

    Attributes:
        engine: "none", "jax" or "mirrored".
        process_id, num_processes: this process among all (1 process unless JAX multi-process).
        replicas: devices over which a global batch is split.
        strategy: the `tf.distribute` strategy ("mirrored"), else None.
    """

    engine: str = "none"
    process_id: int = 0
    num_processes: int = 1
    replicas: int = 1
    strategy: object = None

    @property
    def is_chief(self):
        return self.process_id == 0

    @property
    def shard(self):
        """(index, count) of this process's slice of every global batch."""
        return self.process_id, self.num_processes

    def scope(self):
        """Context in which models and optimisers must be built."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def check_batch(self, batch_size, what="batch size"):
        """Raises ValueError if the global `batch_size` does not split evenly."""
        for count, unit in ((self.num_processes, "worker processes"),
                            (self.replicas, "devices")):
            if batch_size % count:
                raise ValueError(f"The global {what} {batch_size} does not divide across "
                                 f"{count} {unit}: use a multiple of {count}")

    def agree(self, value, what):
        """Checks that every process holds the same integer `value` (JAX multi-process)."""
        if self.num_processes == 1:
            return value
        from jax.experimental import multihost_utils

        values = np.asarray(multihost_utils.process_allgather(np.asarray([int(value)]))).ravel()
        if len(set(values.tolist())) != 1:
            raise RuntimeError(f"Workers disagree on {what}: {values.tolist()} (process order). "
                               "With --checkpoint chief the output folder must be shared by "
                               "all hosts; else use --checkpoint worker.")
        return value


def multi_process_requested(config):
    """True when the configuration or the environment asks for several JAX processes."""
    return bool((config.num_processes or 0) > 1 or config.coordinator
                or os.environ.get(ENV_ADDRESSES)
                or int(os.environ.get("SLURM_NTASKS", "1")) > 1)


def _split_cpu(count, backend):
    try:
        if backend == "jax":
            import jax

            jax.config.update("jax_num_cpu_devices", count)
        else:
            import tensorflow as tf

            cpu = tf.config.list_physical_devices("CPU")[0]
            if len(tf.config.get_logical_device_configuration(cpu) or [None]) != count:
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as err:
        raise ValueError(f"cpu_devices={count} must be set before the backend starts (a fresh "
                         f"process): {err}") from err


def setup(config):
    """Initialises the engine `config.distribution` asks for; returns a `Runtime`.

    Must run before any model or tensor is created. Raises ValueError for an engine the Keras
    backend cannot run.
    """
    backend = keras.backend.backend()
    engine = config.distribution
    if engine == "jax" and backend != "jax":
        raise ValueError("distribution='jax' needs the JAX backend: set KERAS_BACKEND=jax")
    if engine == "mirrored" and backend != "tensorflow":
        raise ValueError("distribution='mirrored' needs the TensorFlow backend: set "
                         "KERAS_BACKEND=tensorflow (or use 'jax' with KERAS_BACKEND=jax)")
    if multi_process_requested(config) and not (backend == "jax" and engine in ("jax", "auto")):
        # Several independent processes would each train alone and race on the output.
        raise ValueError("This process is one of several (coordinator, num_processes, "
                         f"{ENV_ADDRESSES} or SLURM_NTASKS > 1): multi-process training needs "
                         "distribution='jax' (or 'auto') and KERAS_BACKEND=jax")
    if backend == "jax":
        import tensorflow as tf

        try:
            tf.config.set_visible_devices([], "GPU")  # tf.data only; JAX owns the accelerators
        except RuntimeError:
            pass  # TensorFlow already started in this process (an earlier run hid them)
    if config.cpu_devices:
        _split_cpu(config.cpu_devices, backend)

    if engine == "auto":
        if backend == "jax" and (multi_process_requested(config)
                                 or len(keras.distribution.list_devices()) > 1):
            engine = "jax"
        elif backend == "tensorflow" and len(_tf_devices(config)) > 1:
            engine = "mirrored"
        else:
            engine = "none"

    if engine == "jax":
        return _setup_jax(config)
    if engine == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(_tf_devices(config))
        return Runtime("mirrored", replicas=strategy.num_replicas_in_sync, strategy=strategy)
    return Runtime("none")


def _tf_devices(config):
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _setup_jax(config):
    import jax

    if multi_process_requested(config):
        # CPU processes exchange gradients through gloo (harmless where GPUs do the work).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize(config.coordinator, config.num_processes,
                                      config.process_id)
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
    return Runtime("jax", process_id=jax.process_index(), num_processes=jax.process_count(),
                   replicas=len(devices))


@contextlib.contextmanager
def local():
    """Builds models on this process alone (no distribution), e.g. the model to save."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def to_numpy(variable):
    """A variable's value as a NumPy array on this process, also for JAX arrays replicated
    over several processes (which NumPy cannot read whole)."""
    value = variable.value if hasattr(variable, "value") else variable
    if keras.backend.backend() == "jax" and not getattr(value, "is_fully_addressable", True):
        if not value.is_fully_replicated:
            raise ValueError(f"{getattr(variable, 'path', 'a variable')} is sharded across "
                             "processes; data parallelism keeps weights replicated")
        value = value.addressable_data(0)
    return np.asarray(keras.ops.convert_to_numpy(value))


def replica_mean(loss):
    """A per-replica mean loss scaled so that `tf.distribute`'s sum over replicas is the global
    mean (what `keras.losses.Loss` does); unchanged elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss
