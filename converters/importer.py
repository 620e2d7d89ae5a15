"""Any model source -> `.keras` file: the import step of the pipeline as a function."""

import os

from keras_swiftformer.files import atomic_output
from keras_swiftformer.source import SourceError, resolve_source


def check_output(output):
    """SourceError unless `output` is a ``.keras`` path that is not a folder (never replaced)."""
    if output is None:
        return
    output = os.fspath(output)
    if not output.endswith(".keras"):
        raise SourceError(f"The output must end in .keras, got {output}: give e.g. model.keras")
    if os.path.isdir(output):
        raise SourceError(f"{output} is a folder: give a file path (the folder is left as it is)")
    parent = os.path.dirname(os.path.abspath(output))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise SourceError(f"Cannot write {output}: {parent} is a file, not a folder")


def import_checkpoint(checkpoint, output=None, variant=None, **kwargs):
    """Builds the Keras model of `checkpoint` and, if `output` is given, saves it as a
    ``.keras`` file (atomically).

    Args:
        checkpoint: anything `keras_swiftformer.source.resolve_source` takes (a checkpoint file
            or folder, a ``.keras`` model, a weight tag with `variant`, ``hf://ORG/REPO``).
        output: path ending in ``.keras``, or None to only return the model.
        variant: expected variant; default: read from the checkpoint.
        kwargs: passed to `keras_swiftformer.SwiftFormer` (``token_weighting``,
            ``include_preprocessing``, ``classes``, ``input_shape`` (default any size),
            ``classifier_activation`` (default softmax), ``new_head``...).

    Returns:
        The `keras.Model` with the checkpoint's weights.

    Raises:
        SourceError: a bad source or output path, before any work.
    """
    check_output(output)
    source = resolve_source(checkpoint, variant, kwargs.pop("token_weighting", None))
    kwargs.setdefault("input_shape", (None, None, 3))
    kwargs.setdefault("classifier_activation", "softmax")
    model = source.build(**kwargs)
    if output is not None:
        with atomic_output(output) as tmp:
            model.save(tmp)
    return model
