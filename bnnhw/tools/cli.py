"""The ``bnnhw`` command: one subcommand per stage, and ``demo`` for the whole path.

Every subcommand mirrors a Python function (named in its help) and, with ``--json``, prints
exactly one JSON object on stdout. Errors in the input (a malformed model file, an impossible
folding, an unknown dataset or board) print ``bnnhw: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..boards.pll import clock_arg
from ..datasets import DATASETS, DatasetError, load
from ..devices import BOARDS, NEXTPNR_ROUTERS
from ..estimate import estimate, format_estimate, resolve_fold
from ..evaluate import TEST_IMAGES, check_limit, evaluate
from ..export import generate
from ..finn_binparams import import_binparams, parse_layers
from ..model import ModelError, load_model
from ..reference import infer
from ..train.presets import PRESETS


def limit_arg(text: str) -> int:
    """``--limit``: how many test images, 1 to 10,000."""
    try:
        return check_limit(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"limit must be an integer from 1 to {TEST_IMAGES} test images (got {text!r})"
        ) from None


def _output_file(path: Path) -> Path:
    """Refuse, before any work, an output file path that cannot be written.

    The file itself is written later (atomically); here its place is checked: not a folder,
    no file on the way to it, and a writable folder (the nearest existing one when the
    folder is still to be made).
    """
    if path.is_dir():
        raise ValueError(f"output {str(path)!r} is a folder; give a file name")
    _writable_folder(path.parent, path)
    return path


def _output_folder(path: Path) -> Path:
    """Refuse, before any work, an output folder that is a file or cannot be written."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"output {str(path)!r} is a file; give a folder")
    _writable_folder(path, path)
    return path


def _writable_folder(folder: Path, output: Path) -> None:
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"output {str(output)!r} lies under {str(existing)!r}, which is a "
                         f"file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output {str(output)!r}: folder {str(existing)!r} is not writable")


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    # The trainer compiles numba kernels on import; only `train` needs it.
    from ..train import train

    _output_file(args.out)
    result = train(args.dataset, args.arch, args.epochs, args.seed, args.out,
                   data_dir=args.data_dir, mode=args.mode,
                   input_threshold=args.input_threshold,
                   thermometer_levels=args.thermometer, progress=not args.json,
                   input_kind=args.input, augment=args.augment, lr=args.lr,
                   lr_end=args.lr_end, batch_size=args.batch_size, threads=args.threads,
                   checkpoint=args.checkpoint, resume=args.resume, stop_after=args.stop_after,
                   output_bn=args.output_bn, calibrate=args.calibrate, init=args.init)
    return {"model": str(args.out) if result.finished else None, "dataset": args.dataset,
            "arch": args.arch, "mode": args.mode, "epochs": args.epochs, "seed": args.seed,
            "epochs_done": len(result.history), "finished": result.finished,
            "float_test_accuracy": result.float_test_accuracy, "seconds": result.seconds,
            "calibration": result.calibration,
            "curves_png": str(result.curves_png) if result.curves_png else None}


def _cmd_import(args: argparse.Namespace) -> dict[str, Any]:
    source = args.source or ("finn-binparams" if args.model.is_dir() else "qonnx")
    binparams = (args.layers, args.inputs, args.outputs, args.input_threshold)
    if source == "finn-binparams":
        return _import_binparams(args)
    if any(v is not None for v in binparams):
        raise ValueError("--layers, --inputs, --outputs and --input-threshold belong to "
                         "--from finn-binparams")
    return _import_qonnx(args)


def _import_binparams(args: argparse.Namespace) -> dict[str, Any]:
    _output_file(args.out)
    missing = [f"--{n}" for n in ("layers", "inputs", "outputs", "input-threshold")
               if getattr(args, n.replace("-", "_")) is None]
    if missing:
        raise ValueError(f"--from finn-binparams needs {', '.join(missing)}")
    model = import_binparams(args.model, parse_layers(args.layers), args.inputs, args.outputs,
                             args.input_threshold)
    split = load(args.dataset, "test", args.data_dir)
    n = check_limit(args.limit)
    if model.quantizer.pixels != split.images.shape[1]:
        raise ValueError(f"--inputs {args.inputs} does not match the {split.images.shape[1]} "
                         f"pixels of {args.dataset}")
    classes, _ = infer(model, split.images[:n])
    accuracy = round(100 * float((classes == split.labels[:n]).mean()), 2)
    model.save(args.out)
    rows = [{"layer": i, "op": "MVTU", "shape": [layer.out_features, layer.in_features],
             "input": "bits", "folded": ("thresholds P > T -> P >= T - z + 1" if layer.kind ==
                                         "dense" else "per-class offsets" if layer.affine
                                         else "popcount argmax")}
            for i, layer in enumerate(model.layers)]
    result = {"model": str(args.out), "model_sha256": model.sha256(), "from": "finn-binparams",
              "topology": model.topology, "layers": rows,
              "input_coding": f"pixel >= {args.input_threshold}", "checked_images": n,
              "accuracy": accuracy}
    table = [f"{'layer':<6} {'shape':<12} folded",
             *(f"{r['layer']:<6} {'x'.join(map(str, r['shape'])):<12} {r['folded']}"
               for r in rows),
             f"input coding: pixel >= {args.input_threshold}",
             f"accuracy on {n} {args.dataset} test images: {accuracy} %; wrote {args.out} "
             f"({model.topology}, sha256 {model.sha256()[:16]})"]
    return result if args.json else result | {"table": "\n".join(table)}


def _import_qonnx(args: argparse.Namespace) -> dict[str, Any]:
    # onnx loads only for `import` (start-up time).
    from ..onnx_import import import_qonnx

    _output_file(args.out)
    if args.input_divisor <= 0 or not math.isfinite(args.input_divisor):
        raise ValueError(f"--input-divisor must be a positive number (got {args.input_divisor})")
    split = load(args.dataset, "test", args.data_dir)
    imported = import_qonnx(args.model, args.input_divisor,
                            check_images=split.images[:check_limit(args.limit)])
    imported.model.save(args.out)
    model = imported.model
    table = [f"{'layer':<6} {'op':<13} {'shape':<12} {'input':<13} folded",
             *(f"{str(r['layer']):<6} {r['op']:<13} {'x'.join(map(str, r['shape'])):<12} "
               f"{r.get('input', 'pixels'):<13} {r['folded']}" for r in imported.rows),
             f"input coding: {imported.input_coding}",
             f"checked on {imported.checked_images} {args.dataset} test images: "
             f"{imported.mismatches} class differences from the graph; wrote {args.out} "
             f"({model.topology}, sha256 {model.sha256()[:16]})"]
    result = {"model": str(args.out), "model_sha256": model.sha256(),
              "topology": model.topology, "layers": imported.rows,
              "input_coding": imported.input_coding,
              "checked_images": imported.checked_images, "mismatches": imported.mismatches}
    return result if args.json else result | {"table": "\n".join(table)}


def _cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    result = evaluate(args.model, args.dataset, args.limit, args.data_dir)
    if not args.json:
        result.pop("confusion")
    return result


def _folding(args: argparse.Namespace, model: Any) -> Any:
    """``--fold`` (with ``auto``, ``--board`` and ``--target-fps``) as a Folding."""

    return resolve_fold(args.fold, model, args.board, args.target_fps)


def _cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    model = load_model(args.model)
    return generate(model, _output_folder(args.out), _folding(args, model))


def _cmd_sim(args: argparse.Namespace) -> dict[str, Any]:
    # The simulation flow (cocotb) loads only for `sim`.
    from ..sim import run_sim

    fold = (_folding(args, load_model(args.model)) if args.fold is not None or args.target_fps
            else None)
    return run_sim(args.model, dataset=args.dataset, limit=args.limit,
                   simulator=args.simulator, fold=fold, waves=args.waves,
                   data_dir=args.data_dir, images=args.images)


def _cmd_build(args: argparse.Namespace) -> dict[str, Any]:
    # The board flow (amaranth, amaranth-boards) loads only for board commands.
    from ..boards.build import build

    model = load_model(args.model)
    fold = _folding(args, model) if args.fold is not None or args.target_fps else None
    return build(model, args.board, _output_folder(args.out), fold=fold,
                 program=args.program, clock_mhz=args.clock_mhz, router=args.router)


def _cmd_estimate(args: argparse.Namespace) -> dict[str, Any]:
    model = load_model(args.model)
    folding = _folding(args, model) if args.fold is not None or args.target_fps else None
    result = estimate(model, args.board, folding)
    return result.to_dict() | ({} if args.json else {"table": format_estimate(result)})


def _cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    # matplotlib loads only for `bench` (start-up time).
    from .benchmarks import write_benchmarks

    result = write_benchmarks(args.root, anchors=args.anchors, run=args.run,
                              data_dir=args.data_dir)
    if args.json:
        result.pop("table")
    else:
        result["table"] = "\n".join(["wrote " + path for path in result["written"]])
    return result


def _cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    # matplotlib loads only for `report` (start-up time).
    from .report import write_report

    return write_report(args.model, _output_file(args.out), board=args.board, fold=args.fold,
                        target_fps=args.target_fps, training_json=args.training,
                        build_json=args.build, dataset=args.dataset, limit=args.limit,
                        data_dir=args.data_dir)


def _cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    # The board flow (amaranth, amaranth-boards) loads only for board commands.
    from ..boards.client import run

    return run(args.port, args.dataset, args.limit, model=args.model, mode=args.mode,
               baud=args.baud, data_dir=args.data_dir, progress=not args.json)


def _cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    # The whole flow loads only for `demo`.
    from .demo import run_demo

    return run_demo(out_dir=_output_folder(args.out), dataset=args.dataset, arch=args.arch,
                    epochs=args.epochs, sim_images=args.sim_images, data_dir=args.data_dir,
                    board=None if args.board == "none" else args.board)


class _HelpWithDefaults(argparse.HelpFormatter):
    """Help that shows each option's default, where it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text \
                and action.option_strings:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``bnnhw: error:`` line, like every other error."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("bnnhw").strip()
        self.exit(2, f"bnnhw: error: {command + ': ' if command else ''}{message} "
                     f"(see {self.prog} --help)\n")


def _fold_options(p: argparse.ArgumentParser, board: bool = True) -> None:
    """``--fold``, ``--target-fps`` and (with ``board``) ``--board`` of a command."""
    p.add_argument("--fold", help="PExSIMD per layer ('-' for a max-pool), e.g. "
                                  "16x49,16x32,16x32,10x32 or 16x3,-,16x16,-,1x25,1x1, "
                                  "'balanced[:LANES]' (default) or 'auto' (fit --board)")
    p.add_argument("--target-fps", help="with --fold auto: frames/s at the clock "
                                        "--clock-mhz auto picks, or 'max' (default)")
    if board:
        p.add_argument("--board", default="icebreaker",
                       help=f"board --fold auto fits: {', '.join(BOARDS)}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bnnhw", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action="version",
                        version=f"bnnhw {importlib.metadata.version('bnnhw')}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=_HelpWithDefaults)
        p.set_defaults(handler=handler)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--data-dir", help="folder with the IDX files (default: $BNNHW_DATA, "
                                          "else download to the cache)")
        return p

    for add_arguments in (_train_parser, _import_parser, _eval_parser, _generate_parser,
                          _sim_parser, _build_parser, _estimate_parser, _bench_parser,
                          _report_parser, _run_parser, _demo_parser):
        add_arguments(command)
    return parser


def _train_parser(command: Callable) -> None:
    """The ``train`` command's arguments."""
    p = command("train", _cmd_train, "train a BNN in numpy and write a model file "
                                     "(bnnhw.train.train)")
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="training data set")
    p.add_argument("--arch", default="sfc", help=f"preset: {', '.join(PRESETS)} (default: sfc)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the schedule")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, batches and augmentation (same seed, same weights)")
    p.add_argument("--mode", default="W1A1", help="W1A1 (exportable), W1A32 or FP32")
    p.add_argument("--input-threshold", type=float, help="fixed input threshold, e.g. 127.5")
    p.add_argument("--thermometer", type=int, help="thermometer code with this many levels")
    p.add_argument("--input", choices=("bits", "pixels8"), default="bits",
                   help="bits: quantized input (default); pixels8: the first layer reads the "
                        "8-bit pixels (W1A1)")
    p.add_argument("--augment", help="training augmentation, e.g. shift:2,flip (default none)")
    p.add_argument("--lr", type=float, help="first epoch's learning rate (preset default)")
    p.add_argument("--lr-end", type=float, help="last epoch's learning rate (preset default)")
    p.add_argument("--batch-size", type=int, help="mini-batch size (preset default)")
    p.add_argument("--threads", type=int, help="BLAS threads (default: the usable cores)")
    p.add_argument("--checkpoint", type=Path, metavar="DIR",
                   help="write the whole training state here after every epoch")
    p.add_argument("--resume", action="store_true", help="continue the run in --checkpoint")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop after N epochs of the schedule (resume later with --resume)")
    p.add_argument("--output-bn", action="store_true",
                   help="end in a batch norm per class (an exact integer affine in the model)")
    p.add_argument("--calibrate", type=int, metavar="N",
                   help="after the last epoch, recompute the batch-norm statistics exactly over "
                        "N training images (eval mode, no augmentation)")
    p.add_argument("--init", type=Path, metavar="DIR",
                   help="fine-tune: start from the weights in this checkpoint of the same "
                        "network (fresh optimizer, this run's learning rates)")
    p.add_argument("--out", type=Path, required=True, help="model file to write")


def _import_parser(command: Callable) -> None:
    """The ``import`` command's arguments."""
    p = command("import", _cmd_import, "import a QONNX (Brevitas/FINN) BNN, checked against "
                                       "the graph on the test set, or a FINN/BNN-PYNQ "
                                       "binparams folder, as a model file "
                                       "(bnnhw.onnx_import, bnnhw.finn_binparams)")
    p.add_argument("model", type=Path, help="the .onnx graph, or the binparams folder")
    p.add_argument("--from", dest="source", choices=("qonnx", "finn-binparams"),
                   help="input format (default: finn-binparams for a folder, else qonnx)")
    p.add_argument("--layers", help="finn-binparams: MWxMH:SIMDxPE per layer, comma-separated")
    p.add_argument("--inputs", type=int, help="finn-binparams: pixels before padding")
    p.add_argument("--outputs", type=int, help="finn-binparams: classes before padding")
    p.add_argument("--input-threshold", type=int,
                   help="finn-binparams: a pixel at or above this is an input bit 1")
    p.add_argument("--out", type=Path, required=True, help="model file to write")
    p.add_argument("--input-divisor", type=float, default=255.0,
                   help="the graph's input is pixel / this (255: images scaled to [0, 1])")
    p.add_argument("--dataset", choices=DATASETS, default="mnist",
                   help="test set the import is checked on")
    p.add_argument("--limit", type=limit_arg, help="check on the first N test images "
                                                   "(default all)")


def _eval_parser(command: Callable) -> None:
    """The ``eval`` command's arguments."""
    p = command("eval", _cmd_eval, "accuracy of a model file with the integer reference "
                                   "(bnnhw.evaluate.evaluate)")
    p.add_argument("model", type=Path, help="model file (.npz)")
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="test set")
    p.add_argument("--limit", type=limit_arg, help="first N test images (default all)")


def _generate_parser(command: Callable) -> None:
    """The ``generate`` command's arguments."""
    p = command("generate", _cmd_generate, "write the accelerator's Verilog and JSON sidecar "
                                           "(bnnhw.export.generate)")
    p.add_argument("model", type=Path, help="model file (.npz)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for bnnhw_top.v, bnnhw_top.json and bnnhw_top_mem/")
    _fold_options(p)


def _sim_parser(command: Callable) -> None:
    """The ``sim`` command's arguments."""
    p = command("sim", _cmd_sim, "simulate the Verilog with cocotb against the reference "
                                 "(bnnhw.sim.run_sim)")
    p.add_argument("model", type=Path, help="model file (.npz)")
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="test set")
    p.add_argument("--limit", type=limit_arg, default=100, help="first N test images")
    p.add_argument("--simulator", choices=("icarus", "verilator"), default="icarus",
                   help="Verilog simulator")
    p.add_argument("--images", type=Path, metavar="FILE",
                   help="your own images instead of the test set: .npy of uint8 (N, 28, 28) "
                        "or (N, 784), or a folder of 8-bit grayscale PNGs")
    _fold_options(p)
    p.add_argument("--waves", action="store_true", help="dump a waveform")


def _build_parser(command: Callable) -> None:
    """The ``build`` command's arguments."""
    p = command("build", _cmd_build, "build a bitstream for a board with yosys and nextpnr "
                                     "(bnnhw.boards.build.build)")
    p.add_argument("model", type=Path, help="model file (.npz)")
    p.add_argument("--board", required=True, help=", ".join(BOARDS))
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the bitstream, report.json, report.txt and build/")
    _fold_options(p, board=False)
    p.add_argument("--program", action="store_true", help="program the board after building")
    p.add_argument("--clock-mhz", type=clock_arg, default=None, metavar="F",
                   help="run from a PLL at up to F MHz, or 'auto': the clock the estimator "
                        "expects to meet timing (default: the board's oscillator)")
    p.add_argument("--router", choices=NEXTPNR_ROUTERS, default=None,
                   help="nextpnr's router (default router1; router2 for large ECP5 designs)")


def _estimate_parser(command: Callable) -> None:
    """The ``estimate`` command's arguments."""
    p = command("estimate", _cmd_estimate, "per-layer cycles, LUTs, flip-flops and RAM blocks "
                                           "without synthesis (bnnhw.estimate.estimate)")
    p.add_argument("model", type=Path, help="model file (.npz)")
    p.add_argument("--board", required=True, help=", ".join(BOARDS))
    _fold_options(p, board=False)


def _bench_parser(command: Callable) -> None:
    """The ``bench`` command's arguments."""
    p = command("bench", _cmd_bench, "regenerate BENCHMARKS.md, docs/benchmarks.json and the "
                                     "plots from docs/*.json "
                                     "(bnnhw.tools.benchmarks.write_benchmarks)")
    p.add_argument("--root", type=Path, default=Path("."), help="repository root")
    p.add_argument("--run", action="store_true",
                   help="rerun the cheap measurements first (reference on the test set)")
    p.add_argument("--anchors", type=Path,
                   help="reference Markdown whose published table becomes docs/anchors.json")


def _report_parser(command: Callable) -> None:
    """The ``report`` command's arguments."""
    p = command("report", _cmd_report, "write a self-contained HTML report of a model "
                                       "(bnnhw.tools.report.write_report)")
    p.add_argument("model", type=Path, help="model file (.npz)")
    p.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write")
    _fold_options(p, board=False)
    p.add_argument("--board", help="board of the estimate (default: the --build report's "
                                   "board, else icebreaker)")
    p.add_argument("--training", type=Path, help="training JSON (default: found in docs/)")
    p.add_argument("--build", type=Path, help="board build report JSON")
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="test set")
    p.add_argument("--limit", type=limit_arg,
                   help="test images for the confusion matrix (default all)")


def _run_parser(command: Callable) -> None:
    """The ``run`` command's arguments."""
    p = command("run", _cmd_run, "classify test images on a board over its UART "
                                 "(bnnhw.boards.client.run)")
    p.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB1")
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="test set")
    p.add_argument("--limit", type=limit_arg, default=100, help="first N test images")
    p.add_argument("--model", type=Path, help="model file: checks the board's identity and "
                                              "compares every answer with the reference")
    p.add_argument("--mode", choices=("raw", "bits"), default="raw",
                   help="send 8-bit pixels (raw) or the quantized bits (bits)")
    p.add_argument("--baud", type=int, default=1_000_000, help="UART rate of the build")


def _demo_parser(command: Callable) -> None:
    """The ``demo`` command's arguments."""
    p = command("demo", _cmd_demo, "train, evaluate, generate, simulate and build a default "
                                   "model (bnnhw.tools.demo.run_demo)")
    p.add_argument("--out", type=Path, default=Path("bnnhw-demo"),
                   help="folder for everything the demo writes")
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="data set")
    p.add_argument("--arch", default="sfc", help=f"preset to train: {', '.join(PRESETS)}")
    p.add_argument("--epochs", type=int, default=5, help="training epochs")
    p.add_argument("--sim-images", type=int, default=20, help="test images simulated")
    p.add_argument("--board", default="icebreaker",
                   help=f"board to build for at the end ({', '.join(BOARDS)}), or 'none' to "
                        f"skip the build")


def _print_human(result: dict[str, Any]) -> None:
    if "table" in result:
        print(result["table"])
        return
    width = max((len(k) for k in result), default=0)
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, list | dict):
            value = json.dumps(value)
        print(f"{key:<{width}}  {value}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bnnhw`` console command."""
    args = _parser().parse_args(argv)
    try:
        result = args.handler(args)
    except (ModelError, DatasetError, ValueError, TimeoutError, RuntimeError) as exc:
        print(f"bnnhw: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        text = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc
        print(f"bnnhw: error: {text}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        _print_human(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
