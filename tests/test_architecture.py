"""The package's import graph, read with ``ast``: no cycles, no private names, training apart."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "pytest_hparams"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
TRAINING = f"{PACKAGE}.training"
#: What the training code must not reach: pytest itself and the pytest-facing modules.
PYTEST_FACING = ("plugin", "items", "marker", "sharing", "session", "report", "plots", "gate",
                 "xdist", "placement", "__main__")
PYTEST_DISTRIBUTIONS = ("pytest", "_pytest", "pluggy", "xdist")


@dataclass(frozen=True)
class Import:
    """One import statement's target as the importing module sees it."""

    line: int
    module: str  # the absolute module imported (for ``from m import x``: ``m`` or ``m.x``)
    names: tuple[str, ...] = ()  # the names taken from it (none when a module is imported)
    bound: str = ""  # the name an imported module is bound to


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return MODULES.get(module, Path()).name == "__init__.py"


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.AST) -> list[ast.stmt]:
    """Every statement, at module level or inside functions and classes, but not those under
    ``if TYPE_CHECKING:``, which never run."""
    found: list[ast.stmt] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                pending.extend(child.orelse)
                continue
            if isinstance(child, ast.stmt):
                found.append(child)
            pending.append(child)
    return found


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if _is_package(module) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(module: str) -> list[Import]:
    return _imports_in(module, MODULES[module].read_text())


def _imports_in(module: str, source: str) -> list[Import]:
    tree = ast.parse(source)
    found = []
    for node in _statements(tree):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name,
                             bound=alias.asname or alias.name.partition(".")[0])
                      for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            # ``from . import x`` imports the module ``x``; ``from .m import f`` the module m.
            submodules = [a for a in node.names if f"{source}.{a.name}" in MODULES]
            found += [Import(node.lineno, f"{source}.{a.name}", bound=a.asname or a.name)
                      for a in submodules]
            names = tuple(a.name for a in node.names if a not in submodules)
            if names:
                found.append(Import(node.lineno, source, names))
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (parents a submodule import loads aside)."""
    return {module: {i.module for i in imports_of(module) if i.module in MODULES}
            for module in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def _reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module ``start`` loads, directly or through others, with one module that imports
    it."""
    via: dict[str, str] = {}
    pending = [start]
    while pending:
        module = pending.pop()
        for target in graph[module]:
            if target != start and target not in via:
                via[target] = module
                pending.append(target)
    return via


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_uses(module: str, source: str) -> list[str]:
    """``from .m import _x``, and ``m._x`` on a package module ``m`` bound by an import."""
    found = []
    bound: set[str] = set()
    for i in _imports_in(module, source):
        if not i.module.startswith(PACKAGE) or i.module == module:
            continue
        found += [f"{i.line}: {name} from {i.module}" for name in i.names if _private(name)]
        if i.bound:
            bound.add(i.bound)
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in bound and _private(node.attr)):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another():
    private = [f"{MODULES[module].relative_to(ROOT.parent)}:{use}"
               for module in MODULES for use in _private_uses(module, MODULES[module].read_text())]
    assert private == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(TRAINING)))
def test_the_training_code_reaches_neither_pytest_nor_its_facing_modules(module):
    graph = _graph()
    loaded = {module: "", **_reachable(graph, module)}
    facing = {f"{PACKAGE}.{name}" for name in PYTEST_FACING}
    assert sorted(f"{m} (imported by {loaded[m]})" for m in loaded if m in facing) == []
    third_party = [f"{m} imports {i.module}" for m in loaded for i in imports_of(m)
                   if i.module.split(".")[0] in PYTEST_DISTRIBUTIONS]
    assert third_party == []


SAMPLE = """
from typing import TYPE_CHECKING

from .compat import _reason, same_value
from . import loop

if TYPE_CHECKING:
    from ..items import ItemSpec


def later():
    from ..session import SESSION_KEY
    return loop._train_one, SESSION_KEY
"""


def test_the_checks_see_what_they_check():
    """Function-level imports count and ``TYPE_CHECKING`` ones do not; private names are found
    both imported and reached through a module; a planted cycle is found (so the tests above
    cannot pass because they look at nothing)."""
    module = f"{TRAINING}.sample"
    targets = {i.module for i in _imports_in(module, SAMPLE)}
    assert targets == {"typing", f"{TRAINING}.compat", f"{TRAINING}.loop", f"{PACKAGE}.session"}
    assert _private_uses(module, SAMPLE) == [
        f"4: _reason from {TRAINING}.compat", "13: loop._train_one"]
    graph = _graph()
    assert f"{TRAINING}.fit" in graph[f"{PACKAGE}.sweep"]
    planted = {name: set(imported) for name, imported in graph.items()}
    planted[f"{TRAINING}.sources"].add(f"{TRAINING}.fit")
    assert _cycle(planted) is not None


HEAVY = ("torch", "numpy", "pandas", "scipy", "matplotlib", "hypothesis", "optuna", "lightning")


def test_only_the_xdist_module_talks_to_xdist_workers():
    for module, path in MODULES.items():
        if module == f"{PACKAGE}.xdist":
            continue
        text = path.read_text()
        for word in ("workerinput", "pytest_configure_node", "PYTEST_XDIST_WORKER"):
            assert word not in text, f"{module} uses {word}: go through {PACKAGE}.xdist"


def _loaded_after(code: str) -> set[str]:
    import subprocess
    import sys

    probe = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return set(filter(None, last.split(",")))


def test_loading_the_plugin_imports_nothing_heavy():
    assert _loaded_after("import pytest_hparams.plugin") == set()


def test_naming_fit_settings_imports_nothing_heavy():
    """The unread-key check names fit's settings in a test that may never have loaded torch."""
    code = "from pytest_hparams.settings import TrainSettings; TrainSettings.keys()"
    assert _loaded_after(code) == set()


def test_a_suite_without_hparams_tests_never_loads_torch(pytester):
    pytester.makepyfile(test_plain="def test_one():\n    assert 1 + 1 == 2\n")
    run = f"import pytest; pytest.main([{str(pytester.path)!r}, '-q', '-p', 'no:cacheprovider'])"
    without_plugin = _loaded_after(run.replace("'-q'", "'-q', '-p', 'no:hparams'"))
    assert _loaded_after(run) - without_plugin == set()
    assert "torch" not in _loaded_after(run)
