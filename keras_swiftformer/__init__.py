"""SwiftFormer in Keras 3: layers, `keras.applications`-style builders and ImageNet helpers.

The names below are imported on first use (PEP 562), so a command's ``--help`` and the
pure-Python helpers (`keras_swiftformer.commands`, `files`, `config`) load without Keras or
TensorFlow. The custom layers are still registered whenever Keras is loaded (now, or later by
anyone), so ``import keras_swiftformer`` then ``keras.saving.load_model(...)`` works as before.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import typing

if typing.TYPE_CHECKING:  # what the lazy names are, for readers, linters and the import scan
    from keras_swiftformer.config import MODEL_CONFIGS, SwiftFormerConfig  # noqa: F401
    from keras_swiftformer.layers import (  # noqa: F401
        TOKEN_WEIGHTINGS,
        AdditiveTokenMixing,
        LayerScale,
        StochasticDepth,
    )
    from keras_swiftformer.model import (  # noqa: F401
        SwiftFormer,
        SwiftFormerBackbone,
        SwiftFormerL1,
        SwiftFormerL3,
        SwiftFormerS,
        SwiftFormerXS,
    )

__version__ = "0.1.0"

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "MODEL_CONFIGS": "config",
    "SwiftFormerConfig": "config",
    "TOKEN_WEIGHTINGS": "layers",
    "AdditiveTokenMixing": "layers",
    "LayerScale": "layers",
    "StochasticDepth": "layers",
    "SwiftFormer": "model",
    "SwiftFormerBackbone": "model",
    "SwiftFormerL1": "model",
    "SwiftFormerL3": "model",
    "SwiftFormerS": "model",
    "SwiftFormerXS": "model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


def _register_layers():
    importlib.import_module(f"{__name__}.layers")


#: Modules after whose import the custom layers are registered: Keras, and TensorFlow (which
#: imports Keras half-way through its own import, when the layers cannot load yet).
_HOOKED = {"keras", "tensorflow"}
_LOADING = []  # hooked modules being executed, outermost first


class _RegisteringLoader(importlib.abc.Loader):
    """The module's own loader, then the custom layers' registration."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        _LOADING.append(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            _LOADING.pop()
        try:
            _register_layers()
        except ImportError:  # one imports the other half-way: the outer one registers
            if not _LOADING:
                raise


class _OnKerasImport(importlib.abc.MetaPathFinder):
    """Registers the custom layers right after Keras (or TensorFlow) is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name not in _HOOKED:
            return None
        _HOOKED.discard(name)
        sys.meta_path.remove(self)  # the lookup below must not find us again
        try:
            spec = importlib.util.find_spec(name)
        finally:
            if _HOOKED:
                sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


if "keras" in sys.modules:
    _register_layers()
elif not any(isinstance(f, _OnKerasImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _OnKerasImport())
