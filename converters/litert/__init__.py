"""Keras SwiftFormer -> LiteRT (``.tflite``) for Android, MediaPipe and LiteRT's GPU engine.

Modules by concern:

- `converters.litert.tflite`: conversion, float and quantised (`export_tflite`).
- `converters.litert.runtime`: the interpreter and `TFLiteRunner`.
- `converters.litert.metadata`: classifier metadata (labels, normalisation) MediaPipe reads.
- `converters.litert.inspection`: ops, XNNPACK partitions, host latency.
- `converters.litert.gpu`: LiteRT's GPU engine (CompiledModel over Vulkan).
- `converters.litert.target`: the `converters.targets` target of this runtime.

Importing this package imports neither TensorFlow nor LiteRT.
"""
