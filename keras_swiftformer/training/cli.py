"""``swiftformer-train``: the recipe from the command line or a YAML/JSON file.

Every `TrainConfig` field is an option (``--batch-size``, ``--mixup``...); ``--config FILE``
reads them from a file first, and options given on the command line win. Examples::

    # SwiftFormer-XS from scratch, the official recipe, on the GPUs of this machine
    swiftformer-train --data /data/imagenet --output-dir runs/xs --variant XS

    # fine-tune an official checkpoint on a new 10-class folder tree
    swiftformer-train --recipe finetune --finetune swiftformer_xs.pth \\
        --data /data/flowers --output-dir runs/flowers --batch-size 64

    # one process per host (JAX backend), e.g. from Slurm (see examples/slurm)
    KERAS_BACKEND=jax swiftformer-train --distribution jax --coordinator host0:12355 \\
        --num-processes 4 --process-id $RANK --data ... --output-dir ...
"""

import argparse
import json
import os
import re
import sys
import typing

from keras_swiftformer.commands import OneLineParser, UserError, add_verbose, run_command
from keras_swiftformer.files import check_output_path
from keras_swiftformer.training.config import (
    FIELDS,
    RECIPES,
    TrainConfig,
    make_config,
    read_config_file,
)


def build_parser():
    parser = OneLineParser(
        prog="swiftformer-train", description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1])
    parser.add_argument("--config", help="YAML (needs PyYAML) or JSON file of options")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                        help="defaults to start from (default: official)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration and exit")
    add_verbose(parser)
    hints = typing.get_type_hints(TrainConfig)
    for name, field in FIELDS.items():
        kwargs = dict(dest=name, default=argparse.SUPPRESS,
                      help=f"{field.metadata['help']} (default: {field.default!r})")
        if hints[name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif field.metadata.get("nargs"):
            kwargs.update(nargs=field.metadata["nargs"], type=field.metadata["type"])
        else:
            kwargs["type"] = hints[name]
            choices = [c for c in field.metadata.get("choices", ()) if c is not None]
            if choices:
                kwargs["choices"] = choices
        parser.add_argument(flag(name), **kwargs)
    return parser


def flag(name):
    """The command-line flag of the `TrainConfig` field `name` (``warmup_epochs`` ->
    ``--warmup-epochs``)."""
    return FIELDS[name].metadata.get("flag", "--" + name.replace("_", "-"))


_FIELD_NAMES = re.compile(r"(?<![\w-])(" + "|".join(sorted(FIELDS, key=len, reverse=True))
                          + r")(?![\w-])")


def with_flags(message):
    """A validation message with the field names it mentions written as their flags."""
    return _FIELD_NAMES.sub(lambda match: flag(match[1]), message)


def resolve(argv=None):
    """Command line -> `TrainConfig` (file values first, command-line values over them)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    config_file, recipe = args.pop("config"), args.pop("recipe")
    show = args.pop("print_config")
    args.pop("verbose_flag", None)
    values = read_config_file(config_file) if config_file else {}
    recipe = recipe or values.pop("recipe", "official")
    values.pop("recipe", None)
    values.update(args)
    try:
        return make_config(recipe, **values), show
    except ValueError as err:  # one line naming the flag, without the usage dump
        raise UserError(with_flags(str(err))) from None


def check_output_dir(path):
    """`UserError` before any work if `path` is a file or lies under one."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--output-dir {path} is a file: give a folder (new or existing)")
    check_output_path(os.path.join(path, "model.keras"))


def _main(argv=None):
    config, show = resolve(argv)
    if show:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    check_output_dir(config.output_dir)
    from keras_swiftformer.training.trainer import train

    result = train(config)
    if result.runtime.is_chief:
        last = {k: v[-1] for k, v in result.history.items() if v}
        print(json.dumps({"model": result.path, "resumed_from_epoch": result.resumed_from,
                          **{k: round(float(v), 5) for k, v in last.items()}}))
    return 0


def main(argv=None):
    return run_command("swiftformer-train", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
