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
    assert "keras_swiftformer.model" in GRAPH["keras_swiftformer"]
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
