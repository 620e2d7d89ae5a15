"""Weight clustering of the tf_keras twin with TFMOT.

Each clustered kernel is replaced by `clusters` shared values (centroids) and an index per
weight; fine-tuning trains the centroids. TFMOT clusters the kernels of Conv2D and Dense layers
(it declines depthwise kernels, "non-clusterable due to big unrecoverable accuracy loss"); the
first convolution is left alone here as in pruning (`converters.tfmot.sparsity.SKIP`). A
`.tflite` file stores the centroid values per weight, so the saving shows once compressed
(zip); `converters.tfmot.tflite_stats.kernel_stats` counts the values per channel in the file.
"""

import tensorflow_model_optimization as tfmot

from converters.tfmot.sparsity import SKIP, wrap_prunable

clustering = tfmot.clustering.keras

INITIALIZATIONS = {"kmeans++": "KMEANS_PLUS_PLUS", "linear": "LINEAR",
                   "density": "DENSITY_BASED", "random": "RANDOM"}


def cluster_twin(twin, clusters=16, initialization="kmeans++", preserve_sparsity=False,
                 skip=SKIP):
    """Wraps the Conv2D / Dense layers of `twin` for weight clustering.

    Args:
        twin: a float tf_keras twin, possibly pruned and stripped.
        clusters: centroids per kernel.
        initialization: one of `INITIALIZATIONS`.
        preserve_sparsity: keep a pruned model's zeros (sparsity-preserving clustering).
        skip: names of layers to leave alone.

    Returns:
        The model to fine-tune with `converters.tfmot.finetune.distill`, then `strip`.
    """
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"initialization must be one of {tuple(INITIALIZATIONS)}, "
                         f"got {initialization!r}")
    if clusters < 2:
        raise ValueError(f"Need at least 2 clusters, got {clusters}")
    centroids = getattr(clustering.CentroidInitialization, INITIALIZATIONS[initialization])
    kwargs = dict(number_of_clusters=clusters, cluster_centroids_init=centroids)
    if preserve_sparsity:
        kwargs["preserve_sparsity"] = True

    return wrap_prunable(twin, lambda layer: clustering.cluster_weights(layer, **kwargs), skip)


def strip(model):
    """The clustered model without its wrappers: the twin's layers, clustered kernels."""
    return clustering.strip_clustering(model)
