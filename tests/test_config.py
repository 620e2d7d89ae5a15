"""keras_swiftformer.config: the one contract a model, a .keras file and a checkpoint answer."""

import keras
import pytest

from keras_swiftformer import SwiftFormer, SwiftFormerConfig
from keras_swiftformer.checkpoints import read_checkpoint
from keras_swiftformer.config import MODEL_CONFIGS, parameter_roles
from tests.support import GOLDEN_CASES, TINY


def test_built_model_and_its_keras_file_give_the_same_config(tmp_path):
    model = SwiftFormer(**TINY, classes=10, token_weighting="ones", input_shape=(64, 64, 3))
    config = SwiftFormerConfig.from_model(model)
    assert (config.depths, config.widths, config.classes) == ((1, 1, 1, 1), (16, 16, 32, 32), 10)
    assert config.token_weighting == "ones" and config.include_preprocessing
    assert config.top == "logits" and config.classifier_activation == "softmax"
    assert config.variant is None and config.head_layers == ("head", "head_dist")
    assert config.stage_ends == tuple(f"stages-{i}-blocks-0-layer_scale_2-add" for i in range(4))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert SwiftFormerConfig.from_model(loaded) == config
    rebuilt = SwiftFormer(**config.builder_kwargs())
    assert SwiftFormerConfig.from_model(rebuilt) == config


@pytest.mark.parametrize("pooling, top", [("avg", "pool"), (None, "none")])
def test_headless_models_say_what_they_end_in(pooling, top):
    model = SwiftFormer("XS", include_top=False, pooling=pooling, include_preprocessing=False)
    config = SwiftFormerConfig.from_model(model)
    assert config.variant == "XS" and config.top == top and config.classes is None
    assert not config.include_preprocessing and config.head_layers == ()
    assert config.blocks(2) == tuple(f"stages-2-blocks-{j}" for j in range(6))


def test_checkpoint_config_matches_the_model_built_from_it():
    checkpoint = read_checkpoint(GOLDEN_CASES["hf_xs"][0])
    config = SwiftFormerConfig.from_checkpoint(checkpoint)
    assert config.variant == "XS" and config.token_weighting == "ones"
    assert (config.depths, config.widths) == (MODEL_CONFIGS["XS"]["depths"],
                                              MODEL_CONFIGS["XS"]["widths"])
    model = SwiftFormer(weights=checkpoint)
    built = SwiftFormerConfig.from_model(model)
    assert (built.depths, built.widths, built.token_weighting, built.classes) == (
        config.depths, config.widths, config.token_weighting, config.classes)


def test_other_models_are_refused():
    inputs = keras.Input((8, 8, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(4, 1)(inputs))
    with pytest.raises(ValueError, match="not a keras_swiftformer.SwiftFormer model"):
        SwiftFormerConfig.from_model(other)


def test_parameter_roles_follow_the_official_recipe():
    model = SwiftFormer(**TINY, classes=10)
    roles = parameter_roles(model)
    assert set(roles) == {v.path for v in model.trainable_weights}
    by_name = {path.split("/", 1)[0] + "/" + path.rsplit("/", 1)[-1]: role
               for path, role in roles.items()}
    assert by_name["stem-0/kernel"].clip_axes == (0, 1, 2) and by_name["stem-0/kernel"].decay
    assert not by_name["stem-0/bias"].decay and not by_name["stem-1/gamma"].decay
    assert by_name["stages-0-blocks-0-attn/w_g"].decay
    assert by_name["stages-0-blocks-0-attn/w_g"].clip_axes == ()
    assert by_name["head/kernel"].clip_axes == (0,)
