"""Where the time of a `.tflite` model goes, op by op, from Python.

The LiteRT wheels ship no ``benchmark_model`` binary and the Python interpreter exposes no
profiler, so each operator of the graph is cut out into a one-op model (its constant inputs
kept, its other inputs made graph inputs) and timed on its own through LiteRT, with the same
delegate and thread count as the whole model. The sum of the op times is printed next to the
whole model's time: the difference is what fusion across ops (XNNPACK fuses PAD into the next
convolution, for instance; such pairs are timed together) and the hand-over between delegate
partitions add or save.

    python -m benchmarks.op_profile model.tflite [--threads 1] [--top 25]
"""

import argparse
import collections
import copy
import time

import numpy as np

from converters.litert.inspection import flatbuffer_utils as _flatbuffer_utils
from converters.litert.inspection import set_random_input
from converters.report import markdown_table
from converters.litert.runtime import make_interpreter


def _is_constant(model, tensor):
    buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    return buffer is not None and buffer.data is not None and len(buffer.data) > 0


#: Ops that XNNPACK folds into a following convolution (a zero PAD becomes its padding): they are
#: timed together with that convolution, as they run in the whole graph.
FUSED_INTO_NEXT = ("PAD",)
CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def sub_model(model, op_indices):
    """A model of the ops `op_indices` of subgraph 0 of `model` (a flatbuffer ``ModelT``):
    constants kept, the other tensors they read made inputs, the last op's outputs the outputs.
    Returns its bytes."""
    fb = _flatbuffer_utils()
    graph = model.subgraphs[0]
    ops = [graph.operators[i] for i in op_indices]
    produced = {t for op in ops for t in op.outputs}
    new = copy.copy(model)
    new.buffers, new.signatureDefs = [model.buffers[0]], []
    new.metadata, new.metadataBuffer = [], []
    remap, tensors, inputs = {}, [], []
    for t in [t for op in ops for t in list(op.inputs) + list(op.outputs) if t >= 0]:
        if t in remap:
            continue
        tensor = copy.copy(graph.tensors[t])
        if _is_constant(model, tensor):
            new.buffers.append(model.buffers[tensor.buffer])
            tensor.buffer = len(new.buffers) - 1
        else:
            tensor.buffer = 0
            if t not in produced:
                inputs.append(len(tensors))
        remap[t] = len(tensors)
        tensors.append(tensor)
    sub = copy.copy(graph)
    sub.operators = []
    for op in ops:
        single = copy.copy(op)
        single.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
        single.outputs = [remap[o] for o in op.outputs]
        single.intermediates = []
        sub.operators.append(single)
    sub.tensors, sub.inputs, sub.outputs = tensors, inputs, [remap[o] for o in ops[-1].outputs]
    new.subgraphs = [sub]
    return bytes(fb.convert_object_to_bytearray(new))


def op_groups(model):
    """[(op indices, label)]: every op of subgraph 0 alone, except a `FUSED_INTO_NEXT` op whose
    only consumer is a convolution, which goes with it ("PAD+CONV_2D")."""
    fb = _flatbuffer_utils()
    graph = model.subgraphs[0]
    names = [fb.opcode_to_name(model, op.opcodeIndex) for op in graph.operators]
    consumers = collections.defaultdict(list)
    for index, op in enumerate(graph.operators):
        for t in op.inputs:
            consumers[t].append(index)
    groups, taken = [], set()
    for index, op in enumerate(graph.operators):
        if index in taken:
            continue
        users = consumers[op.outputs[0]]
        if names[index] in FUSED_INTO_NEXT and len(users) == 1 and names[users[0]] in CONVOLUTIONS:
            groups.append(([index, users[0]], f"{names[index]}+{names[users[0]]}"))
            taken.add(users[0])
        else:
            groups.append(([index], names[index]))
    return groups


def single_op_models(content):
    """Yields (op indices, label, model bytes) for every op (or `op_groups` pair) of `content`."""
    model = _flatbuffer_utils().read_model_from_bytearray(bytearray(content))
    for indices, label in op_groups(model):
        yield indices, label, sub_model(model, indices)


def time_invoke(interpreter, runs, warmup=3):
    """Median seconds of `runs` invocations after `warmup`."""
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _is_delegated(interpreter):
    return any(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())  # noqa


def profile(content, num_threads=1, runs=30, use_xnnpack=True, seed=0):
    """Per-op timing of `content`.

    Returns:
        (rows, whole): rows ``{"index", "op", "ms", "delegated", "shape"}`` in graph order, and
        the whole model's median time in ms.
    """
    rows = []
    for indices, name, single in single_op_models(content):
        interpreter = make_interpreter(single, num_threads, use_xnnpack)
        set_random_input(interpreter, seed)
        ms = 1e3 * time_invoke(interpreter, runs)
        output = interpreter.get_output_details()[0]
        rows.append({"index": indices[-1], "op": name, "ms": ms,
                     "delegated": _is_delegated(interpreter),
                     "shape": tuple(int(d) for d in output["shape"])})
    whole = make_interpreter(content, num_threads, use_xnnpack)
    set_random_input(whole, seed)
    return rows, 1e3 * time_invoke(whole, runs, warmup=5)


def by_op_type(rows):
    """{(op type, delegated): (count, total ms)}, largest total first."""
    totals = collections.defaultdict(lambda: [0, 0.0])
    for row in rows:
        entry = totals[(row["op"], row["delegated"])]
        entry[0] += 1
        entry[1] += row["ms"]
    return dict(sorted(((k, tuple(v)) for k, v in totals.items()), key=lambda kv: -kv[1][1]))


def format_profile(rows, whole, top=20):
    """A Markdown summary: time by op type, then the `top` slowest ops."""
    total = sum(r["ms"] for r in rows)
    by_type = [{"op": op, "xnnpack": "yes" if delegated else "no", "count": count, "ms": ms,
                "share": 100 * ms / total}
               for (op, delegated), (count, ms) in by_op_type(rows).items()]
    slowest = [{**row, "xnnpack": "yes" if row["delegated"] else "no"}
               for row in sorted(rows, key=lambda r: -r["ms"])[:top]]
    return "\n".join([
        f"whole model {whole:.2f} ms; sum of {len(rows)} single-op models {total:.2f} ms", "",
        markdown_table(by_type, (("op", "op", "{}"), ("XNNPACK", "xnnpack", "{}"),
                                 ("count", "count", "{}"), ("ms", "ms", "{:.3f}"),
                                 ("share", "share", "{:.1f} %"))), "",
        markdown_table(slowest, (("#", "index", "{}"), ("op", "op", "{}"),
                                 ("output", "shape", "{}"), ("XNNPACK", "xnnpack", "{}"),
                                 ("ms", "ms", "{:.3f}")))])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=".tflite file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--no-xnnpack", action="store_true", help="builtin kernels only")
    args = parser.parse_args(argv)
    with open(args.model, "rb") as f:
        content = f.read()
    rows, whole = profile(content, args.threads, args.runs, not args.no_xnnpack)
    print(format_profile(rows, whole, args.top))


if __name__ == "__main__":
    main()
