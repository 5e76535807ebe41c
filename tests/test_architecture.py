"""The house plan (docs/architecture.md), checked on the source: the import graph of
``custom_modules`` and ``data_prepare`` has no cycle, no module imports another's private
names, ``data_prepare`` uses only ``custom_modules.audio``, and nothing imports ``tests``.

Every import counts, including those inside functions (a deferred import hides a cycle
from the interpreter, not from the reader).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("custom_modules", "data_prepare")
# What data_prepare may use of custom_modules (signals and files).
DATA_PREPARE_MAY_USE = ("custom_modules.audio",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict:
    """Dotted name -> path of every module of the two packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports(name: str, path: Path) -> list:
    """``(imported module, imported names, line)`` for every import statement of a module."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative import
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            found.append((module, tuple(alias.name for alias in node.names), node.lineno))
    return found


def _edges() -> dict:
    """Module -> {imported module of the two packages: first line}."""
    graph = {}
    for name, path in MODULES.items():
        targets = {}
        for module, names, line in _imports(name, path):
            if module.split(".")[0] not in PACKAGES:
                continue
            # ``from package import submodule`` depends on the submodule.
            submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
            for target in submodules or [module]:
                if target != name:
                    targets.setdefault(target, line)
        graph[name] = targets
    return graph


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_is_read():
    graph = _edges()
    assert "custom_modules.training.brain" in graph
    assert "custom_modules.audio.files" in graph["custom_modules.training.brain"]


def test_no_import_cycle():
    assert _cycles(_edges()) == []


def test_cycle_detection_finds_a_cycle():
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [
        ["a", "b", "c"]
    ]


def test_no_private_name_crosses_a_module():
    crossing = []
    for name, path in MODULES.items():
        for module, names, line in _imports(name, path):
            if module.split(".")[0] not in PACKAGES or module == name:
                continue
            private = [n for n in [*module.split("."), *names] if _is_private(n)]
            if private:
                crossing.append(f"{path.relative_to(ROOT)}:{line} imports {module}: {private}")
    assert crossing == []


def test_data_prepare_uses_only_the_audio_layer():
    outside = []
    for name, targets in _edges().items():
        if not name.startswith("data_prepare"):
            continue
        for target, line in targets.items():
            allowed = target.startswith("data_prepare") or any(
                target == p or target.startswith(p + ".") for p in DATA_PREPARE_MAY_USE
            )
            if not allowed:
                outside.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}")
    assert outside == []


def test_the_audio_layer_imports_nothing_above_it():
    above = [
        f"{name} imports {target}"
        for name, targets in _edges().items()
        if name.startswith("custom_modules.audio")
        for target in targets
        if not target.startswith("custom_modules.audio")
    ]
    assert above == []


@pytest.mark.parametrize(
    "folder", ["custom_modules", "data_prepare", "benchmarks", "scripts", "recipes"]
)
def test_nothing_imports_the_tests(folder):
    importing = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module, _names, line in _imports(_module_name(path), path):
            if module.split(".")[0] in ("tests", "conftest"):
                importing.append(f"{path.relative_to(ROOT)}:{line}")
    assert importing == []


def _sys_path_edits(path: Path) -> list:
    """Lines of ``path`` that touch ``sys.path`` (``sys`` under any name, ``from sys import path``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = {"sys"}
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.asname for alias in node.names if alias.name == "sys" and alias.asname}
        elif isinstance(node, ast.ImportFrom) and node.module == "sys":
            lines |= {node.lineno for alias in node.names if alias.name == "path"}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id in names
        ):
            lines.add(node.lineno)
    return sorted(lines)


def _project_python_files() -> list:
    """Every ``.py`` file of the clone, outside hidden folders and the data/results outputs."""
    found = []
    for top in sorted(ROOT.iterdir()):
        if top.name.startswith(".") or top.name in ("data", "results"):
            continue
        found += [top] if top.suffix == ".py" else sorted(top.rglob("*.py")) if top.is_dir() else []
    return [p for p in found if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def _is_recipe_train_script(path: Path) -> bool:
    parts = path.relative_to(ROOT).parts
    return len(parts) == 3 and parts[0] == "recipes" and parts[2] == "train.py"


def test_sys_path_detection(tmp_path):
    source = tmp_path / "script.py"
    source.write_text(
        "import os\nimport sys\nimport sys as system\nfrom sys import path\n"
        "sys.path.insert(0, '.')\nsystem.path.append('.')\nos.path.join('a')\nprint(path)\n"
    )
    assert _sys_path_edits(source) == [4, 5, 6]


def test_the_project_files_are_found():
    files = {p.relative_to(ROOT).as_posix() for p in _project_python_files()}
    assert {"recipes/unet_tcm/train.py", "recipes/spex_plus/test.py", "tests/conftest.py",
            "custom_modules/training/brain.py", "scripts/fit_check.py"} <= files  # fmt: skip
    assert [p for p in _project_python_files() if _is_recipe_train_script(p)]


def test_only_recipe_train_scripts_edit_sys_path():
    """No ``sys.path`` edit anywhere but ``recipes/*/train.py`` (the package is importable)."""
    edits = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _project_python_files()
        if not _is_recipe_train_script(path)
        for line in _sys_path_edits(path)
    ]
    assert edits == []


def test_a_recipe_train_script_bootstraps_the_clone_in_one_commented_line_at_most():
    """``python recipes/<name>/train.py`` from a clone, uninstalled: one commented line."""
    for path in sorted((ROOT / "recipes").glob("*/train.py")):
        lines = _sys_path_edits(path)
        assert len(lines) <= 1, f"{path.relative_to(ROOT)}: {lines}"
        for line in lines:
            assert "#" in path.read_text().splitlines()[line - 1], f"{path}:{line}: say why"


# Modules whose examples are run by ``--doctest-modules`` (pyproject.toml): they keep having some.
WITH_EXAMPLES = (
    "custom_modules.audio.files", "custom_modules.audio.levels", "custom_modules.data.corruption",
    "custom_modules.data.sampling", "custom_modules.data.separation_data",
    "custom_modules.data.tse_data", "custom_modules.evaluation.bss_eval",
    "custom_modules.evaluation.wsdr", "custom_modules.models.conv_tasnet",
    "custom_modules.models.dcunet", "custom_modules.models.spex_plus",
    "custom_modules.models.spex_plus_blocks", "custom_modules.streaming.engine",
    "custom_modules.streaming.folding", "custom_modules.streaming.fused",
    "custom_modules.streaming.history", "custom_modules.streaming.native",
    "custom_modules.streaming.stft", "custom_modules.training.brain",
    "custom_modules.training.checkpoints", "custom_modules.training.experiment",
    "custom_modules.training.speaker_pretraining", "custom_modules.training.tse",
    "data_prepare.common",
)  # fmt: skip


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_module_has_examples(name):
    assert name in MODULES and ">>> " in MODULES[name].read_text(), name


# The layers of docs/architecture.md, bottom first: a layer imports only layers below it.
LAYERS = (
    "custom_modules.audio",
    "data_prepare",
    "custom_modules.models",
    "custom_modules.evaluation",
    "custom_modules.data",
    "custom_modules.training",
    "custom_modules.inference",
    "custom_modules.streaming",
)


def _layer(module: str):
    for index, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return index
    return None  # the package roots and the command shims (custom_modules.enhance)


def test_every_module_is_in_a_layer():
    outside = [m for m in MODULES if _layer(m) is None]
    assert sorted(outside) == ["custom_modules", "custom_modules.enhance", "custom_modules.export"]


def test_layers_import_only_layers_below():
    upward = [
        f"{name} imports {target}"
        for name, targets in _edges().items()
        for target in targets
        if _layer(name) is not None and _layer(target) is not None and _layer(target) > _layer(name)
    ]
    assert upward == []
