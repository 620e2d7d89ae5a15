"""Writing outputs safely: a file appears whole or not at all."""

import contextlib
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
