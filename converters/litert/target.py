"""The LiteRT target (`converters.targets`): ``.tflite`` files for Android, MediaPipe and
LiteRT's GPU engine.

A format's `converters.formats.LiteRTRecipe` says how `converters.litert.tflite` converts it and
from which graph: the folded inference graph (`converters.inference_graph.for_inference`:
BatchNorm, layer scales and the two heads folded, one XNNPACK partition in float), built once per
job, unless the recipe or the job says "keras". Every file carries classifier metadata
(`converters.litert.metadata`) and is written with it, whole, or not at all.
"""

from converters.targets import Target
from keras_swiftformer.files import atomic_output


class LiteRTTarget(Target):
    name = "litert"

    def _graph(self, fmt, job):
        """(graph name, model, the graph's float ops) `fmt` is converted from."""
        from converters.litert.tflite import KERAS_FLOAT_OPS

        if job.graph == "keras" or fmt.graph == "keras":
            return "keras", job.model, KERAS_FLOAT_OPS
        from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference

        if "litert.folded" not in job.cache:
            job.cache["litert.folded"] = for_inference(job.model)
        return "folded", job.cache["litert.folded"], FOLDED_FLOAT_OPS

    def export(self, fmt, job, path):
        from converters.litert.tflite import convert_checked

        graph, model, float_ops = self._graph(fmt, job)
        # int8 and uint8 of one graph share one weight rounding and calibration.
        shared = job.cache.setdefault(f"litert.calibrated.{graph}", {})
        content = convert_checked(model, fmt, job.calibration, float_ops=float_ops,
                                  shared=shared)
        return {"graph": graph, **self._write(fmt, job, path, content)}

    def adopt(self, fmt, job, path):
        with open(path, "rb") as f:
            content = f.read()
        return self._write(fmt, job, path, content)

    @staticmethod
    def _write(fmt, job, path, content):
        """Writes `content` with its metadata to `path` atomically; the MediaPipe fields."""
        from converters.litert.metadata import add_classifier_metadata, mediapipe_ready

        content = add_classifier_metadata(content, fmt.name, job.about)
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            f.write(content)
        verdict = mediapipe_ready(content)
        return {"mediapipe": verdict is None,
                **({"mediapipe_reason": verdict} if verdict else {})}

    def run(self, path, images):
        from converters.litert.runtime import TFLiteRunner

        return TFLiteRunner(path).predict(images)

    def inspect(self, rows, inspection, progress=print):
        """XNNPACK partitions, the GPU analyser, host latency (`converters.litert.inspection`)
        and LiteRT's GPU engine (`converters.litert.gpu`) for each row."""
        from converters.litert.inspection import inspect_rows

        inspect_rows(rows, inspection.output_dir, inspection.latency_runs, progress)
        latency = (f"LiteRT + XNNPACK, 1 thread, {inspection.latency_runs} runs per file "
                   "interleaved with the other files, median, on the converting machine"
                   if inspection.latency_runs else "not measured (latency_runs=0)")
        images = inspection.images[:inspection.gpu_images] if inspection.gpu_images else []
        return {"latency": latency,
                "gpu_engine": _gpu_rows(rows, inspection.output_dir, images, progress)}

    def describe(self, fmt, file_name):
        io = "uint8 camera pixels" if fmt.integer_io else "float32 RGB pixels 0-255"
        return (f"`{file_name}`: LiteRT (`ai_edge_litert.interpreter.Interpreter`, or "
                f"MediaPipe Tasks' ImageClassifier, which reads its labels and normalisation "
                f"from the metadata); input {io}, one image.")


def _gpu_rows(rows, output_dir, images, progress):
    """Runs every row's file on LiteRT's GPU engine (`converters.litert.gpu.gpu_rows`); returns
    the report's line on what ran it."""
    from converters.litert.gpu import NO_DEVICE, gpu_rows, is_software, vulkan_icd

    if not len(images):
        return "not run (gpu_images=0)"
    icd = vulkan_icd()
    gpu_rows(rows, output_dir, images, progress=progress)  # "not run" rows without a device
    if icd is None:
        return NO_DEVICE
    adapters = sorted({r["gpu_adapter"] for r in rows if r.get("gpu_adapter")})
    software = (" (a software Vulkan device: its times are not a GPU's)"
                if is_software(icd) else "")
    return (f"LiteRT's GPU accelerator (CompiledModel) on {', '.join(adapters) or icd}"
            f"{software}, {len(images)} evaluation images, against the CPU run of the "
            "float32 file")

