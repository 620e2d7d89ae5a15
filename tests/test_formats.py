"""converters.formats: one record per format, unique names, file names that parse back."""

import pytest

from converters.formats import (COREML_FORMATS, FORMATS, LITERT_FORMATS, ROAD_FORMATS,
                                compressed_format, file_name, fine_tuned_format, format_of_file,
                                get_format, markdown_table, parse_formats)
from converters.targets import SUFFIXES, get_target, target_of, target_of_file


def test_names_are_unique_and_say_their_runtime():
    assert set(LITERT_FORMATS) | set(COREML_FORMATS) == set(FORMATS)
    assert not set(LITERT_FORMATS) & set(COREML_FORMATS)
    assert all(name.startswith("coreml_") for name in COREML_FORMATS)
    assert all(FORMATS[name].coreml is not None for name in COREML_FORMATS)
    assert all(FORMATS[name].litert is not None for name in LITERT_FORMATS)


def test_every_format_has_a_registered_target_that_owns_its_files():
    for name, fmt in FORMATS.items():
        target = target_of(name)
        assert target.name == fmt.target and target.suffix == fmt.suffix == SUFFIXES[fmt.target]
        assert target.owns(file_name("x", fmt)) and target_of_file(file_name("x", fmt)) == \
            fmt.target
        assert file_name("x", fmt) in target.describe(fmt, file_name("x", fmt))
    assert target_of_file("model.keras") is None
    with pytest.raises(ValueError, match="Unknown target 'onnx'"):
        get_target("onnx")


def test_typed_settings_say_what_names_used_to():
    assert FORMATS["coreml_palettize6"].coreml.compression.nbits == 6
    assert FORMATS["coreml_w8a8"].coreml.minimum_os == "iOS17" and FORMATS["coreml_w8a8"].calibrated
    assert FORMATS["float16"].litert.weights == "float16" and not FORMATS["float16"].calibrated
    assert "int16x8" not in FORMATS  # removed: see the README's changes
    assert fine_tuned_format(qat=True).name == "qat_int8"
    assert fine_tuned_format(prune="2of4", qat=True).name == "pruned2of4_pqat_int8"
    assert fine_tuned_format(cluster=16).name == "clustered16_float32"
    assert fine_tuned_format(cluster=8, qat=True).litert.activations == "int8"
    with pytest.raises(ValueError, match="pruned or clustered"):
        fine_tuned_format(prune="50", cluster=16)
    assert "int8_mixed" not in FORMATS  # the alias is gone


def test_every_file_name_parses_back_to_its_format():
    for name in FORMATS:
        assert format_of_file(f"out/{file_name('swiftformer_xs', name)}") == name
    for name in ("qat_int8", "pruned2of4_pqat_int8", "pruned50_float32", "clustered16_float32",
                 "clustered8_cqat_int8"):
        assert compressed_format(name).runtime == "litert"
        assert format_of_file(f"swiftformer_l1_{name}.tflite") == name
    assert format_of_file("l1/float16.tflite") == "float16"
    assert format_of_file("model.tflite") is None
    assert format_of_file("swiftformer_xs_int8.mlpackage") is None  # not a Core ML name


def test_parse_formats_and_errors():
    assert parse_formats("all") == list(FORMATS)
    assert parse_formats("road") == list(ROAD_FORMATS)
    assert parse_formats("int8, float32,int8") == ["int8", "float32"]
    with pytest.raises(ValueError, match=r"Unknown format\(s\) \['int8_mixed'\]"):
        parse_formats("int8_mixed")
    with pytest.raises(ValueError, match="Unknown format 'fp8'"):
        get_format("fp8")


def test_markdown_table_lists_each_format_once():
    table = markdown_table()
    for name in FORMATS:
        assert table.count(f"| `{name}` |") == 1


def test_the_readme_formats_table_is_the_registry():
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- formats:")
    table = readme[readme.index("\n", start) + 1:readme.index("<!-- /formats -->")].strip()
    assert table == markdown_table(), "regenerate with converters.formats.markdown_table()"


def test_convert_help_lists_each_format_once(capsys):
    from converters.cli import main

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in FORMATS:
        assert len([line for line in text.splitlines()
                    if line.split() and line.split()[0] == name]) == 1, name
    assert "int8_mixed" not in text
