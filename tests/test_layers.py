"""The import graph runs one way: configs < simulate < datasets < train < predict < the top (run, CLI).

Every module of the installed packages is parsed with `ast` (nothing is imported), and every
import of a stemdl module, wherever it stands (module top, function, `TYPE_CHECKING`), is an
edge. An edge from a lower layer to a higher one fails, naming the file, the line and both
modules. The config is the bottom layer and is imported at module top: a package that reaches
for it inside a function or under `TYPE_CHECKING` is hiding a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"configs": 0, "simulate": 1, "datasets": 2, "train": 3, "predict": 4, "testing": 6}
# TOP: stemdl.pipeline, stemdl.end_to_end, stemdl.report, the stemdl package itself. testing/ (the
# helpers of tests and benchmarks) sits above it, so no part of stemdl imports it.
TOP = 5
PACKAGES = tuple(LAYERS)
BARE = {*LAYERS, "pipeline", "end_to_end", "report"}  # must be imported as stemdl.<name>


def modules() -> list[tuple[Path, int]]:
    found = [(path, LAYERS[package]) for package in PACKAGES
             for path in sorted((ROOT / package).rglob("*.py"))]
    found += [(path, TOP) for path in sorted(ROOT.glob("*.py"))]
    return found


def layer_of(module: str) -> int | None:
    """The layer of an imported module name, None for anything that is not stemdl."""
    parts = module.split(".")
    if parts[0] != "stemdl":
        return None
    return LAYERS.get(parts[1], TOP) if len(parts) > 1 else TOP


def imports(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, module, at module top) of every import in `tree`."""
    top = {id(node) for node in getattr(tree, "body", [])}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            if node.module == "stemdl":  # `from stemdl import simulate`
                found += [(node.lineno, name, id(node) in top) for name in names]
            else:
                found.append((node.lineno, node.module, id(node) in top))
    return found


def test_every_layer_imports_only_itself_and_the_layers_below() -> None:
    upward, bare, hidden_configs = [], [], []
    checked = 0
    for path, layer in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(ROOT)
        for line, module, at_top in imports(tree):
            if module.split(".")[0] in BARE:
                bare.append(f"{where}:{line} imports {module} (not stemdl.{module})")
                continue
            target = layer_of(module)
            if target is None:
                continue
            checked += 1
            if target > layer:
                upward.append(f"{where}:{line} ({layer=}) imports {module} ({target=})")
            if module.startswith("stemdl.configs") and not at_top and layer < TOP:
                hidden_configs.append(f"{where}:{line} imports {module} inside a block")
    assert checked > 100, checked  # the walk found the code
    assert not bare, "\n".join(bare)
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)
    assert not hidden_configs, "\n".join(hidden_configs)


# Beyond the order: train/ reads samples through datasets/ only (the whole run, which also
# simulates, is on top), and configs/ imports nothing else of stemdl.
ALLOWED = {"configs": {"configs"}, "train": {"configs", "datasets", "train"}}


def test_configs_stand_alone_and_train_goes_through_datasets() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module, _ in imports(ast.parse(path.read_text(encoding="utf-8"))):
                parts = module.split(".")
                if parts[0] == "stemdl" and len(parts) > 1 and parts[1] not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)
