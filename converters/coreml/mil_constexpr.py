"""Compressed weights of ML programs, decompressed by numpy (`converters.coreml.mil_eval`).

iOS 16 ops take their parameters as attributes: ``constexpr_affine_dequantize`` (int8 weights)
and ``constexpr_lut_to_dense`` (packed palette indices, one palette per tensor). iOS 18 ops take
inputs, which may be other constexpr ops' outputs: ``constexpr_lut_to_dense`` with grouped
palettes (a palette per block of channels) and sub-byte indices, ``constexpr_blockwise_shift_scale``
(int4 / int8 weights with a scale per block, and the per-channel scales coremltools applies to
palettes). Sub-byte tensors (``int4``, ``uint1`` ... ``uint6``) are stored packed, least
significant bit first.
"""

import numpy as np

#: MIL sub-byte data type (``MIL_pb2.DataType``) -> (bits, signed).
SUB_BYTE = {25: (4, True), 35: (4, False), 36: (2, False), 37: (1, False), 38: (6, False),
            39: (3, False)}


def unpack_indices(packed, nbits, count):
    """Palette indices packed least significant bit first (``constexpr_lut_to_dense``)."""
    bits = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[: nbits * count]
    weights = (1 << np.arange(nbits)).astype(np.uint16)
    return (bits.reshape(count, nbits) * weights).sum(axis=1)


def unpack_sub_byte(packed, data_type, count):
    """(count,) int8 (signed types) or uint8 values of a packed sub-byte tensor."""
    nbits, signed = SUB_BYTE[data_type]
    values = unpack_indices(packed, nbits, count).astype(np.int16)
    if signed:
        values = np.where(values >= 1 << (nbits - 1), values - (1 << nbits), values)
        return values.astype(np.int8)
    return values.astype(np.uint8)


def packed_bytes(data_type, count):
    """Bytes a packed sub-byte tensor of `count` elements takes."""
    return -(-count * SUB_BYTE[data_type][0] // 8)


def _dequantize(quantized_data, zero_point, scale, axis):
    """``scale * (q - zero_point)``, scale and zero point along `axis`, in scale's dtype."""
    out_dtype = np.asarray(scale).dtype
    shape = [1] * quantized_data.ndim
    if np.ndim(scale):
        shape[int(axis)] = -1
    s = np.reshape(scale, shape).astype(np.float32)
    z = np.reshape(zero_point, shape if np.ndim(zero_point) else [1] * quantized_data.ndim)
    return ((quantized_data.astype(np.float32) - z.astype(np.float32)) * s).astype(out_dtype)


def _blocks(small, shape):
    """`small` repeated along each axis to `shape` (each of its dims divides `shape`'s)."""
    small = np.asarray(small)
    for axis, (n, m) in enumerate(zip(small.shape, shape)):
        if m % n:
            raise ValueError(f"block dims {small.shape} do not divide {tuple(shape)}")
        small = np.repeat(small, m // n, axis=axis)
    return small


def _lut_to_dense(indices, lut, shape=None, vector_axis=None):
    """iOS 16 (`shape` given: packed indices, one (2**n,) palette) or iOS 18 (indices as a
    tensor, lut (G_0, ..., G_r-1, 2**n, 1): a palette per block of each axis)."""
    if shape is not None:
        nbits = int(np.log2(lut.size))
        count = int(np.prod(shape))
        return lut[unpack_indices(indices, nbits, count)].reshape(tuple(int(s) for s in shape))
    if lut.shape[-1] != 1 or vector_axis is not None:
        raise ValueError("vector palettes (lut entries of more than one value) are not supported")
    indices = np.asarray(indices).astype(np.int64)
    groups = lut.shape[:-2]
    blocks = [np.arange(n) // (n // g) for n, g in zip(indices.shape, groups)]
    where = np.ix_(*blocks)
    return lut[..., 0][(*where, indices)]


def _blockwise_shift_scale(data, scale, offset=None):
    """iOS 18 ``(data - offset) * scale``, `scale` / `offset` one value per block of `data`,
    in scale's dtype."""
    values = np.asarray(data, np.float32)
    if offset is not None:
        values = values - _blocks(offset, values.shape).astype(np.float32)
    out = values * _blocks(scale, values.shape).astype(np.float32)
    return out.astype(np.asarray(scale).dtype)


CONSTEXPR = {
    "constexpr_affine_dequantize": _dequantize,
    "constexpr_lut_to_dense": _lut_to_dense,
    "constexpr_blockwise_shift_scale": _blockwise_shift_scale,
}
