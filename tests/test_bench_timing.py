"""android_bench.timing: the one bundle of timing settings, checked once when made."""

import dataclasses
import math

import pytest

from android_bench.timing import MAX_RUNS, MAX_THREADS, Timing, TimingError


def test_defaults_and_normalisation():
    timing = Timing(backends="nnapi", threads=4, nnapi_accelerator="qti-dsp")
    assert timing.backends == ("nnapi",) and timing.threads == (4,)
    assert timing.nnapi_flags() == ["--nnapi_accelerator_name=qti-dsp"]
    assert Timing().settings() == {"warmup_runs": 10, "runs": 50, "backends": ["xnnpack"],
                                   "threads": [1]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        Timing().runs = 3


@pytest.mark.parametrize("fields, message", [
    ({"runs": 0}, "--runs 0 is out of range: give --runs between 1 and"),
    ({"runs": MAX_RUNS + 1}, "--runs .* is out of range"),
    ({"runs": 2.5}, "--runs 2.5 is not a whole number"),
    ({"runs": True}, "--runs True is not a whole number"),
    ({"warmup": -1}, "--warmup -1 is out of range: give --warmup between 0 and"),
    ({"warmup": None}, "--warmup None is not a whole number"),
    ({"threads": (0,)}, "--threads 0 is out of range"),
    ({"threads": (MAX_THREADS + 1,)}, "--threads .* is out of range"),
    ({"threads": ()}, "--threads is empty"),
    ({"threads": ("4",)}, "--threads '4' is not a whole number"),
    ({"seed": -1}, "--seed -1 is out of range"),
    ({"cooldown": -1}, "--cooldown -1 is not a number of seconds"),
    ({"cooldown": math.nan}, "--cooldown nan is not a number of seconds"),
    ({"cooldown": math.inf}, "--cooldown inf is not a number of seconds"),
    ({"backends": ("dsp",)}, "--backends dsp: give backends among cpu, xnnpack, gpu, nnapi"),
    ({"backends": ()}, r"--backends \(none\): give backends among"),
    ({"backends": ("gpu", "gpu")}, "names a backend twice"),
    ({"backends": ("gpu",), "nnapi_accelerator": "qti-dsp"},
     "NNAPI options .* nnapi is not among the backends \\['gpu'\\]: add nnapi"),
    ({"backends": ("xnnpack",), "nnapi_allow_fp16": True}, "NNAPI options"),
])
def test_every_bad_setting_is_one_line_naming_the_flag(fields, message):
    with pytest.raises(TimingError, match=message) as caught:
        Timing(**fields)
    assert "\n" not in str(caught.value) and isinstance(caught.value, ValueError)


def test_each_runner_takes_its_subset():
    both = Timing(backends=("xnnpack", "cpu"), threads=(None, 2))
    assert both.require("host") is both
    with pytest.raises(TimingError, match="--backends gpu nnapi: the host runner takes xnnpack"):
        Timing(backends=("xnnpack", "gpu", "nnapi")).require("host")
    with pytest.raises(TimingError, match="the adb runner needs explicit thread counts"):
        both.require("adb")
    with pytest.raises(TimingError, match=r"runs one thread count, got \[1, 4\]"):
        Timing(threads=(1, 4)).require("app")
    Timing(backends=("gpu", "nnapi"), threads=(4,)).require("app")
