"""converters.importer and the `swiftformer-convert import` subcommand."""

import numpy as np

import keras
from converters.cli import main
from tests.support import GOLDEN_CASES, golden


def test_import_subcommand_writes_a_keras_file_matching_golden(tmp_path, capsys):
    out = tmp_path / "l1.keras"
    assert main(["import", str(GOLDEN_CASES["original_l1"][0]), str(out),
                 "--normalised-input"]) == 0
    assert "wrote" in capsys.readouterr().out
    model = keras.saving.load_model(out)
    data = golden("original_l1")
    probs = model.predict(data["inputs"], verbose=0)
    expected = np.exp(data["logits"] - data["logits"].max(1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["l1.keras"]


def test_import_of_a_bad_checkpoint_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["import", str(bad), str(tmp_path / "x.keras")]) == 2
    assert "not a PyTorch checkpoint" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]
