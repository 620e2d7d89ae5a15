"""Files beside a model: writing outputs safely (a file appears whole or not at all, and never
in place of a user's folder), cleaning what a killed run left, and reading the JSON a model
carries beside it.

The rule for folders: a file output never replaces a folder. A folder output (a Core ML
package) replaces an existing folder only if that folder is a package the project writes: it
holds the `PACKAGE_MARKER` file every such package has. Anything else at the path is an error
that names it, before the work.
"""

import contextlib
import json
import os
import re
import shutil

from keras_swiftformer.commands import UserError

#: The file every folder output the project writes holds (a Core ML package's manifest).
PACKAGE_MARKER = "Manifest.json"

#: ``.<stem>.partial-<pid><suffix>``: `atomic_output`'s temporary name beside its output.
PARTIAL = re.compile(r"^\.(?P<stem>[^.]*)\.partial-(?P<pid>\d+)(?P<suffix>\..*)?$")


def is_project_folder(path):
    """True if `path` is a folder of the kind the project writes (it holds `PACKAGE_MARKER`),
    so a folder output may replace it."""
    path = os.fspath(path)
    return (os.path.isdir(path) and not os.path.islink(path)
            and os.path.isfile(os.path.join(path, PACKAGE_MARKER)))


def check_output_path(path):
    """Raises `UserError` (one line: what stands there and what to do) if writing `path` would
    destroy something: a folder that is not one the project writes, or a parent that is a
    file. Call it before the long work; `atomic_output` calls it too."""
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.islink(path) and not is_project_folder(path):
        raise UserError(f"{path} is an existing folder, not a file this command writes: "
                        "choose another output path, or move the folder away")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent, child = os.path.dirname(parent), parent
        if parent == child:
            break
    if parent and os.path.exists(parent) and not os.path.isdir(parent):
        raise UserError(f"cannot write {path}: {parent} is a file, not a folder; choose "
                        "another output path")


def _make_parent(path):
    directory = os.path.dirname(os.path.abspath(path))
    check_output_path(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create folder {directory} ({err.strerror or err}): choose "
                        "a writable output path") from err
    return directory


def remove_path(path):
    """Removes the file, link or folder at `path` (nothing if there is none)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path beside `path` (``.<stem>.partial-<pid><suffix>``); on success
    it is renamed to `path`, on error removed, so no half-written file is ever left at `path`.

    Works for files and folders (``.mlpackage``). Raises `UserError` before the work if a
    folder the project did not write stands at `path` (see the module's rule), or a file
    stands where a folder output goes.
    """
    path = os.fspath(path)
    directory = _make_parent(path)
    stem, dot, suffix = os.path.basename(os.path.abspath(path)).partition(".")
    tmp = os.path.join(directory, f".{stem}.partial-{os.getpid()}{dot}{suffix}")
    try:
        yield tmp
        check_output_path(path)  # again: something may have appeared during the work
        if os.path.isdir(tmp) and os.path.lexists(path) and not os.path.isdir(path):
            raise UserError(f"{path} is an existing file where a folder goes: choose another "
                            "output path, or move the file away")
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)  # a project folder (checked above)
        os.replace(tmp, path)
    finally:
        remove_path(tmp)


def process_alive(pid):
    """True if process `pid` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_partials(folder):
    """Removes the ``.<stem>.partial-<pid>*`` files and folders in `folder` (not below) whose
    process is gone (a run killed mid-write); a live process's are kept. Returns the removed
    names, sorted."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in os.listdir(folder):
        match = PARTIAL.match(name)
        if not match:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or process_alive(pid):
            continue
        remove_path(os.path.join(folder, name))
        removed.append(name)
    return sorted(removed)


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
