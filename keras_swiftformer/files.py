"""Files beside a model: writing outputs safely (a file appears whole or not at all), and
reading the JSON a model carries beside it."""

import contextlib
import json
import os
import shutil


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path beside `path` (same suffix); on success it is renamed to `path`,
    on error removed, so no half-written file is ever left at `path`.

    Works for files and folders (``.mlpackage``, SavedModel directories).
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem, dot, suffix = name.partition(".")
    tmp = os.path.join(directory, f".{stem}.partial-{os.getpid()}{dot}{suffix}")
    try:
        yield tmp
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)


def sidecar(path):
    """The JSON written beside a model file: ``<stem>.json``, or the ``model.json`` that
    ``swiftformer-train`` writes beside ``model.keras`` (class names, evaluation crop, source);
    {} if there is none."""
    stem = os.path.splitext(os.fspath(path))[0]
    for candidate in (stem + ".json", os.path.join(os.path.dirname(stem), "model.json")):
        if os.path.isfile(candidate) and os.path.abspath(candidate) != os.path.abspath(path):
            with open(candidate) as f:
                try:
                    info = json.load(f)
                except ValueError:
                    continue
            if isinstance(info, dict):
                return info
    return {}
