"""The test cache: folders made once (generated references, photo views), never half-written."""

import os
import pathlib
import shutil
import tempfile


def default_cache():
    """$SWIFTFORMER_TEST_CACHE, else ~/.cache/keras-swiftformer/test-references."""
    base = os.environ.get("SWIFTFORMER_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "keras-swiftformer", "test-references")
    return pathlib.Path(base)


def build_once(target, write):
    """The folder `target`, made on first use by `write(folder)` into a temporary sibling that
    is then renamed into place: a folder that exists is complete, and concurrent sessions are
    safe (the first rename wins, the others use its copy)."""
    target = pathlib.Path(target)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        write(work)
        os.chmod(work, 0o755)
        try:
            os.replace(work, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
