"""The import structure: packages point one way, no module circles, no test imports a test.

Every ``import`` in the repository's Python files is read with `ast` (function-level ones too)
and resolved to the repository's own modules; third-party imports are ignored.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Lower layers first: a package may import only from its own layer or lower ones.
LAYERS = ("keras_swiftformer", "converters", "android_bench", "benchmarks", "tests")
#: Who may import a layer's modules besides itself and higher layers: benchmarks are scripts
#: and tests are leaves, so only tests may import benchmarks (to check the reference model the
#: benchmarks use), and nothing imports a test.
IMPORTABLE_BY = {"benchmarks": ("benchmarks", "tests"), "tests": ("tests",)}


def _modules():
    """{dotted module name: path} of the repository's Python files."""
    found = {}
    for top in LAYERS:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name):
    """The longest repository module that `name` names or lies in; None for third-party."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _imports(module):
    """Repository modules that `module` imports anywhere in its file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from package import submodule`` imports the submodule; ``from module import
            # name`` the module itself.
            names = [f"{base}.{alias.name}" for alias in node.names
                     if f"{base}.{alias.name}" in MODULES] or [base]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _layer(module):
    return LAYERS.index(module.split(".")[0])


def test_the_scan_sees_the_imports_it_checks():
    assert "keras_swiftformer.layers" in GRAPH["keras_swiftformer.model"]
    assert "keras_swiftformer.checkpoints" in GRAPH["keras_swiftformer.weights"]
    assert any(m.startswith("keras_swiftformer") for m in GRAPH["converters.pipeline"])


def test_packages_import_only_downwards():
    wrong = []
    for module, targets in GRAPH.items():
        top = module.split(".")[0]
        for target in targets:
            target_top = target.split(".")[0]
            if _layer(target) > _layer(module):
                wrong.append(f"{module} -> {target} (a higher layer)")
            elif target_top in IMPORTABLE_BY and top not in IMPORTABLE_BY[target_top]:
                wrong.append(f"{module} -> {target} ({target_top} is imported by nothing)")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_test_imports_a_test_module():
    wrong = [f"{module} -> {target}" for module, targets in GRAPH.items()
             if module.startswith("tests.") for target in targets
             if target.rpartition(".")[2].startswith(("test_", "conftest"))]
    assert not wrong, "\n".join(sorted(wrong))


def _cycle_from(start):
    """A path start -> ... -> start through GRAPH, or None (iterative DFS)."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for target in GRAPH[node]:
            if target == start:
                return path + [start]
            if target not in seen:
                seen.add(target)
                stack.append((target, path + [target]))
    return None


@pytest.mark.parametrize("package", LAYERS[:3])
def test_no_module_imports_a_module_that_imports_it_back(package):
    """Function-level imports count: a circle that works only because one side imports late
    is still a circle."""
    cycles = []
    for module in GRAPH:
        if module.split(".")[0] != package:
            continue
        cycle = _cycle_from(module)
        if cycle is not None:
            cycles.append(" -> ".join(cycle))
    assert not cycles, "\n".join(cycles[:10])


#: The modules that define or parse layer names and checkpoint keys (the name contract).
NAME_HOMES = ("keras_swiftformer.config", "keras_swiftformer.mapping",
              "keras_swiftformer.checkpoints")
#: Role paths spelt out: the stem's and the stages' layers, in either spelling.
ROLE_LITERAL = ("stem.", "stem-", "stages.", "stages-")


def test_role_names_come_from_the_config():
    """Folding, export, training and the benchmarks ask `SwiftFormerConfig` (and
    `keras_swiftformer.config`'s names) for the stem and the stages; only the name contract's
    own modules spell them out. Docstrings and messages count too, except where they mention
    a path in prose between backquotes or in a help text (``stem,stages.0``)."""
    wrong = []
    for module, path in MODULES.items():
        if module in NAME_HOMES or module.startswith(("tests", "benchmarks")):
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                           ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if id(node) in docstrings or "`" in node.value or " " in node.value:
                continue
            if node.value.startswith(ROLE_LITERAL):
                wrong.append(f"{module}:{node.lineno}: {node.value!r}")
    assert not wrong, "\n".join(wrong)


def test_no_re_export_shims():
    """Every name has one home: library modules import names to use them, never to pass them
    on (no ``from ... import name  # noqa: F401`` outside a package's ``__init__``; an import
    for its side effect, such as registering layers, is fine)."""
    wrong = [f"{module}:{number}" for module, path in MODULES.items()
             if not module.startswith(("tests", "benchmarks")) and path.name != "__init__.py"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if line.lstrip().startswith("from ") and "noqa: F401" in line]
    assert not wrong, "\n".join(wrong)


#: Where a runtime's file suffix may be spelt or tested: the targets themselves, and the format
#: registry that names each target's suffix.
TARGET_HOMES = ("converters.targets", "converters.formats", "converters.litert",
                "converters.coreml")
#: Modules that still test a suffix themselves (other owners' work in progress): each must
#: still do so, so that the list only shrinks.
SUFFIX_PENDING = set()
SUFFIX_LITERALS = (".tflite", ".mlpackage")


def _code_strings(path):
    """(line, text) of every string constant of a file that is not a docstring."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_no_suffix_test_outside_the_targets():
    """Which runtime a file is for is its target's business (`converters.targets`): no
    ``.tflite`` / ``.mlpackage`` literal in library code elsewhere (messages and help texts,
    which contain spaces, aside)."""
    wrong = []
    for module, path in MODULES.items():
        if module.startswith(("tests", "benchmarks")) or module.startswith(TARGET_HOMES):
            continue
        for line, text in _code_strings(path):
            if " " not in text and any(s in text for s in SUFFIX_LITERALS):
                wrong.append(f"{module}:{line}: {text!r}")
    pending = {w.split(":")[0] for w in wrong} & SUFFIX_PENDING
    assert pending == SUFFIX_PENDING, f"no longer pending: {SUFFIX_PENDING - pending}"
    wrong = [w for w in wrong if w.split(":")[0] not in SUFFIX_PENDING]
    assert not wrong, "\n".join(wrong)


#: The ``keras.applications``-style builders take their documented keyword set.
#: (``builder`` is the closure `keras_swiftformer.model` names SwiftFormerXS, S, L1, L3.)
BUILDERS = ("SwiftFormer", "SwiftFormerXS", "SwiftFormerS", "SwiftFormerL1", "SwiftFormerL3",
            "SwiftFormerBackbone", "builder")
MAX_LINES, MAX_PARAMETERS = 500, 8
#: Functions still over the bound (other owners' work in progress): each must still be over,
#: so that the list only shrinks.
OVER_PENDING = set()
LIBRARIES = ("keras_swiftformer", "converters", "android_bench")


def test_modules_and_functions_stay_small():
    """No library module over 500 lines and no library function over 8 parameters (settings
    that travel together go in a frozen dataclass)."""
    wrong = []
    for module, path in MODULES.items():
        if not module.startswith(LIBRARIES):
            continue
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES:
            wrong.append(f"{module}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args
            names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs
                     if a.arg not in ("self", "cls")]
            if len(names) > MAX_PARAMETERS and node.name not in BUILDERS:
                wrong.append(f"{module}.{node.name}: {len(names)} parameters")
    pending = {w.split(":")[0] for w in wrong} & OVER_PENDING
    assert pending == OVER_PENDING, f"no longer over: {OVER_PENDING - pending}"
    wrong = [w for w in wrong if w.split(":")[0] not in OVER_PENDING]
    assert not wrong, "\n".join(sorted(wrong))


#: The export modules, which must not load the weights package (nor PyTorch).
EXPORT_MODULES = ("converters.litert", "converters.coreml", "converters.formats",
                  "converters.targets", "converters.model_card", "converters.report",
                  "converters.results")
WEIGHTS_PACKAGE = tuple(f"keras_swiftformer.{m}" for m in
                        ("sources", "weights", "hub", "checkpoints", "mapping"))


def test_export_does_not_import_the_weights_package():
    wrong = [f"{module} -> {target}" for module, targets in GRAPH.items()
             if module.startswith(EXPORT_MODULES) for target in targets
             if target.startswith(WEIGHTS_PACKAGE)]
    assert not wrong, "\n".join(sorted(wrong))
