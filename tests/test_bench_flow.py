"""android_bench.flow and the ``flow`` command: checkpoint (or models) to one table."""

import importlib.util
import json

import pytest

from android_bench.cli import main
from android_bench.flow import Conversion, FlowError, run_flow
from android_bench.schema import ReportError, load_reports
from android_bench.timing import Timing
from tests.support.bench import ANDROID_SAMPLE, IOS_SAMPLE, tiny_models
from tests.support import FIXTURES
from tests.support.hub_cache import (add_snapshot, hub_cache, place_tag,  # noqa: F401
                                     weights_cache)

REPO = "timm/swiftformer_xs.dist_in1k"

HAS_PIPELINE = importlib.util.find_spec("converters.pipeline") is not None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_models(tmp_path_factory)


def quiet(line):
    pass


def test_models_and_phone_json_make_one_table(tiny, tmp_path):
    paths = run_flow(models=[f"XS/float32={tiny['float32']}", f"L1/float32={tiny['float16']}"],
                     device_json=[ANDROID_SAMPLE, IOS_SAMPLE], output=str(tmp_path / "all"),
                     timing=Timing(warmup=1, runs=4), progress=quiet)
    docs = load_reports([paths["json"]])
    assert [d["source"] for d in docs] == ["host", "android-app", "ios-app"]
    assert [d["source"] for d in load_reports([paths["host"]])] == ["host"]
    for source in ("| host |", "| android-app |", "| ios-app |"):
        assert source in paths["table"]
    assert "| xnnpack | 1 | L1 float32 |" in paths["table"]
    assert (tmp_path / "all.png").stat().st_size > 10_000


def test_input_is_checked_before_any_work(tiny, tmp_path):
    bad = tmp_path / "phone.json"
    bad.write_text(json.dumps({"schema": "swiftformer-bench/1", "source": "android-app"}))
    with pytest.raises(ReportError, match="phone.json does not follow"):
        run_flow(models=[tiny["float32"]], device_json=[bad], output=str(tmp_path / "out"),
                 progress=quiet)
    assert not list(tmp_path.glob("out*"))  # nothing benchmarked, nothing written
    with pytest.raises(FlowError, match="Nothing to benchmark"):
        run_flow(output=str(tmp_path / "out"), progress=quiet)
    with pytest.raises(FlowError, match="Unknown LiteRT formats \\['fp8'\\]"):
        Conversion(["XS"], ["fp8"])
    with pytest.raises(FlowError, match="A checkpoint holds one variant"):
        Conversion(["XS", "L1"], ["float32"], checkpoint=str(tiny["float32"]))
    with pytest.raises(ValueError, match="Unknown SwiftFormer variant 'XL'"):
        Conversion(["XL"], ["float32"])
    with pytest.raises(ValueError, match="--backends gpu: the host runner takes"):
        run_flow(models=[tiny["float32"]], timing=Timing(backends="gpu"), progress=quiet)


def test_flow_command_reports_bad_input(tmp_path, capsys):
    status = main(["flow", "--variants", "XS", "--formats", "fp8",
                   "--output", str(tmp_path / "x")])
    assert status == 2
    assert "Unknown LiteRT formats" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_PIPELINE, reason="converters.pipeline not present")
def test_conversion_through_the_pipeline(tmp_path):
    """XS at 64x64, random weights, float32: converted by the pipeline, then benchmarked."""
    conversion = Conversion(["XS"], ["float32"], input_size=64,
                            output_dir=str(tmp_path / "converted"))
    paths = run_flow(conversion, output=str(tmp_path / "xs"), timing=Timing(warmup=1, runs=3),
                     progress=quiet)
    [host] = load_reports([paths["host"]])
    [result] = host["results"]
    assert (result["variant"], result["format"], result["status"]) == ("XS", "float32", "ok")
    assert result["model"] == "swiftformer_xs_float32.tflite"
    assert (tmp_path / "converted" / "xs" / "swiftformer_xs_float32.tflite").exists()


def flow_through_the_converter(flags, tmp_path, capsys):
    """Runs ``swiftformer-bench flow`` on XS at 64 px (float32, 2 timed runs) -> its host
    result; the converted file must be where the flow says."""
    status = main(["flow", *flags, "--input-size", "64", "--output-dir",
                   str(tmp_path / "converted"), "--warmup", "0", "--runs", "2",
                   "--output", str(tmp_path / "bench")])
    assert status == 0, capsys.readouterr().err
    [host] = load_reports([tmp_path / "bench_host.json"])
    [result] = host["results"]
    assert (result["variant"], result["format"], result["status"]) == ("XS", "float32", "ok")
    return result


@pytest.mark.skipif(not HAS_PIPELINE, reason="converters.pipeline not present")
def test_flow_takes_an_hf_address_as_the_converter_does(hub_cache, tmp_path, capsys):
    """``flow --checkpoint hf://...`` with no --variants: the converter resolves the address
    from a prepared offline cache and the checkpoint's own variant names the files."""
    folder = FIXTURES / "timm/swiftformer_xs_random"
    add_snapshot(hub_cache, REPO, "c" * 40, {"config.json": folder / "config.json",
                                             "model.safetensors": folder / "model.safetensors"})
    flow_through_the_converter(["--checkpoint", f"hf://{REPO}"], tmp_path, capsys)
    assert (tmp_path / "converted" / "swiftformer_xs_float32.tflite").exists()


@pytest.mark.skipif(not HAS_PIPELINE, reason="converters.pipeline not present")
def test_flow_takes_a_weight_tag_as_the_converter_does(weights_cache, tmp_path, capsys):
    """``flow --variants XS --checkpoint imagenet`` from a prepared offline Keras cache."""
    place_tag(weights_cache, "imagenet", "XS",
              FIXTURES / "timm/swiftformer_xs_random/model.safetensors")
    flow_through_the_converter(["--variants", "XS", "--checkpoint", "imagenet"], tmp_path,
                               capsys)
    assert (tmp_path / "converted" / "xs" / "swiftformer_xs_float32.tflite").exists()


def test_flow_hands_a_missing_checkpoint_to_the_converter(tmp_path, capsys):
    """The converter's resolver, not the flow, names what is wrong with a source."""
    status = main(["flow", "--checkpoint", str(tmp_path / "missing.pth"),
                   "--output-dir", str(tmp_path / "converted"),
                   "--output", str(tmp_path / "bench")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "missing.pth" in err[0], err
    assert not (tmp_path / "converted").exists()
