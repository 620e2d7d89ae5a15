"""Compression of SwiftFormer with tensorflow-model-optimization (TFMOT): quantisation-aware
training, magnitude pruning (including 2:4) and weight clustering.

TFMOT works on `tf_keras` (Keras 2) models only: `quantize_model` and `prune_low_magnitude`
reject a Keras 3 model and `cluster_weights` returns None for one. So each optimisation runs on a
*twin*: a `tf_keras` copy of the Keras 3 model, made by walking its functional graph layer by
layer (`converters.tfmot.twin`), with the weights moved across by order and every count and shape
checked. The Keras 3 model stays the product; the twin lives only inside these modules.

=======================  ===============================================================
`twin`                   the tf_keras twin: layers, graph walk, weights both ways
`int8_qat`               QAT from the post-training int8 (``qat_int8``): fake quantisation
                         where the int8 file quantises, exported by the post-training path
`quantize`               TFMOT QuantizeConfigs of the custom layers, full-integer QAT model
                         (the pruning- and cluster-preserving QATs), range calibration
`finetune`               distillation from the float model's logits (no labels needed)
`sparsity`               magnitude pruning (unstructured, 2:4), stripping, sparsity figures
`clustering`             weight clustering, stripping, unique values per kernel
`export`                 TFMOT QAT model -> `.tflite` (QAT ranges, no representative dataset)
=======================  ===============================================================

`converters.compress` ties them into rows for the conversion pipeline's fidelity report.
Needs the ``tfmot`` extra: ``pip install 'keras-swiftformer[tfmot]'``.
"""

import os

INSTALL_HINT = "pip install 'keras-swiftformer[tfmot]'"


def _import_tfmot():
    """Imports tf_keras and TFMOT, or raises ImportError naming the extra to install.

    TFMOT sets ``TF_USE_LEGACY_KERAS=1`` when it is imported; the previous value is restored,
    so that the rest of the process and its subprocesses keep Keras 3. ``tf.keras`` is resolved
    first: resolved under TFMOT's setting it would mean tf_keras for the whole process, and
    libraries that test ``isinstance(model, tf.keras.Model)`` (coremltools) would then refuse
    Keras 3 models. TFMOT itself takes tf_keras when ``tf.keras`` is Keras 3.
    """
    import tensorflow as tf

    tf.keras.Model  # noqa: B018 -- resolves the lazy tf.keras now, to the process's Keras
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization  # noqa: F401
        import tf_keras  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"Compression (QAT, pruning, clustering) needs tf_keras and "
            f"tensorflow-model-optimization ({err}); install them with: {INSTALL_HINT}"
        ) from err
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous


_import_tfmot()
