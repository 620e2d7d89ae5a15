"""keras_swiftformer.imagenet: class names, decoding, the evaluation transform."""

import numpy as np
import pytest
from PIL import Image

from keras_swiftformer.imagenet import (
    class_index,
    class_names,
    decode_predictions,
    eval_transform,
    preprocess_input,
)
from keras_swiftformer.images import list_images, load_images
from tests.support import SAMPLES


def test_class_names_agree_with_the_sample_file_names():
    names = class_names()
    assert len(names) == 1000 and len(set(s for s, _ in class_index())) == 1000
    for path in list_images(SAMPLES):
        index, synset = path.split("/")[-1].split("_")[:2]
        assert class_index()[int(index)][0] == synset


def test_decode_predictions_orders_by_score():
    preds = np.zeros((2, 1000))
    preds[0, 281], preds[0, 1], preds[1, 999] = 0.9, 0.1, 1.0
    top = decode_predictions(preds, top=2)
    assert top[0][0] == ("n02123045", "tabby", 0.9) and top[0][1][1] == "goldfish"
    assert top[1][0][0] == "n15075141"
    with pytest.raises(ValueError, match="1000"):
        decode_predictions(np.zeros((1, 10)))


def test_eval_transform_resizes_shorter_side_then_crops():
    image = Image.fromarray(np.tile((np.arange(400) % 256).astype(np.uint8)[None, :, None],
                                    (300, 1, 3)))
    out = eval_transform(image, 224, crop_pct=0.875)  # 300x400 -> 256x341 -> 224x224
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    assert eval_transform(image, (128, 192), crop_pct=1.0).shape == (128, 192, 3)
    with pytest.raises(ValueError, match="crop_pct"):
        eval_transform(image, 224, crop_pct=1.5)


def test_eval_transform_squash_resizes_the_whole_image():
    """crop_mode="squash" (transformers' processor at crop_pct 1.0): every column of a 300x400
    gradient survives, squeezed to 224 columns; "center" loses the sides."""
    image = Image.fromarray(np.tile((np.arange(400) * 255 // 399).astype(np.uint8)[None, :, None],
                                    (300, 1, 3)))
    squash = eval_transform(image, 224, 1.0, crop_mode="squash", interpolation="bilinear")
    expected = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_array_equal(squash, expected)
    assert squash[0, 0, 0] < 2 and squash[0, -1, 0] > 253
    center = eval_transform(image, 224, 1.0)
    assert center[0, 0, 0] > 20 and center[0, -1, 0] < 235
    assert eval_transform(image, (96, 160), 0.8, crop_mode="squash").shape == (96, 160, 3)
    with pytest.raises(ValueError, match="crop_mode"):
        eval_transform(image, 224, crop_mode="border")
    with pytest.raises(ValueError, match="interpolation"):
        eval_transform(image, 224, interpolation="lanczos3")


def test_preprocess_input_and_folder_errors(tmp_path):
    x = np.full((1, 2, 2, 3), 255.0)
    np.testing.assert_array_equal(preprocess_input(x), x)
    np.testing.assert_allclose(preprocess_input(x, normalize=True)[0, 0, 0],
                               [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path)
    assert load_images(list_images(SAMPLES)[:3], size=64).shape == (3, 64, 64, 3)
