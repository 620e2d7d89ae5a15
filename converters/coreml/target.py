"""The Core ML target (`converters.targets`): ``.mlpackage`` ML programs for iPhone, verified on
Linux where Core ML cannot run.

A format's `converters.formats.CoreMLRecipe` (precision and compression) goes to
`converters.coreml.export_coreml`; the package is checked (spec and every weight against the
folded Keras weights, `converters.coreml.verify_coreml`) before it appears at its path, so a
package that fails its checks is never left behind. `run` is the numpy evaluator of ML programs
(`converters.coreml.mil_eval`).
"""

from converters.targets import Target
from keras_swiftformer.files import atomic_output

#: Images the numpy evaluator of Core ML programs runs (it is slower than LiteRT).
EVALUATION_IMAGES = 8
#: Calibration images a compression that reads photos (``w8a8``'s ranges, GPTQ rounding) uses.
CALIBRATION_IMAGES = 8


class CoreMLTarget(Target):
    name = "coreml"
    evaluation_images = EVALUATION_IMAGES

    @staticmethod
    def _labels(about):
        """The package's class labels: None for ImageNet's (Core ML's default, made unique by
        their synsets), else `about.labels` made unique."""
        if about.labels_source == "ImageNet" or about.labels is None:
            return None
        return unique_labels(about.labels)

    def export(self, fmt, job, path):
        from converters.coreml.export import export_coreml
        from converters.coreml.verification import verify_coreml

        compression = fmt.coreml.compression
        if fmt.calibrated and (job.calibration is None or not len(job.calibration)):
            raise ValueError(f"{fmt.name} quantises activations: it needs calibration "
                             "images (--images DIR)")
        calibration = None  # without photos, GPTQ-rounded palettes round to the nearest entry
        if compression is not None and compression.reads_photos and job.calibration is not None:
            calibration = job.calibration[:CALIBRATION_IMAGES]
        labels = self._labels(job.about)
        metadata = {"source_checkpoint": str(job.about.source)}
        if job.about.license:
            metadata["license"] = job.about.license
        with atomic_output(path) as tmp:  # the package appears once its checks pass
            export_coreml(job.model, tmp, fmt.coreml, classifier=True, class_labels=labels,
                          metadata=metadata, calibration=calibration)
            verify_coreml(tmp, job.model, None, class_labels=labels)
        return {"graph": "folded"}

    def run(self, path, images):
        """Logits (the input of the classifier's softmax) by the numpy evaluator."""
        from converters.coreml.mil_eval import MLProgram
        from converters.coreml.verification import run_coreml

        return run_coreml(MLProgram(path), images)[0]

    def reference(self, job, images, outputs):
        """Logits: `run` reads them before the classifier's softmax."""
        if not job.about.probabilities:
            return outputs
        from converters.coreml.verification import keras_logits

        return keras_logits(job.model, images)

    def inspect(self, rows, inspection, progress=print):
        """Each row's op counts (`converters.coreml.op_summary`)."""
        import os

        from converters.coreml.inspection import op_histogram, op_summary

        for row in rows:
            try:
                row["coreml_ops"] = op_summary(op_histogram(
                    os.path.join(inspection.output_dir, row["file"])))
            except Exception as err:  # an analysis failure must not lose the report
                row["inspect_error"] = f"{type(err).__name__}: {err}"
        return {}

    def describe(self, fmt, file_name):
        return (f"`{file_name}`: Core ML (Xcode or `MLModel(contentsOf:)`, iOS "
                f"{fmt.coreml.minimum_os[3:]}+); input an RGB image (a `CVPixelBuffer`), "
                "outputs `classLabel` and `probabilities`.")


def unique_labels(labels):
    """`labels` with repeated names made unique by their index (a Core ML classifier's labels
    are dictionary keys; ImageNet names "crane" and "maillot" twice)."""
    labels = list(labels)
    seen = {name: labels.count(name) for name in labels}
    return [name if seen[name] == 1 else f"{name} ({i})" for i, name in enumerate(labels)]
