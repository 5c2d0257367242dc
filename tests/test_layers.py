"""No module imports from a layer above its own (README's "Code layout"); lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "agentlab"
# lowest first; "" is the small shared modules at src/agentlab/*.py (errors, config checks, JSONL, run-dir names, ...)
LAYERS = ("", "models", "eval", "feedback", "training", "retrieval", "tracking", "entry")
ENTRY_POINTS = frozenset({"run", "compare", "dashboard", "view"})


def layer(module: str) -> str | None:
    """The layer of an ``agentlab`` module (None for another package's)."""
    parts = module.split(".")
    if parts[0] != "agentlab":
        return None
    if len(parts) == 1:
        return ""
    if parts[1] in ENTRY_POINTS:
        return "entry"
    if (PACKAGE / parts[1]).is_dir() and parts[1] != "conf":
        return parts[1]
    return ""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) of every import in the file, at any depth; relative imports resolved."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            name = ".".join(p for p in (base, node.module or "") if p)
            found += (
                [(node.lineno, name)]
                if node.module
                else [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
            )
    return found


def upward_imports(package: Path = PACKAGE) -> list[str]:
    """Every import of a module from a layer above the importing module's, as ``module:line imports name``."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path)
        own = layer(module)
        if own not in LAYERS:
            problems.append(f"{module}: package {own!r} has no layer; add it to LAYERS")
            continue
        for line, name in _imports(path, module):
            theirs = layer(name)
            if theirs is not None and theirs not in LAYERS:
                problems.append(f"{module}:{line} imports {name} (package {theirs!r} has no layer)")
            elif theirs is not None and LAYERS.index(theirs) > LAYERS.index(own):
                problems.append(f"{module}:{line} imports {name} ({theirs or 'lowest'} is above {own or 'lowest'})")
    return problems


def test_no_module_imports_from_a_layer_above_its_own():
    problems = upward_imports()
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    """The check itself: an import inside a function and a relative one are both found."""
    models = tmp_path / "agentlab" / "models"
    models.mkdir(parents=True)
    (models / "__init__.py").write_text("")
    (models / "a.py").write_text(
        "def f():\n    from agentlab.eval.messages import x\n    from ..training import data\n"
    )
    assert _imports(models / "a.py", "agentlab.models.a") == [(2, "agentlab.eval.messages"), (3, "agentlab.training")]
    assert layer("agentlab.models.a") == "models" and layer("agentlab.jsonl") == "" and layer("agentlab.run") == "entry"
