"""Latency of SwiftFormer models: on this host (LiteRT), on Android phones (adb +
``benchmark_model``, or the app in ``android/``), on iPhones (the app in ``ios/``), merged into
one table and plot. Every source writes the JSON format of `android_bench.schema`.

Modules: `host` (this machine), `adb` and `parse` (Android via ``benchmark_model``), `app` (the
Android app over adb), `schema` (the JSON format), `report` (table and plot), `flow` (checkpoint
to table), `models` (which variant and format a file is), `timing` (the one bundle of
timing settings every route takes), `cli` (``swiftformer-bench``).
"""
