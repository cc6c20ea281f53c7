"""The floor plan of platform/linnaeus, pinned: which room may import which (docs/architecture.md).

Every import counts, at the top of a module or inside a function. A room that imports one it may not
(eval and serving each other, config the data plane, the model floor anything above it) fails here,
naming the module and the import; so does a new room that is not placed in the plan, a module that
reaches into another room's private names, and Ray where the house rules keep it out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "platform" / "linnaeus"

FLOOR = {"taxonomy", "storage", "images", "registry"}
# room -> the rooms it may import (besides itself). Reading down the list is reading up the building.
ALLOWED: dict[str, set[str]] = {
    "taxonomy": set(), "storage": set(), "images": set(), "registry": set(), "runtime": {"storage"},
    "text": {"taxonomy", "registry"},
    "clip": {"storage", "registry"},
    "runs": {"storage", "taxonomy"},
    "objectives": {"registry", "clip"},
    "config": FLOOR | {"text", "clip", "objectives"},
    "data": FLOOR | {"text", "clip", "config", "runtime"},
    "train": FLOOR | {"text", "clip", "objectives", "config", "runs", "data", "runtime"},
    "eval": FLOOR | {"text", "clip", "config", "runs", "data", "runtime"},
    "serving": FLOOR | {"text", "clip", "config"},
    "batch": FLOOR | {"text", "clip", "config", "data", "serving", "runtime"},
    "bench": FLOOR | {"text", "clip", "objectives", "config", "runs", "data", "train", "eval", "serving", "runtime"},
    "serve/": FLOOR | {"text", "clip", "config", "serving"},  # the Ray Serve application wraps serving only
}
# Plain torch or plain Python: models, objectives, text and the serving logic never import Ray.
NO_RAY = {"taxonomy", "storage", "images", "registry", "text", "clip", "objectives", "config", "runs", "serving"}


def room_of(path: Path) -> str:
    if path.is_relative_to(ROOT / "serve"):
        return "serve/"
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if rel.parts[0] != "__init__.py" else "(package)"


def imports(source: str) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import in `source`, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level > 0:  # checked below: relative imports are refused
            out.append(("." * node.level + (node.module or ""), [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
    return out


def linnaeus_rooms(module: str, names: list[str]) -> list[str]:
    """The rooms an import reaches: `linnaeus.eval.zeroshot` -> eval; `from linnaeus import x, y` -> x, y."""
    if module == "linnaeus":
        return names
    if module.startswith("linnaeus."):
        return [module.split(".")[1]]
    return []


def violations(room: str, where: str, source: str) -> list[str]:
    """What `source` (a module of `room`, shown as `where`) imports that the floor plan forbids."""
    out = []
    for module, names, line in imports(source):
        if module.startswith("."):
            out.append(f"{where}:{line} imports {module} relatively: write linnaeus.<room> so the plan can read it")
        for other in linnaeus_rooms(module, names):
            if other != room and other not in ALLOWED[room]:
                out.append(f"{where}:{line} imports linnaeus.{other} ({room} may import "
                           f"{sorted(ALLOWED[room]) or 'nothing of linnaeus'})")
        if room in NO_RAY and (module == "ray" or module.startswith("ray.")):
            out.append(f"{where}:{line} imports {module}: {room} is plain torch/Python, without Ray")
        if module.startswith("ray.train") and room not in ("train", "(package)"):
            out.append(f"{where}:{line} imports {module}: only linnaeus/train talks to ray.train")
    return out


def product_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "serve").glob("*.py"))


def test_every_room_imports_only_the_rooms_beneath_it():
    found = []
    for path in product_modules():
        found += violations(room_of(path), str(path.relative_to(ROOT)), path.read_text())
    assert not found, "\n".join(found)


def test_every_room_is_placed_in_the_floor_plan():
    rooms = {room_of(p) for p in product_modules()} - {"(package)"}
    assert rooms <= set(ALLOWED), f"place these in ALLOWED (and docs/architecture.md): {rooms - set(ALLOWED)}"
    assert not (ROOT / "platform" / "__init__.py").exists()  # it would shadow the stdlib `platform`


@pytest.mark.parametrize("room, source", [
    ("serving", "from linnaeus.eval import zeroshot"),  # the back-edges the architecture issue found
    ("eval", "from linnaeus.serving import towers"),
    ("config", "from linnaeus.data.images import DEFAULT_MAX_PIXELS"),
    ("config", "def f():\n    from linnaeus.train import float8"),
    ("eval", "from linnaeus.train.plan import CONFIG_NAME"),
    ("clip", "from linnaeus import config"),
    ("objectives", "import ray.train"),
    ("serving", "import ray"),
    ("serving", "from ..eval import zeroshot"),
])
def test_a_back_edge_is_caught_wherever_it_hides(room, source):
    assert violations(room, "x.py", source)


def test_no_module_takes_another_modules_private_names():
    found = []
    for path in [*product_modules(), *sorted((ROOT / "jobs").glob("*.py"))]:
        for module, names, line in imports(path.read_text()):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if module.startswith(("linnaeus", "serve")) and private:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {private} from {module}")
    assert not found, "\n".join(found)


def test_configs_and_the_data_plane_load_without_torch():
    """Every Ray worker that unpickles a config imports linnaeus.config: ingest's image workers must not pay
    for torch and open_clip (seconds per process), which the registries behind a recipe's checks bring."""
    probe = ("import sys, linnaeus.config, linnaeus.data.ingest, linnaeus.data.inputs; "
             "print(sorted(m for m in ('torch', 'open_clip', 'ray.train') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
