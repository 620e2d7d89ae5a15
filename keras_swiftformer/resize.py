"""Resize-then-crop at a cost that does not depend on the image's aspect ratio.

The evaluation transform resizes the shorter side, then crops the centre. For a degenerate
image (a 1x40000 strip) the full resize is gigapixels; `resize_and_crop` then resizes only the
rows and columns the crop reads.
"""

import math

#: Up to this many pixels the full resized image is made and cropped (exactly the reference
#: transform); above, only the crop is resized (bounded cost, within a grey level of it).
EXACT_RESIZE_PIXELS = 1 << 22


def resize_and_crop(image, resized, box, resample):
    """``image.resize(resized, resample).crop(box)`` at a cost that does not grow with the
    resized size: above `EXACT_RESIZE_PIXELS`, the rows the crop reads are cut out, resized
    across to the crop's columns, then down to its rows (each pass one axis of PIL's ``box=``,
    within a grey level of the full resize).

    Args:
        resized: (W, H) of the full resize; box: (left, top, right, bottom) in it.
    """
    new_w, new_h = resized
    if new_w * new_h <= EXACT_RESIZE_PIXELS:
        return image.resize(resized, resample).crop(box)
    width, height = image.size
    sx, sy = width / new_w, height / new_h
    left, top, right, bottom = box
    margin = 2 * max(sy, 1.0) + 2  # the widest filter's (bicubic's) reach, in source rows
    first = max(0, math.floor(top * sy - margin))
    last = min(height, math.ceil(bottom * sy + margin))
    rows = image.crop((0, first, width, last))
    rows = rows.resize((right - left, last - first), resample,
                       box=(left * sx, 0, min(right * sx, width), last - first))
    return rows.resize((right - left, bottom - top), resample,
                       box=(0, top * sy - first, right - left, min(bottom * sy, height) - first))
