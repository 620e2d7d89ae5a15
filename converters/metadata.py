"""TFLite metadata for image classifiers: the part of a ``.tflite`` file that MediaPipe Tasks,
the LiteRT Task Library and Android Studio's ML model binding read.

A classifier file carries:

- a ``TFLITE_METADATA`` buffer (the flatbuffer of TFLite's ``metadata_schema.fbs``, file
  identifier ``M001``): model name, description, version, author, licence; the input's image
  properties (RGB) and its normalisation (``NormalizationOptions``: mean 0 / std 1 for our raw
  RGB pixels in [0, 255]) with its value range; the output's meaning (logits or
  probabilities) and its label file;
- the label file (``labels.txt``, one ImageNet class name a line) and a ``swiftformer.json``
  (variant, format, source checkpoint, preprocessing) zipped onto the end of the file, which is
  how tflite-support and MediaPipe pack associated files. LiteRT ignores the trailing zip.

MediaPipe opens float32 input only with ``NormalizationOptions`` and integer input only as
uint8 (`MEDIAPIPE_INPUT_TYPES`).

Why a writer of our own: mediapipe 1.2.2's ``metadata_writers`` fail to import (the wheel lacks
``mediapipe.tasks.cc``), mediapipe 0.10.21's and tflite-support 0.4.4's pin protobuf < 4 (and
numpy < 2 for 0.10.21), which TensorFlow 2.21 cannot share. The flatbuffer is small, so it is
written here with the ``flatbuffers`` runtime TensorFlow already needs, from `SCHEMA`: the
tables of ``metadata_schema.fbs`` that a classifier uses, fields in schema order (a field's
slot is its position; a union takes two slots, its type then its value).
"""

import io
import json
import os
import zipfile

import flatbuffers
import numpy as np
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

from keras_swiftformer.preprocessing import DEFAULT_PREPROCESSING

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
#: The oldest metadata parser that reads every field written here (schema 1.0.0 fields only).
MIN_PARSER_VERSION = "1.0.0"
LABEL_FILE = "labels.txt"
INFO_FILE = "swiftformer.json"
#: Input types MediaPipe Tasks' ImageClassifier accepts (float32 needs NormalizationOptions).
MEDIAPIPE_INPUT_TYPES = ("float32", "uint8")

# Enum values of metadata_schema.fbs.
COLOR_SPACE_RGB = 1
FILE_DESCRIPTIONS, FILE_TENSOR_AXIS_LABELS = 1, 2

#: table -> fields in schema order, "name:type"; types: string, byte, uint, int, float, a table
#: name, a union name (`UNIONS`), or [type] for a vector.
SCHEMA = {
    "ModelMetadata": ("name:string", "description:string", "version:string",
                      "subgraph_metadata:[SubGraphMetadata]", "author:string", "license:string",
                      "associated_files:[AssociatedFile]", "min_parser_version:string"),
    "SubGraphMetadata": ("name:string", "description:string",
                         "input_tensor_metadata:[TensorMetadata]",
                         "output_tensor_metadata:[TensorMetadata]",
                         "associated_files:[AssociatedFile]"),
    "TensorMetadata": ("name:string", "description:string", "dimension_names:[string]",
                       "content:Content", "process_units:[ProcessUnit]", "stats:Stats",
                       "associated_files:[AssociatedFile]"),
    "Content": ("content_properties:ContentProperties", "range:ValueRange"),
    "FeatureProperties": (),
    "ImageProperties": ("color_space:byte", "default_size:ImageSize"),
    "ImageSize": ("width:uint", "height:uint"),
    "ValueRange": ("min:int", "max:int"),
    "ProcessUnit": ("options:ProcessUnitOptions",),
    "NormalizationOptions": ("mean:[float]", "std:[float]"),
    "Stats": ("max:[float]", "min:[float]"),
    "AssociatedFile": ("name:string", "description:string", "type:byte", "locale:string",
                       "version:string"),
}
#: union -> its members in schema order (type codes 1, 2, ...); None: not used here.
UNIONS = {
    "ContentProperties": ("FeatureProperties", "ImageProperties", None, None),
    "ProcessUnitOptions": ("NormalizationOptions", None, None, None, None, None),
}
_SCALARS = {"byte": (number_types.Int8Flags, "PrependInt8Slot"),
            "uint": (number_types.Uint32Flags, "PrependUint32Slot"),
            "int": (number_types.Int32Flags, "PrependInt32Slot")}


class MetadataError(ValueError):
    """A file whose metadata cannot be written or read; the message says why."""


def _fields(table):
    """[(slot, name, type)] of `table`; a union's value slot follows its type slot."""
    fields, slot = [], 0
    for spec in SCHEMA[table]:
        name, kind = spec.split(":")
        if kind in UNIONS:
            slot += 1
        fields.append((slot, name, kind))
        slot += 1
    return fields


def _pack(builder, table, obj):
    """Writes dict `obj` as a `table`; returns its offset. Unknown keys are an error."""
    fields = _fields(table)
    unknown = set(obj) - {name for _, name, _ in fields}
    if unknown:
        raise MetadataError(f"{table} has no field(s) {sorted(unknown)}")
    offsets = {}  # children first: flatbuffers cannot nest objects
    for _, name, kind in fields:
        value = obj.get(name)
        if value is None or kind in _SCALARS:
            continue
        if kind == "string":
            offsets[name] = builder.CreateString(value)
        elif kind.startswith("["):
            offsets[name] = _pack_vector(builder, kind[1:-1], value)
        elif kind in UNIONS:
            member = value["type"]
            offsets[name] = (UNIONS[kind].index(member) + 1,
                             _pack(builder, member, value.get("value", {})))
        else:
            offsets[name] = _pack(builder, kind, value)
    builder.StartObject(len(fields) and fields[-1][0] + 1)
    for slot, name, kind in fields:
        if obj.get(name) is None:
            continue
        if kind in _SCALARS:
            getattr(builder, _SCALARS[kind][1])(slot, int(obj[name]), 0)
        elif kind in UNIONS:
            code, offset = offsets[name]
            builder.PrependUint8Slot(slot - 1, code, 0)
            builder.PrependUOffsetTRelativeSlot(slot, offset, 0)
        else:
            builder.PrependUOffsetTRelativeSlot(slot, offsets[name], 0)
    return builder.EndObject()


def _pack_vector(builder, kind, values):
    if kind == "float":
        builder.StartVector(4, len(values), 4)
        for v in reversed(values):
            builder.PrependFloat32(float(v))
        return builder.EndVector()
    items = [builder.CreateString(v) if kind == "string" else _pack(builder, kind, v)
             for v in values]
    builder.StartVector(4, len(items), 4)
    for offset in reversed(items):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _unpack(table, buf, pos):
    """The `table` at `pos` of `buf` as a dict (absent fields left out)."""
    tab, obj = Table(buf, pos), {}
    for slot, name, kind in _fields(table):
        o = tab.Offset(4 + 2 * slot)
        if not o:
            continue
        if kind in _SCALARS:
            obj[name] = tab.Get(_SCALARS[kind][0], o + tab.Pos)
        elif kind == "string":
            obj[name] = tab.String(o + tab.Pos).decode("utf-8")
        elif kind in UNIONS:
            code = tab.Get(number_types.Uint8Flags, tab.Pos + tab.Offset(4 + 2 * (slot - 1)))
            member = UNIONS[kind][code - 1] if 0 < code <= len(UNIONS[kind]) else None
            if member is None:
                raise MetadataError(f"{table}.{name}: union member {code} is not read here")
            obj[name] = {"type": member, "value": _unpack(member, buf, tab.Indirect(o + tab.Pos))}
        elif kind.startswith("["):
            item, start, count = kind[1:-1], tab.Vector(o), tab.VectorLen(o)
            if item == "float":
                obj[name] = [tab.Get(number_types.Float32Flags, start + 4 * i)
                             for i in range(count)]
            elif item == "string":
                obj[name] = [tab.String(start + 4 * i).decode("utf-8") for i in range(count)]
            else:
                obj[name] = [_unpack(item, buf, tab.Indirect(start + 4 * i))
                             for i in range(count)]
        else:
            obj[name] = _unpack(kind, buf, tab.Indirect(o + tab.Pos))
    return obj


def encode_metadata(metadata):
    """``ModelMetadata`` dict (field names of `SCHEMA`) -> flatbuffer bytes (identifier M001)."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(_pack(builder, "ModelMetadata", metadata), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def decode_metadata(buf):
    """Flatbuffer bytes of a ``ModelMetadata`` -> dict; MetadataError if it is not one."""
    buf = bytearray(buf)
    if len(buf) < 8 or bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise MetadataError("not a TFLite metadata buffer (no M001 identifier)")
    return _unpack("ModelMetadata", buf, encode.Get(packer.uoffset, buf, 0))


def split_associated_files(content):
    """(model flatbuffer bytes, {name: bytes} of the zip packed after it, if any)."""
    content = bytes(content)
    stream = io.BytesIO(content)
    if not zipfile.is_zipfile(stream):
        return content, {}
    with zipfile.ZipFile(stream) as archive:
        infos = archive.infolist()
        files = {info.filename: archive.read(info) for info in infos}
    # zipfile reports header offsets from the start of the file, past the model in front.
    start = min((info.header_offset for info in infos), default=len(content))
    return content[:start], files


class _AlignedBuffer:
    """Packs a model's ``BufferT`` with its data 16-byte aligned, as the TFLite schema asks
    (``force_align: 16``) and the converter writes. The Python object API packs it unaligned,
    and LiteRT then copies every unaligned constant to the heap instead of mapping the file."""

    ALIGNMENT = 16

    def __init__(self, buffer, schema_fb):
        self.buffer, self.schema_fb = buffer, schema_fb

    def Pack(self, builder):  # noqa: N802 -- the object API's name
        data, fb = self.buffer.data, self.schema_fb
        vector = None
        if data is not None:
            payload = np.asarray(data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), self.ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            vector = builder.EndVector()
        fb.BufferStart(builder)
        if vector is not None:
            fb.BufferAddData(builder, vector)
        fb.BufferAddOffset(builder, self.buffer.offset or 0)
        fb.BufferAddSize(builder, self.buffer.size or 0)
        return fb.BufferEnd(builder)


def attach(content, metadata, files):
    """A ``.tflite`` with `metadata` (`encode_metadata` bytes) as its ``TFLITE_METADATA``
    buffer, replacing one already there, and `files` ({name: bytes}) zipped after it, replacing
    any files packed before. Returns the new file's bytes."""
    from converters.litert_inspect import flatbuffer_utils

    fb = flatbuffer_utils()
    model_bytes, _ = split_associated_files(content)
    model = fb.read_model_from_bytearray(bytearray(model_bytes))
    buffer = fb.schema_fb.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    entries = [m for m in (model.metadata or []) if m.name in (METADATA_NAME,
                                                               METADATA_NAME.encode())]
    if entries:
        model.buffers[entries[0].buffer] = buffer
    else:
        model.buffers.append(buffer)
        entry = fb.schema_fb.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata = list(model.metadata or []) + [entry]
    model.buffers = [_AlignedBuffer(b, fb.schema_fb) for b in model.buffers]
    stream = io.BytesIO()
    stream.write(bytes(fb.convert_object_to_bytearray(model)))
    with zipfile.ZipFile(stream, "a") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return stream.getvalue()


def read(content):
    """(metadata dict or None, {name: bytes} of the associated files) of ``.tflite`` bytes (or
    a path)."""
    if isinstance(content, (str, os.PathLike)):
        with open(content, "rb") as f:
            content = f.read()
    from converters.litert_inspect import flatbuffer_utils

    model_bytes, files = split_associated_files(content)
    model = flatbuffer_utils().read_model_from_bytearray(bytearray(model_bytes))
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_NAME:
            return decode_metadata(bytes(bytearray(model.buffers[entry.buffer].data))), files
    return None, files


#: TensorType codes of the TFLite schema -> numpy type names.
_TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 7: "int16", 9: "int8"}


def tensor_io(content):
    """The single input and first output of ``.tflite`` bytes: ``{"name", "dtype", "shape",
    "scale", "zero_point"}`` each (scale / zero point None for float tensors)."""
    from converters.litert_inspect import flatbuffer_utils

    model_bytes, _ = split_associated_files(content)
    model = flatbuffer_utils().read_model_from_bytearray(bytearray(model_bytes))
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1:
        raise MetadataError(f"an image classifier has one input; this model has "
                            f"{len(graph.inputs)}")

    def describe(index):
        tensor = graph.tensors[index]
        q = tensor.quantization
        quantized = q is not None and q.scale is not None and len(q.scale) > 0
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
        return {"name": name, "dtype": _TENSOR_TYPES.get(tensor.type, f"type {tensor.type}"),
                "shape": [int(d) for d in tensor.shape],
                "scale": float(q.scale[0]) if quantized else None,
                "zero_point": int(q.zeroPoint[0]) if quantized else None}

    return describe(graph.inputs[0]), describe(graph.outputs[0])


def mediapipe_ready(content):
    """None if MediaPipe Tasks' ImageClassifier can open ``.tflite`` bytes (metadata with
    labels, a float32 or uint8 input), else the reason it cannot."""
    metadata, files = read(content)
    source, _ = tensor_io(content)
    if source["dtype"] not in MEDIAPIPE_INPUT_TYPES:
        return (f"input is {source['dtype']}: MediaPipe takes "
                f"{' or '.join(MEDIAPIPE_INPUT_TYPES)} input")
    if metadata is None:
        return "no TFLite metadata"
    if LABEL_FILE not in files:
        return f"no {LABEL_FILE} packed in the file"
    return None


def _input_description(source, preprocessing):
    h, w = source["shape"][1:3]
    text = (f"One RGB image, {h}x{w} (NHWC), pixel values 0-255 as decoded, not normalised: "
            "the model applies the ImageNet mean/std itself, so the normalisation here is mean "
            f"0 / std 1. Reference preprocessing: {preprocessing.describe()} (MediaPipe "
            f"stretches the whole image to {h}x{w}: crop first for the reference accuracy).")
    if source["dtype"] != "float32" and source["scale"] is not None:
        text += (f" {source['dtype']} codes: round(pixel / {source['scale']:.6g}) + "
                 f"{source['zero_point']}.")
    return text


def classifier_metadata(content, variant, fmt, labels=None, probabilities=False,
                        source_checkpoint=None, license=None, version=None,
                        preprocessing=DEFAULT_PREPROCESSING):
    """The ``ModelMetadata`` dict of a SwiftFormer classifier file.

    Args:
        content: the ``.tflite`` bytes (its input type and shape are read from them).
        variant, fmt: "XS"..., and the export format, for the name and description.
        labels: class names in output order (None: no label file is referenced).
        probabilities: the output is softmax probabilities (else logits).
        source_checkpoint: where the weights came from.
        license: the licence text of the file (of the weights).
        version: the converter's version (default: keras_swiftformer's).
        preprocessing: the weights' evaluation transform
            (`keras_swiftformer.preprocessing.Preprocessing`), for the input's description.
    """
    import keras_swiftformer

    source, output = tensor_io(content)
    image = {"name": "image", "description": _input_description(source, preprocessing),
             "content": {"content_properties": {"type": "ImageProperties", "value": {
                 "color_space": COLOR_SPACE_RGB}}},
             "process_units": [{"options": {"type": "NormalizationOptions", "value": {
                 "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}}}],
             "stats": {"max": [255.0], "min": [0.0]}}
    kind = "probability" if probabilities else "logits"
    scores = {"name": kind, "content": {"content_properties": {"type": "FeatureProperties"}},
              "description": ("Softmax probabilities of the classes: a score threshold is a "
                              "probability." if probabilities else
                              "Logits (unnormalised scores) of the classes, not probabilities: "
                              "rank them (max_results); a score threshold compares logits.")}
    if probabilities:
        scores["stats"] = {"max": [1.0], "min": [0.0]}
    if labels is not None:
        scores["associated_files"] = [{"name": LABEL_FILE, "type": FILE_TENSOR_AXIS_LABELS,
                                       "description": "Class names, one a line, in output "
                                                      "order"}]
    description = (f"SwiftFormer-{variant} image classifier ({len(labels or []) or 'its'} "
                   f"classes), {fmt} LiteRT export by keras-swiftformer; {source['dtype']} "
                   f"input, {output['dtype']} {kind} output. Weights: "
                   f"{source_checkpoint or 'unknown'}.")
    return {
        "name": f"SwiftFormer-{variant} ({fmt})", "description": description,
        "version": version or keras_swiftformer.__version__, "author": "keras-swiftformer",
        "license": license or "Code: Apache-2.0 (keras-swiftformer). Weights: the licence "
                              "of the source checkpoint.",
        "subgraph_metadata": [{"input_tensor_metadata": [image],
                               "output_tensor_metadata": [scores]}],
        "associated_files": [{"name": INFO_FILE, "type": FILE_DESCRIPTIONS,
                              "description": "variant, format, source checkpoint, "
                                             "preprocessing (JSON)"}],
        "min_parser_version": MIN_PARSER_VERSION,
    }


def add_classifier_metadata(content, variant, fmt, labels=None, probabilities=False,
                            source_checkpoint=None, license=None,
                            preprocessing=DEFAULT_PREPROCESSING, extra=None):
    """``.tflite`` bytes -> the same model with classifier metadata, its label file and
    ``swiftformer.json`` (`classifier_metadata` arguments, and `extra` fields for the JSON)."""
    metadata = classifier_metadata(content, variant, fmt, labels, probabilities,
                                   source_checkpoint, license, preprocessing=preprocessing)
    source, output = tensor_io(content)
    info = {"variant": variant, "format": fmt, "source_checkpoint": source_checkpoint,
            "input": source, "output": {**output, "kind": metadata["subgraph_metadata"][0][
                "output_tensor_metadata"][0]["name"]},
            "preprocessing": {"pixels": "RGB 0-255", "mean": [0, 0, 0], "std": [1, 1, 1],
                              "resize": preprocessing.describe(),
                              "crop_pct": preprocessing.crop_pct,
                              "crop_mode": preprocessing.crop_mode,
                              "interpolation": preprocessing.interpolation},
            "mediapipe_ready": source["dtype"] in MEDIAPIPE_INPUT_TYPES, **(extra or {})}
    files = {INFO_FILE: json.dumps(info, indent=2).encode()}
    if labels is not None:
        files[LABEL_FILE] = ("\n".join(labels) + "\n").encode()
    return attach(content, encode_metadata(metadata), files)
