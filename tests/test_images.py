"""keras_swiftformer.images: the same pixels as the reference transform for normal photos,
bounded work for degenerate and oversized images, one-line errors naming the file."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from keras_swiftformer.commands import UserError
from keras_swiftformer.images import (
    MAX_IMAGE_PIXELS,
    BadImageError,
    ImageSet,
    check_images,
    check_size,
    load_images,
)
from keras_swiftformer.resize import EXACT_RESIZE_PIXELS

PHOTOS = os.path.join(os.path.dirname(__file__), "data", "photos")
JPEGS = sorted(os.path.join(PHOTOS, n) for n in os.listdir(PHOTOS) if n.endswith(".jpg"))


def _reference(path, size, crop_pct, squash=False):
    """torchvision's Resize(int(size / crop_pct)) + CenterCrop(size) (or a squash resize),
    written out with plain PIL: the transform as it was before the bounded resize."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        short = int(size / crop_pct)
        if squash:
            new = (short, short)
        else:
            new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        image = image.resize(new, Image.Resampling.BICUBIC)
        left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
        return np.asarray(image.crop((left, top, left + size, top + size)), np.float32)


@pytest.mark.parametrize("size,crop_pct", [(224, 0.875), (256, 0.95), (96, 1.0), (64, 0.8)])
def test_committed_photos_get_exactly_the_reference_pixels(size, crop_pct):
    got = load_images(JPEGS, size, crop_pct)
    for path, image in zip(JPEGS, got):
        np.testing.assert_array_equal(image, _reference(path, size, crop_pct), err_msg=path)
    squash = load_images(JPEGS[:2], size, crop_pct, crop_mode="squash")
    for path, image in zip(JPEGS[:2], squash):
        np.testing.assert_array_equal(image, _reference(path, size, crop_pct, squash=True))


def _png(path, width, height, rows=None):
    """A real PNG of `width` x `height` grey pixels (its header says so; `rows`: pixel data,
    default a constant grey), written by hand so a huge declared size costs no memory here."""

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = rows if rows is not None else b"".join(b"\0" + b"\x80" * width
                                                 for _ in range(min(height, 50000)))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return str(path)


def test_a_1x40000_strip_loads_at_a_bounded_cost(tmp_path):
    path = _png(tmp_path / "strip.png", 1, 40000)
    assert os.path.getsize(path) < 1000
    # the full resize would be 256 x 10,240,000 pixels (gigabytes): only the crop is resized
    out = load_images([path], 224)
    assert out.shape == (1, 224, 224, 3)
    np.testing.assert_allclose(out, 128.0, atol=1)
    assert load_images([path], 224, crop_mode="squash").shape == (1, 224, 224, 3)


def test_the_bounded_resize_stays_within_a_grey_level_of_the_full_one(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2000, 4, 3), np.uint8)  # full resize: 256 x 128000
    path = str(tmp_path / "thin.png")
    Image.fromarray(pixels).save(path)
    full = Image.fromarray(pixels).resize((256, 128000), Image.Resampling.BICUBIC)
    assert 256 * 128000 > EXACT_RESIZE_PIXELS
    reference = np.asarray(full.crop((16, 63888, 240, 64112)), np.float32)
    got = load_images([path], 224, 0.875)[0]
    assert np.abs(got - reference).max() <= 1


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = _png(tmp_path / "bomb.png", 20000, 20000, rows=b"\0\0")  # 400 Mpx, PIL refuses
    big = _png(tmp_path / "big.png", 12000, 10000, rows=b"\0\0")  # 120 Mpx, over our cap
    assert 12000 * 10000 > MAX_IMAGE_PIXELS
    for path in (bomb, big):
        with pytest.raises(BadImageError, match=os.path.basename(path)) as info:
            load_images([path], 64)
        assert "\n" not in str(info.value) and "remove it" in str(info.value)
    found = ImageSet(["bomb.png", "big.png"], np.zeros(2, np.int32), ["a"], str(tmp_path))
    with pytest.raises(ValueError, match="big.png: is 12000x10000 pixels"):
        check_images(found, "header")


def _garbage_jpeg(path):
    data = open(JPEGS[0], "rb").read()
    start = data.find(b"\xff\xda") + 20  # keep the headers and the start of scan
    body = np.random.default_rng(0).integers(0, 256, len(data) - start, np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(data[:start] + body + b"\xff\xd9")
    return str(path)


def test_a_jpeg_with_a_garbage_body_is_caught_by_the_decode_check(tmp_path):
    folder = tmp_path / "cls"
    folder.mkdir()
    _garbage_jpeg(folder / "bad.jpg")
    Image.open(JPEGS[0]).save(folder / "good.jpg")
    found = ImageSet(["cls/bad.jpg", "cls/good.jpg"], np.zeros(2, np.int32), ["cls"],
                     str(tmp_path))
    assert len(check_images(found, "header")) == 2  # the markers are valid
    with pytest.raises(ValueError, match="cls/bad.jpg: cannot be decoded"):
        check_images(found, "decode")
    with pytest.warns(UserWarning, match="bad.jpg"):
        kept = check_images(found, "decode", on_bad="skip")
    assert kept.keys == ["cls/good.jpg"]
    with pytest.raises(BadImageError, match="bad.jpg cannot be decoded"):
        load_images([str(folder / "bad.jpg")], 64)


def test_not_an_image_is_one_line_naming_it(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello")
    with pytest.raises(BadImageError, match="notes.jpg is not an image"):
        load_images([str(path)], 64)


@pytest.mark.parametrize("size", [0, 100000, (64, 5000), (64,)])
def test_sizes_have_sane_bounds(size):
    with pytest.raises(UserError, match="must be 1 to 4096 pixels a side"):
        check_size(size)
    assert check_size(224) == (224, 224) and check_size((96, 160)) == (96, 160)
