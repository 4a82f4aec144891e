"""Every import of a stemdl module inside the package resolves by static analysis.

An IDE (or a reader with "go to definition") must find each `from stemdl.x import y` in the
package without running it: no `sys.path` edits, no names made up at import time. Jedi, the
static analyser behind IPython's and many editors' completion, is asked where each imported
name is defined, in the environment this test runs in (stemdl installed as the README says).
A name that does not exist must not resolve, so the check can fail.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import jedi

ROOT = Path(__file__).resolve().parents[1]
NOT_PACKAGE = {"tests", "benchmarks", "notebooks", "build", ".venv", "docs"}


def stemdl_imports() -> list[str]:
    """One import statement per (module, name) that the package's own code imports."""
    found: set[str] = set()
    for path in ROOT.rglob("*.py"):
        if NOT_PACKAGE & set(path.relative_to(ROOT).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == "stemdl":
                found |= {f"from {node.module} import {alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {f"import {alias.name}" for alias in node.names
                          if alias.name.split(".")[0] == "stemdl"}
    return sorted(found)


def unresolved(lines: list[str]) -> list[str]:
    environment = jedi.create_environment(sys.executable, safe=False)
    script = jedi.Script("\n".join(lines) + "\n", path=str(ROOT / "_static_probe.py"),
                         environment=environment)
    missing = []
    for number, line in enumerate(lines, start=1):
        definitions = script.goto(number, len(line) - 1, follow_imports=True)
        if not definitions or not all(d.module_path for d in definitions):
            missing.append(line)
    return missing


def test_every_stemdl_import_in_the_package_resolves_statically() -> None:
    lines = stemdl_imports()
    assert len(lines) > 200, len(lines)  # the walk found the code
    control = "from stemdl.datasets.store import NoSuchName"
    missing = unresolved([*lines, control])
    assert missing == [control], "imports an IDE cannot resolve:\n" + "\n".join(missing)
