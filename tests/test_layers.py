"""The layers point one way (core <- runtime <- train, export, eval, demo, adapt) and no module imports
itself round a loop: read from the source's import statements, so the rule stays true as code moves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "runtime", "train", "export", "eval", "demo", "adapt")
# What each package may import of cxr besides itself. cxr-adapt runs on the edge install: no
# training code (and so no TensorFlow) behind it.
ALLOWED = {"core": set(), "runtime": {"core"}, "adapt": {"core", "runtime"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return "cxr." + ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The cxr modules a file imports, at the top, in a function or for type checking alike."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("cxr.")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's own package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("cxr"):
                # "from . import archive" names a module; "from .x import name" names x.
                found |= {f"{base}.{alias.name}" for alias in node.names} if not node.module else {base}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(path): path for package in PACKAGES for path in (ROOT / package).glob("*.py")}
    return {name: {target for target in imports_of(path) if target in files} for name, path in files.items()}


def test_the_reader_sees_imports_of_every_kind(tmp_path: Path) -> None:
    source = ROOT / "runtime" / "predictor.py"
    assert {"cxr.runtime.imaging", "cxr.runtime.metadata", "cxr.core.errors"} <= imports_of(source)
    assert "cxr.runtime.archive" in imports_of(ROOT / "runtime" / "batch.py")  # from . import archive


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_lower_layers_import_nothing_above_them(package: str) -> None:
    allowed = {f"cxr.{name}" for name in ALLOWED[package] | {package}}
    wrong = {
        (module, target)
        for module, targets in graph().items()
        if module.split(".")[1] == package
        for target in targets
        if ".".join(target.split(".")[:2]) not in allowed
    }
    assert not wrong, f"{package} imports above its layer: {sorted(wrong)}"


def test_no_module_imports_itself_round_a_loop() -> None:
    edges = graph()
    state: dict[str, str] = {}
    loops: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                loops.append(path[path.index(target):] + [target] if target in path else [module, target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not loops, f"import cycles: {loops}"
