"""tools sit on the reader: they never import the pipeline or Beam (so no import cycle, and `inspect` starts fast)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cropshard.tools

TOOLS = Path(cropshard.tools.__file__).parent
FORBIDDEN = ("cropshard.pipeline", "apache_beam")


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` names anywhere in the file, function bodies included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_tools_module_imports_the_pipeline_or_beam() -> None:
    files = sorted(TOOLS.rglob("*.py"))
    assert {f.relative_to(TOOLS).as_posix() for f in files} >= {"inspect.py", "contact_sheet.py", "compare/cli.py", "compare/measure.py"}
    offending = {
        f"{f.relative_to(TOOLS)}: {name}"
        for f in files
        for name in imported_modules(f)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert not offending


def test_every_tools_module_imports_with_beam_unavailable() -> None:
    modules = sorted(
        "cropshard.tools." + ".".join(f.relative_to(TOOLS).with_suffix("").parts)
        for f in TOOLS.rglob("*.py")
        if f.name not in ("__init__.py", "__main__.py")
    )
    # None in sys.modules makes any `import apache_beam` raise ImportError.
    code = "import importlib, sys\nsys.modules['apache_beam'] = None\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print(sorted(m for m in sys.modules if m.startswith('cropshard.pipeline')))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert "cropshard.tools.compare.cli" in modules and "cropshard.tools.inspect" in modules
