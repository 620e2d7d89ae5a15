"""How a benchmark run times its cases, as one bundle: `Timing` (backends, thread counts,
warm-up, timed runs, cool-down, seed, NNAPI options), checked once when it is made, then
handed unchanged to this host (`android_bench.host`), ``adb`` + ``benchmark_model``
(`android_bench.adb`), the Android app (`android_bench.app`) and the flow (`android_bench.flow`).

Each of those runs a subset of the settings; `Timing.require` says what a runner cannot take
(the host has no GPU/NNAPI interpreter backend, the app runs one thread count), again before
any work.

    timing = Timing(backends=("xnnpack", "gpu"), threads=(1, 4), warmup=10, runs=50)
    benchmark_android(models, binary, timing, adb="adb")
"""

import dataclasses
import math

from android_bench.schema import LITERT_BACKENDS

#: Bounds that no phone or host needs to exceed; they keep a typo from running for days.
MAX_THREADS = 256
MAX_RUNS = 100_000
MAX_COOLDOWN_S = 3600.0
#: What each runner takes: its backends, whether None (the runtime's default) may stand for
#: a thread count, and whether it runs one thread count only.
RUNNERS = {
    "host": {"backends": ("xnnpack", "cpu"), "default_threads": True, "one_thread": False},
    "adb": {"backends": LITERT_BACKENDS, "default_threads": False, "one_thread": False},
    "app": {"backends": LITERT_BACKENDS, "default_threads": False, "one_thread": True},
}


class TimingError(ValueError):
    """A timing setting that cannot run; the message names the flag and what to give."""


def _count(value, flag, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TimingError(f"{flag} {value!r} is not a whole number: give {flag} {low} or more")
    if not low <= value <= high:
        raise TimingError(f"{flag} {value} is out of range: give {flag} between {low} and "
                          f"{high}")
    return value


def check_seconds(value, flag, high, positive=False):
    """`value` if it is a number of seconds from 0 (above 0 with `positive`) to `high`, else
    TimingError naming `flag`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value <= high or (positive and value == 0):
        low = "above 0" if positive else "from 0"
        raise TimingError(f"{flag} {value!r} is not a number of seconds: give {flag} {low} "
                          f"to {high:g}")
    return value


@dataclasses.dataclass(frozen=True)
class Timing:
    """How every case of a run is timed.

    Attributes:
        backends: LiteRT backends (`android_bench.schema.LITERT_BACKENDS`): ``cpu`` (built-in
            kernels), ``xnnpack``, ``gpu``, ``nnapi``; a runner takes a subset (`require`).
        threads: CPU thread counts, 1 to `MAX_THREADS`; None among them: the runtime's
            default (this host only). The GPU and NNAPI run at the first count.
        warmup: untimed warm-up inferences per case. On this host they follow the first
            inference; on a phone (``benchmark_model --warmup_runs``, the app) the first is
            one of them.
        runs: timed inferences per case, 1 to `MAX_RUNS`.
        cooldown: seconds of rest between two cases on a phone (thermal throttling).
        seed: of the host's input data and per-round order.
        nnapi_allow_fp16: let NNAPI run float32 models in float16 (needs ``nnapi``).
        nnapi_accelerator: the NNAPI device to use, e.g. ``qti-dsp`` (needs ``nnapi``).

    Raises:
        TimingError (a ValueError): on construction, for any setting that cannot run.
    """

    backends: tuple = ("xnnpack",)
    threads: tuple = (1,)
    warmup: int = 10
    runs: int = 50
    cooldown: float = 0.0
    seed: int = 0
    nnapi_allow_fp16: bool = False
    nnapi_accelerator: str = None

    def __post_init__(self):
        backends = (self.backends,) if isinstance(self.backends, str) else self.backends
        threads = (self.threads,) if self.threads is None or isinstance(self.threads, int) \
            else self.threads
        object.__setattr__(self, "backends", tuple(backends))
        object.__setattr__(self, "threads", tuple(threads))
        unknown = [b for b in self.backends if b not in LITERT_BACKENDS]
        if unknown or not self.backends:
            raise TimingError(f"--backends {' '.join(map(str, self.backends)) or '(none)'}: "
                              f"give backends among {', '.join(LITERT_BACKENDS)}")
        if len(set(self.backends)) != len(self.backends):
            raise TimingError(f"--backends {' '.join(self.backends)} names a backend twice: "
                              "give each once")
        if not self.threads:
            raise TimingError("--threads is empty: give at least one thread count")
        for count in self.threads:
            if count is not None:
                _count(count, "--threads", 1, MAX_THREADS)
        _count(self.warmup, "--warmup", 0, MAX_RUNS)
        _count(self.runs, "--runs", 1, MAX_RUNS)
        _count(self.seed, "--seed", 0, 2**32 - 1)
        check_seconds(self.cooldown, "--cooldown", MAX_COOLDOWN_S)
        if (self.nnapi_allow_fp16 or self.nnapi_accelerator) and "nnapi" not in self.backends:
            raise TimingError("NNAPI options (--nnapi-allow-fp16, --nnapi-accelerator) were "
                              f"given but nnapi is not among the backends "
                              f"{list(self.backends)}: add nnapi to --backends or drop them")

    def require(self, runner):
        """Checks that `runner` ("host", "adb", "app"; `RUNNERS`) can run these settings;
        returns self.

        Raises:
            TimingError: a backend, a default thread count or several thread counts the
                runner does not take.
        """
        takes = RUNNERS[runner]
        unknown = [b for b in self.backends if b not in takes["backends"]]
        if unknown:
            raise TimingError(f"--backends {' '.join(unknown)}: the {runner} runner takes "
                              f"{', '.join(takes['backends'])}")
        if None in self.threads and not takes["default_threads"]:
            raise TimingError(f"the {runner} runner needs explicit thread counts: give "
                              "--threads N")
        if takes["one_thread"] and len(self.threads) != 1:
            raise TimingError(f"the {runner} runner runs one thread count, got "
                              f"{list(self.threads)}: give one --threads N")
        return self

    def nnapi_flags(self):
        """``benchmark_model``'s NNAPI options (``nnapi_delegate_provider.cc``): fp16
        relaxation of float32 models, and the NNAPI device to use (``adb shell benchmark_model
        --use_nnapi=true`` prints the available ones: "nnapi accelerator name: [] (Available:
        ...)")."""
        flags = ["--nnapi_allow_fp16=true"] if self.nnapi_allow_fp16 else []
        if self.nnapi_accelerator:
            flags.append(f"--nnapi_accelerator_name={self.nnapi_accelerator}")
        return flags

    def settings(self):
        """The report's ``settings`` fields these settings fill (each runner adds its own)."""
        return {"warmup_runs": self.warmup, "runs": self.runs,
                "backends": list(self.backends), "threads": list(self.threads)}
