"""The output folder of a conversion holds one run.

    folder = OutputFolder("converted")
    folder.check()                                   # before any long work
    folder.start("swiftformer-convert run ...")      # removes the earlier run's files
    with atomic_output(folder.path_of(name)) as tmp: # each file as it lands...
        ...
    folder.record(name)                              # ...is recorded in the manifest
    folder.discard(name)                             # a failed format leaves no file
    folder.files()                                   # exactly this run's files on disk

The manifest ``.swiftformer-run.json`` is written first and lists the files the project wrote.
A later run removes only those (in a folder from before manifests, the files its
``report.json`` names), never a file the project did not write: a folder the user filled with
other files keeps them, and they are not reported. It also removes the stale
``.<stem>.partial-<pid>...`` files that `keras_swiftformer.files.atomic_output` leaves when a
process is killed. Pure Python (TensorFlow is not imported).
"""

import datetime
import errno
import json
import os
import shutil
import uuid

from keras_swiftformer.files import process_alive, remove_path, remove_stale_partials

MANIFEST = ".swiftformer-run.json"
#: Free space below which a conversion is refused before it starts (a rough floor: the
#: largest run writes a few hundred MB).
MIN_FREE_BYTES = 200 * 2**20


class OutputError(OSError):
    """An output folder that cannot take the run; one line naming the path and the fix."""

    def __str__(self):
        return self.args[0] if self.args else ""


def _safe_name(name):
    """`name` if it is a plain entry of the folder (no separator, not . or ..), else None."""
    name = str(name)
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        return None
    return name


def read_manifest(path):
    """The manifest dict of the output folder `path`, or None when there is none or it is not
    readable JSON (then nothing of an earlier run is removed)."""
    try:
        with open(os.path.join(os.fspath(path), MANIFEST), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        return None
    return doc


def _reported_files(path):
    """The files a run from before manifests wrote, as its ``report.json`` names them (the
    formats' files, the report and the card); [] when there is no readable report."""
    from converters.results import REPORT_JSON, ReportError, load

    if not os.path.isfile(os.path.join(path, REPORT_JSON)):
        return []
    try:
        report = load(path)
    except ReportError:
        return []
    return [r.file for r in report.formats if r.file] + [
        REPORT_JSON, "report.md", "report.png", "MODEL_CARD.md"]


class OutputFolder:
    """One run's output folder (see the module docstring).

    Args:
        path: the folder; created by `start`, not before.
        min_free_bytes: `check` refuses a disk with less free space.
    """

    def __init__(self, path, min_free_bytes=MIN_FREE_BYTES):
        self.path = os.fspath(path)
        self.min_free_bytes = min_free_bytes
        self.run_id = None
        self._manifest = None

    def path_of(self, name):
        """The path of file `name` in the folder."""
        return os.path.join(self.path, name)

    def check(self):
        """Raises `OutputError` (one line: the path and the fix) if the folder cannot take a
        run: it is a file, lies under a file, is not writable, lacks free space, or another
        live process is writing a run into it. Creates nothing."""
        path = os.path.abspath(self.path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputError(f"Output folder {self.path} is a file: give --output-dir a "
                              "folder (new or one a conversion wrote)")
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise OutputError(f"Output folder {self.path} lies under the file {existing}: give "
                              "--output-dir a path under a folder")
        probe = os.path.join(existing, f".swiftformer-probe-{os.getpid()}")
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as err:
            raise OutputError(f"Cannot write to {existing} ({err.strerror or err}): give "
                              "--output-dir a folder you can write to") from None
        free = shutil.disk_usage(existing).free
        if free < self.min_free_bytes:
            raise OutputError(f"Only {free / 2**20:.0f} MB free under {existing}: free some "
                              f"space (at least {self.min_free_bytes / 2**20:.0f} MB) or give "
                              "--output-dir another disk")
        running = read_manifest(path) or {}
        pid = running.get("pid")
        if (running.get("state") == "running" and isinstance(pid, int) and pid != os.getpid()
                and process_alive(pid)):
            raise OutputError(f"Another conversion (process {pid}) is writing to {self.path}: "
                              "wait for it or give another --output-dir")

    def start(self, command=""):
        """Begins a run: checks the folder, removes the files an earlier run's manifest lists
        and stale partial files of dead processes, and writes this run's manifest first.

        Args:
            command: the command line (or a description) recorded in the manifest.

        Returns:
            the run id (also in `run_id`).
        """
        self.check()
        earlier = read_manifest(self.path) or {"files": _reported_files(self.path)}
        os.makedirs(self.path, exist_ok=True)
        self.clean_partials()
        self.run_id = uuid.uuid4().hex[:12]
        self._manifest = {
            "run_id": self.run_id, "pid": os.getpid(), "state": "running",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": str(command), "files": [],
        }
        for name in (earlier or {}).get("files", []):
            name = _safe_name(name)
            if name is not None and name != MANIFEST:
                remove_path(self.path_of(name))
        self._write()
        return self.run_id

    def clean_partials(self):
        """Removes ``.<stem>.partial-<pid>...`` entries of processes that no longer run;
        returns their names."""
        return remove_stale_partials(self.path)

    def record(self, name):
        """Notes that file (or folder) `name` of this run has landed in the folder."""
        self._started()
        name = _safe_name(os.path.basename(os.fspath(name)))
        if name and name not in self._manifest["files"]:
            self._manifest["files"].append(name)
            self._write()

    def discard(self, name):
        """Removes `name` (a failed format's file, if any) and drops it from the manifest."""
        self._started()
        name = _safe_name(os.path.basename(os.fspath(name)))
        if name is None:
            return
        remove_path(self.path_of(name))
        if name in self._manifest["files"]:
            self._manifest["files"].remove(name)
            self._write()

    def finish(self):
        """Marks the run finished in the manifest (a later `check` no longer waits on it)."""
        self._started()
        self._manifest["state"] = "finished"
        self._write()

    def files(self):
        """The names of this run's files that are on disk, in the order they landed; outside a
        run, those of the manifest in the folder."""
        manifest = self._manifest or read_manifest(self.path) or {"files": []}
        return [name for name in manifest["files"]
                if _safe_name(name) and os.path.lexists(self.path_of(name))]

    def _started(self):
        if self._manifest is None:
            raise RuntimeError("OutputFolder.start() must come first")

    def _write(self):
        from keras_swiftformer.files import atomic_output  # imports Keras: not at --help time

        try:
            with atomic_output(self.path_of(MANIFEST)) as tmp, \
                    open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._manifest, f, indent=2)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise OutputError(f"The disk of {self.path} is full: free some space or "
                                  "give --output-dir another disk") from None
            raise
