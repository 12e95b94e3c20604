"""Dependencies point one way (issue #15): the runtime side never imports the exporter, it imports nothing heavy at
package level, and bundles are opened one way (runtimes.factory, "auto" resolved in one place)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """Every module a file imports, wherever the import statement is (module level, functions, classes, try
    blocks), relative imports resolved against the file's package; plus import_module / __import__ of a literal."""
    pkg = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            out.append((node.lineno, mod))
            if not node.module:  # from . import x: x may be a module
                out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value))
    return out


def test_runtimes_never_import_the_exporter():
    files = sorted((ROOT / "runtimes").rglob("*.py"))
    assert len(files) > 20
    bad = [f"{p.relative_to(ROOT)}:{line}: {mod}" for p in files for line, mod in _imports(p)
           if mod == "exporter" or mod.startswith("exporter.")]
    assert not bad, "runtimes/ imports the exporter:\n" + "\n".join(bad)


def test_the_import_walk_sees_lazy_and_relative_imports():
    text = ("def f():\n    from exporter.load import load_base\n"
            "    import exporter.spec\n"
            "    __import__('exporter')\n"
            "    from ..manifest import load_manifest\n")
    mods = [m for _, m in sorted(_imports(ROOT / "runtimes" / "memory" / "probe.py", text))]
    assert mods == ["exporter.load", "exporter.spec", "exporter", "runtimes.manifest"]


def test_runtimes_package_imports_light():
    code = ("import sys, runtimes, runtimes.factory, runtimes.manifest, runtimes.errors; "
            "runtimes.open_bundle; "
            "heavy = sorted(m for m in ('torch', 'exporter', 'onnxruntime', 'executorch', 'transformers') "
            "if m in sys.modules); print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _manifest(fmt: str) -> SimpleNamespace:
    return SimpleNamespace(raw={"format": fmt})


@pytest.mark.parametrize("fmt,backend", [("executorch", "executorch"), ("both", "executorch"), ("onnx", "onnx")])
def test_auto_is_executorch_unless_the_bundle_is_onnx_only(fmt, backend):
    from runtimes.factory import resolve_backend

    assert resolve_backend(_manifest(fmt)) == backend
    assert resolve_backend(_manifest(fmt), "auto") == backend
    for explicit in ("executorch", "onnx"):  # an explicit choice is kept; the runtime says when the bundle lacks it
        assert resolve_backend(_manifest(fmt), explicit) == explicit


def test_factory_refuses_unknown_backends():
    from runtimes.factory import BACKEND_CHOICES, resolve_backend, runtime_class

    assert BACKEND_CHOICES == ("auto", "executorch", "onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend(_manifest("executorch"), "tflite")
    with pytest.raises(ValueError, match="backend must be one of"):
        runtime_class("auto")
    assert runtime_class("executorch").backend == "executorch" and runtime_class("onnx").backend == "onnx"


def test_backend_choice_is_the_factorys_in_every_cli():
    """memlora-run, memlora-eval and memlora-profile offer the factory's choices with the same default."""
    from runtimes.factory import BACKEND_CHOICES
    from runtimes.memory.eval import build_parser

    eval_backend = next(a for a in build_parser()._actions if a.dest == "backend")
    assert tuple(eval_backend.choices) == BACKEND_CHOICES and eval_backend.default == "auto"
    for mod in ("runtimes.cli", "runtimes.profiler.cli"):
        text = (ROOT / (mod.replace(".", "/") + ".py")).read_text()
        assert 'choices=list(BACKEND_CHOICES), default="auto"' in text, mod
