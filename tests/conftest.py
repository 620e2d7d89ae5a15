"""Fixtures and the `slow` marker; the shared helpers are in tests/support/__init__.py."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (minutes each on 2 cores)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow (or -m slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def golden_model():
    """golden_model(case) -> the Keras model of that checkpoint (logits, normalised input,
    any input size), built once per session."""
    from keras_swiftformer import SwiftFormer
    from tests.support import GOLDEN_CASES

    cache = {}

    def get(case):
        if case not in cache:
            checkpoint, _, variant = GOLDEN_CASES[case]
            cache[case] = SwiftFormer(variant, weights=str(checkpoint), input_shape=(None, None, 3),
                                      include_preprocessing=False, classifier_activation=None)
        return cache[case]

    return get
