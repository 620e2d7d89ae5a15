"""Checkpoint -> `.keras` file: the import step of the pipeline as a function."""

from keras_swiftformer.files import atomic_output


def import_checkpoint(checkpoint, output=None, variant=None, **kwargs):
    """Builds the Keras model of `checkpoint` (any format `keras_swiftformer.checkpoints` reads) and,
    if `output` is given, saves it as a `.keras` file (atomically).

    Args:
        checkpoint: file or folder.
        output: path ending in ``.keras``, or None to only return the model.
        variant: expected variant; default: read from the checkpoint.
        kwargs: passed to `keras_swiftformer.SwiftFormer` (``token_weighting``,
            ``include_preprocessing``, ``classes``, ``input_shape``...).

    Returns:
        The `keras.Model` with the checkpoint's weights.
    """
    from keras_swiftformer import SwiftFormer

    if output is not None and not str(output).endswith(".keras"):
        raise ValueError(f"The output must end in .keras, got {output}")
    from keras_swiftformer.checkpoints import read_checkpoint

    kwargs.setdefault("input_shape", (None, None, 3))
    checkpoint = read_checkpoint(checkpoint, variant)
    if checkpoint.classes and not kwargs.get("new_head"):
        kwargs.setdefault("classes", checkpoint.classes)
    model = SwiftFormer(variant, weights=checkpoint, **kwargs)
    if output is not None:
        with atomic_output(output) as tmp:
            model.save(tmp)
    return model
