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
import sys
import typing

from keras_swiftformer.training.config import (
    FIELDS,
    RECIPES,
    TrainConfig,
    make_config,
    read_config_file,
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="swiftformer-train", description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1])
    parser.add_argument("--config", help="YAML (needs PyYAML) or JSON file of options")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                        help="defaults to start from (default: official)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration and exit")
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
        parser.add_argument("--" + name.replace("_", "-"), **kwargs)
    return parser


def resolve(argv=None):
    """Command line -> `TrainConfig` (file values first, command-line values over them)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    config_file, recipe = args.pop("config"), args.pop("recipe")
    show = args.pop("print_config")
    values = read_config_file(config_file) if config_file else {}
    recipe = recipe or values.pop("recipe", "official")
    values.pop("recipe", None)
    values.update(args)
    try:
        return make_config(recipe, **values), show
    except ValueError as err:
        parser.error(str(err))


def main(argv=None):
    config, show = resolve(argv)
    if show:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    from keras_swiftformer.training.trainer import train

    try:
        result = train(config)
    except (ValueError, FileExistsError, ImportError) as err:
        print(f"swiftformer-train: error: {err}", file=sys.stderr)
        return 2
    if result.runtime.is_chief:
        last = {k: v[-1] for k, v in result.history.items() if v}
        print(json.dumps({"model": result.path, "resumed_from_epoch": result.resumed_from,
                          **{k: round(float(v), 5) for k, v in last.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
