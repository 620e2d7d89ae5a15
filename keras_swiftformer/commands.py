"""What every ``swiftformer-*`` command shares: one-line errors and quiet third-party logs.

    def main(argv=None):
        return run_command("swiftformer-eval", _main, argv)

`run_command` turns what a user can cause (a bad file, a missing folder, a bad option, a full
disk, Ctrl-C) into one line on stderr that names the problem, and an unexpected failure into
one line that says how to see the traceback. ``--verbose`` on the command line, or
``SWIFTFORMER_VERBOSE=1``, shows tracebacks and the libraries' own log lines.
"""

import argparse
import contextlib
import logging
import os
import sys
import traceback
import warnings

VERBOSE_FLAG = "--verbose"
VERBOSE_ENV = "SWIFTFORMER_VERBOSE"
#: Exit status for a user's error (argparse's own) and for an unexpected failure.
USAGE_ERROR, INTERNAL_ERROR, INTERRUPTED = 2, 1, 130


class UserError(ValueError):
    """A problem the user can fix; its message names the problem and the fix, in one line."""


def is_verbose(argv=None):
    """True with ``--verbose`` in `argv` (default ``sys.argv``) or ``SWIFTFORMER_VERBOSE=1``."""
    argv = sys.argv[1:] if argv is None else argv
    return VERBOSE_FLAG in argv or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (`UserError`, printed by `run_command`)
    instead of the whole usage; ``--help`` still shows it."""

    def error(self, message):
        raise UserError(f"{message}: see {self.prog} --help")


def add_verbose(parser):
    """Adds ``--verbose`` to an argparse parser (`run_command` reads it from the command line;
    its dest, ``verbose_flag``, leaves ``verbose`` free for a command's own option)."""
    parser.add_argument(VERBOSE_FLAG, dest="verbose_flag", action="store_true",
                        help="show tracebacks and the libraries' log output")


def quiet_libraries():
    """Silences TensorFlow's C++ and Python logs, absl, gRPC and progress bars.
    Call before TensorFlow is imported; what is already set in the environment is kept."""
    for name, value in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("GRPC_VERBOSITY", "ERROR"),
                        ("ABSL_MIN_LOG_LEVEL", "3"), ("GLOG_minloglevel", "3"),
                        ("TQDM_DISABLE", "1")):
        os.environ.setdefault(name, value)
    for name in ("tensorflow", "absl", "coremltools", "h5py", "jax", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:  # absl sets its own level again when TensorFlow imports it: set absl's verbosity
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    warnings.filterwarnings("ignore")


#: Packages whose warnings a command shows (one line each); other libraries' are silenced.
OWN_PACKAGES = r"(keras_swiftformer|converters|android_bench|benchmarks)(\.|$)"


def _show_own_warnings(prog):
    """Our warnings as ``prog: warning: ...`` lines (after `quiet_libraries` hid the rest)."""
    warnings.filterwarnings("default", module=OWN_PACKAGES)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {_one_line(message)}", file=file or sys.stderr)

    warnings.showwarning = show


@contextlib.contextmanager
def _native_stderr_silenced():
    """Sends what C/C++ libraries write to file descriptor 2 (TensorFlow's and absl's startup
    lines, libjpeg's warnings) to /dev/null while Python's ``sys.stderr`` keeps the terminal.
    Only when ``sys.stderr`` is descriptor 2 itself (not under a test's capture)."""
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    python_stderr = sys.stderr
    sys.stderr = open(saved, "w", buffering=1, closefd=False)
    try:
        yield
    finally:
        sys.stderr.close()  # the wrapper only (closefd=False)
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def run_command(prog, main, argv=None):
    """Runs ``main(argv)`` and returns its exit status; no traceback reaches the user unless
    verbose.

    Returns:
        main's status (None is 0); `USAGE_ERROR` for a user's error (ValueError, OSError,
        ImportError, LookupError); `INTERNAL_ERROR` for anything else; `INTERRUPTED` on Ctrl-C.
    """
    verbose = is_verbose(argv)
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:  # all undone afterwards
        if not verbose:
            quiet_libraries()
            _show_own_warnings(prog)
            stack.enter_context(_native_stderr_silenced())
        return _run(prog, main, argv, verbose)


def _run(prog, main, argv, verbose):
    try:
        status = main(argv)
        return 0 if status is None else status
    except SystemExit as exit_:  # argparse's own errors and --help
        return exit_.code if isinstance(exit_.code, int) else USAGE_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; files are written whole or not at all, so run it again",
              file=sys.stderr)
        return INTERRUPTED
    except (ValueError, OSError, ImportError, LookupError) as err:
        if verbose:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as err:  # a bug of ours: one line, and how to see more
        if verbose:
            traceback.print_exc()
        print(f"{prog}: internal error: {type(err).__name__}: {_one_line(err)} (run again "
              f"with {VERBOSE_FLAG} for the traceback, and please report it)", file=sys.stderr)
        return INTERNAL_ERROR
