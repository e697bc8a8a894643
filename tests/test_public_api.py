"""The public surface: __all__ lists, @final classes, py.typed, and the core's imports."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from importlib import resources
from pathlib import Path
from types import ModuleType

import pytest

import donjon
import donjon.core
import donjon.testing

PUBLIC_MODULES = ["donjon", "donjon.core", "donjon.testing"]
CORE_DIR = Path(donjon.core.__file__).parent
# What the pure core may import besides the standard library.
CORE_MAY_IMPORT = ("donjon.core", "donjon.errors", "donjon.typing")


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__)
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_resolve(name: str) -> None:
    module = importlib.import_module(name)
    for attr in module.__all__:
        assert getattr(module, attr, None) is not None, f"{name}.{attr} is missing"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_") and not isinstance(value, ModuleType) and attr != "annotations"
    }
    assert public <= set(module.__all__), f"{name}: public but not in __all__"


def test_import_donjon_works_in_a_fresh_interpreter() -> None:
    code = "import donjon, donjon.core, donjon.testing; print(donjon.__version__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == donjon.__version__


def test_top_level_re_exports_are_the_core_objects() -> None:
    for name in ("KeyRing", "Secret", "TokenCodec", "Verdict", "VerifyResult", "SystemClock"):
        assert getattr(donjon, name) is getattr(donjon.core, name)


def test_py_typed_ships() -> None:
    marker = resources.files("donjon").joinpath("py.typed")
    assert marker.is_file()


@pytest.mark.parametrize(
    "cls",
    [
        donjon.KeyRing,
        donjon.TokenCodec,
        donjon.Secret,
        donjon.core.ClassKeys,
        donjon.core.SystemClock,
        donjon.testing.FrozenClock,
    ],
)
def test_public_classes_are_final(cls: type) -> None:
    assert getattr(cls, "__final__", False) is True


def _core_files() -> list[Path]:
    files = sorted(CORE_DIR.rglob("*.py"))
    assert files, "no source files found under donjon/core"
    return files


def _package_of(path: Path) -> str:
    parts = path.relative_to(CORE_DIR.parent.parent).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1]).removesuffix(".__init__")


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(path)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            if node.module is None:
                # `from .. import errors` imports submodules by name.
                found += [f"{base}.{alias.name}" for alias in node.names]
            else:
                found.append(base)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            found.append("<dynamic __import__>")
        elif isinstance(node, ast.Attribute) and node.attr == "import_module":
            found.append("<dynamic import_module>")
    return found


def _allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top == "donjon":
        return any(module == ok or module.startswith(ok + ".") for ok in CORE_MAY_IMPORT)
    return top in sys.stdlib_module_names


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: p.name)
def test_core_imports_only_errors_typing_and_stdlib(path: Path) -> None:
    modules = _imported_modules(path)
    bad = [m for m in modules if not _allowed(m)]
    assert bad == [], f"{path.name} imports {bad}"


def test_import_checker_resolves_relative_imports() -> None:
    keyring = CORE_DIR / "_keyring.py"
    assert _package_of(keyring) == "donjon.core"
    assert _package_of(CORE_DIR / "__init__.py") == "donjon.core"
    modules = _imported_modules(keyring)
    assert "donjon.errors" in modules
    assert "donjon.core._secret" in modules
    assert "hmac" in modules
    assert not _allowed("donjon.engine")
    assert not _allowed("donjon.stores.memory")
    assert not _allowed("redis")
    assert not _allowed("cryptography.hazmat")
    assert _allowed("donjon.typing")
    assert _allowed("__future__")


def test_core_loads_no_other_donjon_module_at_runtime() -> None:
    # A bare stand-in for the parent package: what donjon/__init__.py re-exports from
    # outer layers is not the core's doing, so it must not run here.
    code = (
        "import sys, types; before = set(sys.modules); "
        "pkg = types.ModuleType('donjon'); "
        f"pkg.__path__ = [{str(CORE_DIR.parent)!r}]; sys.modules['donjon'] = pkg; "
        "import donjon.core; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = out.stdout.split()
    assert "donjon.core" in loaded
    for module in loaded:
        top = module.split(".")[0]
        if top == "donjon":
            assert module == "donjon" or _allowed(module), module
        else:
            assert top in sys.stdlib_module_names or top.startswith("_"), module
