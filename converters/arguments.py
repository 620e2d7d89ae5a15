"""The command-line vocabulary shared by ``swiftformer-convert``, ``-eval`` and ``-bench``: one
flag for one idea (``swiftformer-train`` spells its fields the same way).

=====================  ==========================================================
``--images DIR``       a folder of photos (calibration, evaluation, accuracy)
``--input-size N|HxW``  the model's fixed input
``--output-dir DIR``   the folder a command writes its files into
``--normalised-input`` the model takes ImageNet-normalised input, not RGB 0-255
``--new-head``         start new classifier heads (``--classes N``)
=====================  ==========================================================
"""

import argparse


def add_images(parser, help, required=False):
    parser.add_argument("--images", metavar="DIR", required=required, help=help)


def add_input_size(parser, default="224", help="N or HxW (default: %(default)s)"):
    parser.add_argument("--input-size", default=default, metavar="N|HxW", help=help)


def add_output_dir(parser, default, help="folder for the files written (default: %(default)s)"):
    parser.add_argument("--output-dir", default=default, metavar="DIR", help=help)


def add_normalised_input(parser, optional=False):
    """``--normalised-input``; with `optional`, also ``--no-normalised-input`` and a default of
    None (decided per model)."""
    if optional:
        parser.add_argument("--normalised-input", action=argparse.BooleanOptionalAction,
                            default=None, help="feed ImageNet-normalised input (default: only "
                            "to Keras models without their own preprocessing)")
    else:
        parser.add_argument("--normalised-input", action="store_true",
                            help="the model takes ImageNet-normalised input instead of RGB "
                            "0-255")


def add_new_head(parser):
    parser.add_argument("--new-head", action="store_true",
                        help="start new classifier heads instead of the checkpoint's")
    parser.add_argument("--classes", type=int, default=None,
                        help="class count of the new heads (with --new-head)")


def input_size(text):
    """The ``--input-size`` text -> (H, W); ValueError for anything but N or HxW."""
    try:
        dims = tuple(int(s) for s in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"Input size {text!r} is not N or HxW") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2:
        raise ValueError(f"Input size {text!r} is not N or HxW")
    return dims
