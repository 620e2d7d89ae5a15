"""converters.formats: one record per format, unique names, file names that parse back."""

import pytest

from converters.formats import (COREML_FORMATS, FORMATS, LITERT_FORMATS, compressed_format,
                                file_name, format_of_file, get_format, markdown_table,
                                parse_formats)


def test_names_are_unique_and_say_their_runtime():
    assert set(LITERT_FORMATS) | set(COREML_FORMATS) == set(FORMATS)
    assert not set(LITERT_FORMATS) & set(COREML_FORMATS)
    assert all(name.startswith("coreml_") for name in COREML_FORMATS)
    assert all(FORMATS[name].coreml is not None for name in COREML_FORMATS)
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

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in FORMATS:
        assert len([line for line in text.splitlines()
                    if line.split() and line.split()[0] == name]) == 1, name
    assert "int8_mixed" not in text
