"""keras_swiftformer.checkpoints and keras_swiftformer.mapping: formats, the name table, bad checkpoints."""

import os
import shutil

import numpy as np
import pytest

from keras_swiftformer.checkpoints import (
    CheckpointError,
    detect_format,
    load_state_dict,
    read_checkpoint,
    to_canonical,
)
from converters.importer import import_checkpoint
from keras_swiftformer.mapping import load_tensors, model_tensors
from keras_swiftformer import SwiftFormerL1, SwiftFormerXS
from tests.support import FIXTURES, GOLDEN_CASES, run_python

torch = pytest.importorskip("torch")

XS_PTH = str(GOLDEN_CASES["original_xs"][0])
HF_DIR = FIXTURES / "hf/swiftformer_xs_random"
TIMM_DIR = FIXTURES / "timm/swiftformer_xs_random"


@pytest.mark.parametrize("case,fmt", [("original_xs", "official"), ("timm_xs", "timm"),
                                      ("hf_xs", "hf"), ("original_l1", "official")])
def test_formats_are_recognised_from_keys(case, fmt):
    checkpoint = read_checkpoint(GOLDEN_CASES[case][0])
    assert checkpoint.format == fmt
    assert checkpoint.variant == GOLDEN_CASES[case][2]
    assert checkpoint.classes == 1000
    assert checkpoint.token_weighting == ("ones" if fmt == "hf" else "l2")


def test_three_formats_give_identical_canonical_tensors():
    official = read_checkpoint(XS_PTH).tensors
    for other in (TIMM_DIR, HF_DIR):
        tensors = read_checkpoint(other).tensors
        assert sorted(tensors) == sorted(official)
        for key, value in official.items():
            np.testing.assert_array_equal(tensors[key], value, err_msg=key)


def test_name_table_round_trips_every_tensor():
    checkpoint = read_checkpoint(XS_PTH)
    model = SwiftFormerXS(weights=XS_PTH)
    back = model_tensors(model)
    assert sorted(back) == sorted(checkpoint.tensors)
    for key, value in checkpoint.tensors.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_wrapped_module_and_ema_state_dicts(tmp_path):
    _, state = load_state_dict(XS_PTH)
    tensors = {f"module.{k}": torch.from_numpy(v.copy()) for k, v in state.items()}
    ema = {k: v * 0 for k, v in tensors.items()}
    path = tmp_path / "train.pth"
    torch.save({"state_dict": tensors, "model_ema": ema, "epoch": 3}, path)
    assert read_checkpoint(path).tensors["norm.weight"].any()
    assert not read_checkpoint(path, ema=True).tensors["norm.weight"].any()


def test_safetensors_needs_no_torch():
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from keras_swiftformer.checkpoints import read_checkpoint\n"
        f"print(read_checkpoint({str(TIMM_DIR)!r}).variant, 'torch' in sys.modules)\n"
    )
    assert run_python(code).split()[-2:] == ["XS", "False"]


def test_truncated_checkpoints_are_named(tmp_path):
    for source, name in ((XS_PTH, "cut.pth"), (TIMM_DIR / "model.safetensors", "cut.safetensors")):
        data = open(source, "rb").read()
        path = tmp_path / name
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="cut"):
            read_checkpoint(path)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(tmp_path / "empty.pth")


def test_l1_checkpoint_for_xs_names_the_variant_that_fits():
    with pytest.raises(CheckpointError, match=r"SwiftFormer-L1 checkpoint.*not XS.*SwiftFormerL1"):
        SwiftFormerXS(weights=str(GOLDEN_CASES["original_l1"][0]))


def _edited(tmp_path, edit):
    _, state = load_state_dict(XS_PTH)
    state = {k: torch.from_numpy(v.copy()) for k, v in state.items()}
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save({"model": state}, path)
    return str(path)


def test_missing_key_is_listed(tmp_path):
    path = _edited(tmp_path, lambda s: s.pop("network.2.1.pwconv2.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): stages.1.blocks.1.pwconv2.weight"):
        SwiftFormerXS(weights=path)


def test_unexpected_key_is_listed(tmp_path):
    path = _edited(tmp_path, lambda s: s.__setitem__("network.0.0.extra.weight", torch.ones(3)))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): stages.0.blocks.0.extra"):
        SwiftFormerXS(weights=path)


def test_wrong_shape_is_named(tmp_path):
    path = _edited(tmp_path, lambda s: s.__setitem__("network.0.0.norm.weight", torch.ones(7)))
    with pytest.raises(CheckpointError, match=r"stages.0.blocks.0.norm.weight: shape \(7,\)"):
        SwiftFormerXS(weights=path)


def test_hf_checkpoint_with_other_class_count(tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "hf10"
    shutil.copytree(HF_DIR, folder)
    tensors = load_file(folder / "model.safetensors")
    for name in ("head", "dist_head"):
        tensors[f"{name}.weight"] = tensors[f"{name}.weight"][:10].copy()
        tensors[f"{name}.bias"] = tensors[f"{name}.bias"][:10].copy()
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"10-class heads but classes=1000.*new_head=True"):
        SwiftFormerXS(weights=str(folder))
    ten = SwiftFormerXS(weights=str(folder), classes=10)
    np.testing.assert_array_equal(ten.get_layer("head").kernel, tensors["head.weight"].T)
    new = SwiftFormerXS(weights=str(folder), classes=5, new_head=True)
    np.testing.assert_array_equal(new.get_layer("norm").gamma, tensors["norm.weight"])
    assert import_checkpoint(str(folder)).output.shape == (None, 10)


def test_code_running_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"patch_embed.0.weight": Exploit()}}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(path)
    assert not marker.exists()


def test_not_a_swiftformer_checkpoint(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.ones(2, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match="Not a SwiftFormer checkpoint"):
        read_checkpoint(path)
    assert detect_format(["swiftformer.encoder.x"]) == "hf"


def test_headless_model_accepts_checkpoint_heads():
    model = SwiftFormerL1(weights=str(GOLDEN_CASES["original_l1"][0]), include_top=False)
    load_tensors(model, read_checkpoint(GOLDEN_CASES["original_l1"][0]).tensors)
    assert to_canonical({"network.3.proj.weight": np.ones(1)}, "official") == {
        "stages.2.downsample.proj.weight": np.ones(1, np.float32)}
