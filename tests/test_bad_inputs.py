"""A catalogue of bad inputs replayed against every ``bnnhw`` subcommand.

Each case builds its inputs in a fresh folder and runs the command in-process. Every one must
exit with status 2, print exactly one line, starting ``bnnhw: error:``, on stderr and nothing
on stdout, never suggest unpickling, and leave the folder exactly as it was (no partial
output, no temporary files). Run it alone with ``python -m pytest tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bnnhw.model import DenseLayer, InputQuantizer, Model
from bnnhw.tools.cli import main

CASES: dict[str, Callable[[Path], list[str]]] = {}


def case(name: str):
    def register(build: Callable[[Path], list[str]]):
        CASES[name] = build
        return build
    return register


def model_file(folder: Path, classes: int = 10, name: str = "m.npz") -> Path:
    rng = np.random.default_rng(0)
    model = Model(InputQuantizer.fixed(127.5),
                  (DenseLayer(rng.integers(0, 2, (16, 784)), rng.integers(380, 405, 16)),
                   DenseLayer(rng.integers(0, 2, (classes, 16)))))
    return model.save(folder / name)


def edited(folder: Path, edit: Callable[[dict], None]) -> Path:
    """A model file whose arrays went through ``edit`` (a dict of name -> array)."""
    path = model_file(folder)
    arrays = dict(np.load(path, allow_pickle=False))
    edit(arrays)
    np.savez(path, **arrays)
    return path


def header_text(folder: Path, old: str, new: str) -> Path:
    def edit(arrays):
        arrays["header"] = np.array(str(arrays["header"]).replace(old, new))
    return edited(folder, edit)


def with_member(folder: Path, name: str, data: bytes, drop: str | None = None) -> Path:
    path = edited(folder, lambda a: a.pop(drop) if drop else None)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return path


def eval_args(path: Path, *more: str) -> list[str]:
    return ["eval", str(path), *more]


# --- model files --------------------------------------------------------------------------

@case("npy file named .npz")
def _(d):
    path = d / "m.npz"
    with path.open("wb") as handle:
        np.save(handle, np.arange(4))
    return eval_args(path)


@case("garbage bytes")
def _(d):
    path = d / "m.npz"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    return eval_args(path)


@case("truncated model")
def _(d):
    path = model_file(d)
    path.write_bytes(path.read_bytes()[:-100])
    return eval_args(path)


@case("missing model")
def _(d):
    return eval_args(d / "absent.npz")


@case("model is a folder")
def _(d):
    (d / "m.npz").mkdir()
    return eval_args(d / "m.npz")


@case("Infinity in the header")
def _(d):
    return eval_args(header_text(d, '"pixels": 784', '"pixels": Infinity'))


@case("1e400 in the header")
def _(d):
    return eval_args(header_text(d, '"in_features": 784', '"in_features": 1e400'))


@case("NaN in the header")
def _(d):
    return eval_args(header_text(d, '"in_features": 16', '"in_features": NaN'))


@case("huge declared layer size")
def _(d):
    return eval_args(header_text(d, '"out_features": 16', '"out_features": 100000000000'))


@case("npy header declaring 100 GB")
def _(d):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<i4", "fortran_order": False, "shape": (25_000_000_000,)})
    return eval_args(with_member(d, "layer0.thresholds.npy", header.getvalue(),
                                 drop="layer0.thresholds"))


@case("zip bomb member")
def _(d):
    return eval_args(with_member(d, "padding.npy", b"\0" * (64 << 20)))


@case("oversized known member")
def _(d):
    return eval_args(with_member(d, "layer0.thresholds.npy", b"\0" * (8 << 20),
                                 drop="layer0.thresholds"))


@case("object array")
def _(d):
    def edit(arrays):
        arrays["header"] = np.array([{"evil": 1}], dtype=object)
    return eval_args(edited(d, edit))


@case("2-class model on MNIST")
def _(d):
    return eval_args(model_file(d, classes=2))


@case("corrupt data set")
def _(d):
    data = d / "data"
    data.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (data / name).write_bytes(b"\x1f\x8b not really gzip")
    return eval_args(model_file(d), "--data-dir", str(data))


# --- numbers and choices ----------------------------------------------------------------

for _limit in ("0", "-1", "10001", "ten"):
    CASES[f"eval --limit {_limit}"] = (lambda lim: lambda d: eval_args(
        model_file(d), "--limit", lim))(_limit)
    CASES[f"sim --limit {_limit}"] = (lambda lim: lambda d: [
        "sim", str(model_file(d)), "--limit", lim])(_limit)
    CASES[f"report --limit {_limit}"] = (lambda lim: lambda d: [
        "report", str(model_file(d)), "--out", str(d / "r.html"), "--limit", lim])(_limit)

for _clock in ("nan", "inf", "-5", "0", "fast", "1e9"):
    CASES[f"build --clock-mhz {_clock}"] = (lambda clk: lambda d: [
        "build", str(model_file(d)), "--board", "icebreaker", "--out", str(d / "b"),
        "--clock-mhz", clk])(_clock)


@case("unknown dataset")
def _(d):
    return eval_args(model_file(d), "--dataset", "cifar")


@case("unknown board (build)")
def _(d):
    return ["build", str(model_file(d)), "--board", "de10", "--out", str(d / "b")]


@case("unknown board (estimate)")
def _(d):
    return ["estimate", str(model_file(d)), "--board", "de10"]


@case("unknown simulator")
def _(d):
    return ["sim", str(model_file(d)), "--simulator", "xsim"]


@case("unknown subcommand")
def _(d):
    return ["frobnicate"]


@case("estimate --fold ''")
def _(d):
    return ["estimate", str(model_file(d)), "--board", "icebreaker", "--fold", ""]


@case("estimate --fold balanced:1000000")
def _(d):
    return ["estimate", str(model_file(d)), "--board", "icebreaker", "--fold",
            "balanced:1000000"]


@case("generate: PE does not divide")
def _(d):
    return ["generate", str(model_file(d)), "--out", str(d / "v"), "--fold", "3x16,2x16"]


@case("generate: --target-fps without auto")
def _(d):
    return ["generate", str(model_file(d)), "--out", str(d / "v"), "--target-fps", "1000"]


@case("build: model too large for the board")
def _(d):
    rng = np.random.default_rng(1)
    big = Model(InputQuantizer.fixed(127.5),
                (DenseLayer(rng.integers(0, 2, (2048, 784)), rng.integers(380, 405, 2048)),
                 DenseLayer(rng.integers(0, 2, (10, 2048)))))
    return ["build", str(big.save(d / "big.npz")), "--board", "icebreaker", "--out",
            str(d / "b")]


# --- output paths -----------------------------------------------------------------------

def a_file(d: Path) -> Path:
    path = d / "existing.txt"
    path.write_text("keep me\n")
    return path


@case("generate --out is a file")
def _(d):
    return ["generate", str(model_file(d)), "--out", str(a_file(d))]


@case("generate --out under a file")
def _(d):
    return ["generate", str(model_file(d)), "--out", str(a_file(d) / "v")]


@case("build --out is a file")
def _(d):
    return ["build", str(model_file(d)), "--board", "icebreaker", "--out", str(a_file(d))]


@case("train --out is a folder")
def _(d):
    return ["train", "--arch", "tfc", "--epochs", "1", "--out", str(d)]


@case("train --out under a file")
def _(d):
    return ["train", "--arch", "tfc", "--epochs", "1", "--out", str(a_file(d) / "m.npz")]


@case("report --out is a folder")
def _(d):
    return ["report", str(model_file(d)), "--out", str(d)]


@case("report --out under a file")
def _(d):
    return ["report", str(model_file(d)), "--out", str(a_file(d) / "r.html")]


@case("demo --out is a file")
def _(d):
    return ["demo", "--out", str(a_file(d)), "--board", "none"]


@case("bench --root without docs")
def _(d):
    return ["bench", "--root", str(d)]


@case("import: not an ONNX file")
def _(d):
    path = d / "g.onnx"
    path.write_bytes(b"\x08\x07 not protobuf \xff\xff")
    return ["import", str(path), "--out", str(d / "m.npz")]


@case("import --out is a folder")
def _(d):
    return ["import", str(d / "missing.onnx"), "--out", str(d)]


@case("import --input-divisor 0")
def _(d):
    path = d / "g.onnx"
    path.write_bytes(b"")
    return ["import", str(path), "--out", str(d / "m.npz"), "--input-divisor", "0"]


# --- ports ------------------------------------------------------------------------------

@case("run --port /dev/null")
def _(d):
    return ["run", "--port", "/dev/null", "--limit", "1"]


@case("run --port a regular file")
def _(d):
    return ["run", "--port", str(a_file(d)), "--limit", "1"]


@case("run --port a folder")
def _(d):
    return ["run", "--port", str(d), "--limit", "1"]


@case("run --port missing")
def _(d):
    return ["run", "--port", str(d / "ttyUSB9"), "--limit", "1"]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_clear_error(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = CASES[name](tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (name, code, err)
    assert out == "" and len(lines) == 1 and lines[0].startswith("bnnhw: error: "), err
    assert "Traceback" not in err and "allow_pickle" not in err
    assert snapshot(tmp_path) == before, f"{name}: files changed"


def test_catalogue_covers_every_subcommand(tmp_path):
    from bnnhw.tools.cli import _parser

    commands = set(_parser()._subparsers._group_actions[0].choices)
    covered = set()
    for name, build in CASES.items():
        folder = tmp_path / str(len(covered)) / name.replace(" ", "_").replace("/", "_")
        folder.mkdir(parents=True)
        covered.add(build(folder)[0])
    assert commands <= covered, f"no bad-input case for {sorted(commands - covered)}"
