"""Imports point one way: core -> gateware/export/estimate/import -> train/sim/boards -> tools.

Every import statement of every module (function-level ones included) is read with ``ast``;
a module may import its own layer or a lower one, and none imports upward.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"bnnhw": ROOT / "bnnhw", "bnnhw.train": ROOT / "train",
           "bnnhw.sim": ROOT / "sim", "bnnhw.boards": ROOT / "boards"}
LAYERS = [
    ("core", ("bnnhw", "bnnhw.model", "bnnhw.datasets", "bnnhw.packing", "bnnhw.reference",
              "bnnhw.passes", "bnnhw.folding", "bnnhw.devices", "bnnhw.evaluate")),
    ("hardware model", ("bnnhw.gateware", "bnnhw.export", "bnnhw.estimate",
                        "bnnhw.onnx_import", "bnnhw.finn_binparams")),
    ("flows", ("bnnhw.train", "bnnhw.sim", "bnnhw.boards")),
    ("tools", ("bnnhw.tools",)),
]

def layer_of(module: str) -> int:
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank is not None, f"module {module} is in no layer"
    return rank


def modules():
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts)), path


def imports(module: str, path: Path):
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            stem = (f"{base}.{node.module}" if node.module else base) if node.level \
                else node.module
            names = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "bnnhw" or name.startswith("bnnhw."):
                yield name


def known_module(name: str) -> str:
    """The longest prefix of ``name`` that is a module of the project."""
    all_modules = {m for m, _ in modules()}
    while name not in all_modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def test_imports_point_one_way():
    upward = set()
    for module, path in modules():
        for name in imports(module, path):
            target = known_module(name)
            if layer_of(target) > layer_of(module):
                upward.add((module, target))
    assert upward == set(), f"imports pointing up a layer: {sorted(upward)}"
