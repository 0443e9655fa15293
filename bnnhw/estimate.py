# amaranth: UnusedElaboratable=no
"""Resource and throughput estimate of an accelerator on a board, without synthesis.

The estimate walks the stages of a constructed (never elaborated)
:class:`bnnhw.gateware.dataflow.Accelerator` and reads each stage's own ``cycles_per_frame``
and ``latency``; only resources are modelled here.

Memories (exact rules, checked against yosys' ``memory_libmap`` on both families)
--------------------------------------------------------------------------------
Every memory of depth ``D`` and width ``W`` (``D * W`` bits) goes to one of: block RAM, the
UP5K's SPRAM (only where :func:`bnnhw.devices.plan_spram` puts a layer, as the build does),
ECP5 distributed RAM (``DPR16X4``: 16 words of 4 bits), or soft logic.

* Block RAM count for a shape: ``B(D, W) = min_c ceil(D / d_c) * ceil(W / w_c)`` over the
  block's shapes ``(d_c, w_c)``: iCE40 EBR (4 Kbit) ``4096x1, 2048x2, 1024x4, 512x8,
  256x16``; ECP5 DP16KD (18 Kbit) ``16384x1, 8192x2, 4096x4, 2048x9, 1024x18, 512x36``; or,
  when fewer, ``floor(W / w) ceil(D / d)`` blocks of the widest shape ``(d, w)`` plus
  ``B(D, W mod w)`` for the rest of the columns (yosys packs a wide, deep memory into columns
  of the widest shape and one narrower column: 1280 x 80 bits is 2 x 3 blocks of 512x36 and
  one of 2048x9, 7 instead of 9).
* Cost comparison (yosys' costs: a block is 64 (iCE40) or 128 (ECP5); a logic ROM bit 1/16; a
  logic RAM bit 1; a ``DPR16X4`` 4): a synchronous ROM (weights, SPRAM tails) with
  ``D * W <= 16 * cost * B`` goes to logic, else to ``B`` blocks. A RAM (MVTU input
  buffers) on iCE40 goes to logic when ``D * W <= 64 * B``; on ECP5 to
  ``n = ceil(D / 16) * ceil(W / 4)`` ``DPR16X4`` when their cost ``4 n + W (ceil(D / 16) - 1)
  / 2`` (cells and read multiplexer) is below ``128 * B``, else to blocks. Memories read
  combinationally (thresholds) are always logic.
* A memory in logic costs ``W * ceil(D / 16)`` "LUT units" (a LUT4 is a 16x1 ROM) and, for a
  RAM, ``D * W`` flip-flops; a weight ROM of at most :data:`MERGED_ROM_DEPTH` words costs
  none, as yosys folds each of its bits into the LUT of the lane it feeds.

Logic model (coefficients fitted on real builds, :mod:`bnnhw.tools.estimate_calibrate`)
-------------------------------------------------------------------------------
Each stage yields features: ``lanes`` (XNOR + popcount inputs, ``PE * SIMD`` for an MVTU),
``pixel_lanes`` (``PE * SIMD`` again for an MVTU of 8-bit pixels, whose lanes add or subtract a
byte: fitted on the cbcnn-small OrangeCrab build, the one pixel layer in the fit),
``pe_bits`` (adder and comparator bits: ``PE * (S + T)`` with ``S`` score bits and ``T``
threshold bits), ``mem_units`` (LUT units of memories in logic, plus ``4`` per ``DPR16X4``),
``reg_bits`` (stream registers and memories in flip-flops), ``stages`` (1 per stage, its
control) and ``map_stages`` (1 per sliding-window or max-pool stage: their counters, window
registers and queue control, fitted on the conv builds). With the per-family coefficients
``c``::

    LUT_stage = c.lanes * lanes + c.pixel_lanes * pixel_lanes + c.pe_bits * pe_bits
                + c.mem_units * mem_units + c.stages * stages + c.map_stages * map_stages
    FF_stage  = f.lanes * lanes + f.pixel_lanes * pixel_lanes + f.pe_bits * pe_bits
                + f.reg_bits * reg_bits + f.stages * stages

and a fixed term per family for the UART, host link and top (``c.fixed``, ``f.fixed``; on
iCE40 its receive FIFO also takes one EBR). LUTs are nextpnr's count (``ICESTORM_LC`` on
iCE40, which packs a LUT and a flip-flop per cell, ``TRELLIS_COMB`` on ECP5).

A component may define ``estimate_features(family) -> dict`` returning these features
(plus optional ``bram``, ``spram``, ``weight_bits``) to be estimated; a stage whose component
is neither known here nor defines it is counted by its stream registers only and marked
``modelled=False``.

Clock (a model fitted on the same builds)
-----------------------------------------
nextpnr's critical path of a build is modelled as a period, per family with a term per board
(its speed grade and die)::

    T_ns = t_board + c.argmax_chain * max(0, PE_out - 2) + c.kluts * LUT / 1000
    fmax = 1000 / T_ns MHz

``PE_out`` is the PE count of the output layer: :class:`~bnnhw.gateware.labelselect.LabelSelect`
compares the ``PE_out`` scores of a word one after the other in one cycle. On the ULX3S, SFC
folded ``1x784,1x256,1x256,5x2`` reaches 47.6 MHz and nextpnr's critical path runs through
that chain, while TFC folded ``1x784,1x64,1x64,1x64`` (the same 784-lane first layer,
``PE_out = 1``) reaches 109 MHz: wide SIMD words by themselves do not cost fmax.
The second term is routing, which grows with the design (``LUT`` is this estimate's total).
When the exact design (model, board and folding) was built before, ``measured_fmax_mhz`` is
the lowest fmax of its builds and ``measured_luts`` the most LUTs any of them used; the fit
check of :func:`auto_folding` then takes the larger of the estimated and the measured LUTs.

A clock that should meet timing is ``safe_clock_mhz``: the measured fmax over
``1 + MEASURED_MARGIN`` if there is one, else the modelled
fmax over ``1 + margin``, the margin being the family's largest overestimate of fmax by the
model over the calibration builds, each predicted by a fit without it (leave one out).
``--clock-mhz auto`` builds at that clock.

Throughput: ``fps = f / cycles_per_frame`` at the board clock and at the modelled fmax.
``--target-fps`` and ``max`` rank foldings by the frame rate at the safe clock.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cache
from math import ceil
from pathlib import Path
from typing import Any

from .devices import (
    Board,
    Placement,
    get_board,
    place,
    plan_spram,
)
from .folding import (
    Folding,
    FoldingError,
    _default_pixels_per_word,
    divisors,
    parse_fold,
)
from .model import Model

__all__ = ["AUTO_LUT_SHARE", "COEFFICIENTS_PATH", "COST_MODELS", "FEATURES", "FMAX_FEATURES",
           "Estimate", "FitError", "MemoryMap", "StageEstimate", "auto_folding", "estimate",
           "estimate_fmax", "fmax_features", "format_estimate", "load_coefficients",
           "map_memory", "measured_design", "modelled_fmax", "resolve_fold"]

COEFFICIENTS_PATH = Path(__file__).with_name("estimate_coefficients.json")
"""Fitted coefficients (written by ``python -m bnnhw.tools.estimate_calibrate``)."""

FEATURES = ("lanes", "pixel_lanes", "pe_bits", "mem_units", "reg_bits", "stages",
            "map_stages")
LUT_FEATURES = ("lanes", "pixel_lanes", "pe_bits", "mem_units", "stages", "map_stages")
FF_FEATURES = ("lanes", "pixel_lanes", "pe_bits", "reg_bits", "stages")
FMAX_FEATURES = ("argmax_chain", "kluts")
"""Features of the period model (after the per-board term)."""
ARGMAX_FREE_COMPARES = 2
"""Compare-and-select steps of the label select that fit in a cycle at no cost to fmax."""
MEASURED_MARGIN = 0.03
"""Clock margin below a measured fmax: routed for another clock, the same design places
differently (lfc on the ULX3S: 79.21 MHz routed for 25 MHz, 72.44 MHz for 70 MHz)."""

MERGED_ROM_DEPTH = 8
"""Weight ROMs in logic this shallow (three address bits) cost no LUTs of their own: each
weight bit and the input bit it meets fit one LUT4, the lane's XNOR (or add/subtract
select), which ``lanes`` already counts."""

AUTO_LUT_SHARE = {"ice40": 0.75, "ecp5": 0.85}
"""Largest share of the device's LUTs an automatic folding may take (by estimate). On the
UP5K, cnv-micro folded ``4x3,-,4x36,-,1x25,1x1`` (estimated at 80 % of the LUTs, 3,981 logic
cells after packing) found no legal placement."""

BLOCK_SHAPES = {
    "ice40": ((4096, 1), (2048, 2), (1024, 4), (512, 8), (256, 16)),
    "ecp5": ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)),
}
BLOCK_COST = {"ice40": 64, "ecp5": 128}
DPR_COST = 4
DPR_MUX_COST = 0.5
"""Cost per output bit and extra 16-word bank of the read multiplexer of a deep distributed
RAM: with it, the 98 x 16 buffer (7 banks) goes to a DP16KD and the 128 x 8 one (8 banks) to
``DPR16X4``, as yosys maps them."""
TOP_BRAM = {"ice40": 1, "ecp5": 0}
"""Block RAMs of the board top outside the accelerator: the UART receive FIFO (15 x 8 bits)
is a RAM of 120 bits, above iCE40's 64-bit logic limit; on ECP5 it fits two ``DPR16X4``."""


class FitError(ValueError):
    """No folding fits the board; the message names the resource and the shortfall."""


@dataclass(frozen=True)
class MemoryMap:
    """Where one memory goes: ``bram`` blocks, ``dpr`` ECP5 ``DPR16X4`` cells, or logic
    (``logic_units`` LUT units, ``logic_ffs`` flip-flops)."""

    bram: int = 0
    dpr: int = 0
    logic_units: int = 0
    logic_ffs: int = 0


def _blocks(family: str, depth: int, width: int) -> int:
    shapes = BLOCK_SHAPES[family]
    single = min(ceil(depth / d) * ceil(width / w) for d, w in shapes)
    widest_depth, widest = shapes[-1]
    rest = width % widest
    if width < widest or not rest:
        return single
    columns = (width // widest) * ceil(depth / widest_depth)
    return min(single, columns + _blocks(family, depth, rest))


def map_memory(family: str, depth: int, width: int, *, writable: bool = False,
               sync_read: bool = True) -> MemoryMap:
    """How yosys maps a memory of ``depth`` words of ``width`` bits (rules in the module docs).

    Parameters
    ----------
    family : str
        ``"ice40"`` or ``"ecp5"``.
    depth, width : int
    writable : bool
        A RAM (one write port) rather than a ROM.
    sync_read : bool
        Read through a clocked port; a combinational read always goes to logic.
    """
    if family not in BLOCK_SHAPES:
        raise ValueError(f"unknown FPGA family {family!r} (choices: ice40, ecp5)")
    if depth < 1 or width < 1:
        return MemoryMap()
    bits = depth * width
    units = width * ceil(depth / 16)
    logic = MemoryMap(logic_units=units, logic_ffs=bits if writable else 0)
    if not sync_read:
        return logic
    blocks = _blocks(family, depth, width)
    block_cost = BLOCK_COST[family] * blocks
    if not writable:
        return logic if bits <= 16 * block_cost else MemoryMap(bram=blocks)
    if family == "ice40":
        return logic if bits <= block_cost else MemoryMap(bram=blocks)
    banks = ceil(depth / 16)
    dpr = banks * ceil(width / 4)
    dpr_cost = DPR_COST * dpr + DPR_MUX_COST * width * (banks - 1)
    if min(dpr_cost, block_cost) > bits:
        return logic
    return MemoryMap(dpr=dpr) if dpr_cost < block_cost else MemoryMap(bram=blocks)


@dataclass(kw_only=True)
class StageEstimate:
    """Estimate of one stage (or of the board top, ``name="top"``)."""

    name: str
    kind: str
    cycles_per_frame: int
    latency: int
    luts: float
    ffs: float
    bram: int
    spram: int
    weight_bits: int
    weights_in: str
    features: dict[str, float] = field(default_factory=dict)
    modelled: bool = True
    pe: int | None = None
    simd: int | None = None
    nf_sf: int | None = None


@dataclass(kw_only=True)
class Estimate:
    """The whole estimate: per-stage rows, totals, device capacity and throughput."""

    topology: str
    board: str
    family: str
    device: str
    folding: str
    stages: list[StageEstimate]
    spram_layers: list[int]
    cycles_per_frame: int
    ideal_cycles: int
    latency: int
    totals: dict[str, float]
    capacity: dict[str, int]
    clk_mhz: float
    fmax_mhz: float | None
    fps_at_board_clock: float
    fps_at_fmax: float | None
    measured_fmax_mhz: float | None = None
    measured_luts: int | None = None
    safe_clock_mhz: float | None = None
    fmax_features: dict[str, float] = field(default_factory=dict)

    @property
    def utilisation(self) -> dict[str, float]:
        """``used / total`` of every resource the device has."""
        return {k: self.totals[k] / v for k, v in self.capacity.items() if v}

    @property
    def efficiency(self) -> float:
        """``max_i NF_i * SF_i / cycles_per_frame``: 1 when an MVTU sets the pace."""
        return self.ideal_cycles / self.cycles_per_frame

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stages as dicts, plus utilisation and efficiency)."""
        out = asdict(self)
        out["utilisation"] = self.utilisation
        out["efficiency"] = self.efficiency
        return out


@cache
def _load(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def load_coefficients(path: str | Path | None = None) -> dict[str, Any]:
    """The fitted coefficients: ``{family: {"luts": {...}, "ffs": {...}, "fmax": {...}}}`` and
    ``"measured"`` (the designs built, see :func:`measured_design`).

    Raises
    ------
    FileNotFoundError
        If the file is missing, naming it and the command that writes it.
    """
    path = Path(path) if path is not None else COEFFICIENTS_PATH
    if not path.is_file():
        raise FileNotFoundError(f"estimator coefficients {path} not found (run python -m "
                                f"bnnhw.tools.estimate_calibrate)")
    return _load(str(path.resolve()))


@dataclass
class _StageCost:
    """The features and memory of one stage while its cost model fills them in."""

    family: str
    features: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FEATURES, 0.0))
    memory: dict[str, Any] = field(default_factory=lambda: {
        "bram": 0, "spram": 0, "weight_bits": 0, "weights_in": "-"})

    def add(self, m: MemoryMap) -> None:
        """Count a memory: its RAM blocks, or its LUTs and flip-flops when in logic."""
        self.memory["bram"] += m.bram
        self.features["mem_units"] += m.logic_units + DPR_COST * m.dpr
        self.features["reg_bits"] += m.logic_ffs


def _mvtu_cost(component: Any, cost: _StageCost, plan: Any) -> None:
    f, mem, family = cost.features, cost.memory, cost.family
    pe, simd, nf, sf = component.pe, component.simd, component.nf, component.sf
    f["lanes"] = pe * simd
    # An 8-bit pixel lane adds or subtracts a byte where an XNOR lane counts one bit.
    f["pixel_lanes"] = pe * simd if component.pixels8 else 0
    tbits = component.threshold_bits
    f["pe_bits"] = pe * (component.score_bits + tbits)
    f["reg_bits"] += component.out_width
    mem["weight_bits"] = component.mh * component.mw
    cost.add(map_memory(family, component.banks * component.depth, component.in_width,
                        writable=True))
    if tbits:
        cost.add(map_memory(family, nf, pe * tbits, sync_read=False))
    if plan is not None:
        mem["spram"] = plan.count
        cost.add(map_memory(family, plan.depth, plan.rom_bits))
        mem["weights_in"] = "SPRAM" + (" + ROM tail" if plan.rom_bits else "")
    else:
        maps = [map_memory(family, nf * sf, simd) for _ in range(pe)]
        for m in maps:
            if m.bram or nf * sf > MERGED_ROM_DEPTH:
                cost.add(m)
        mem["weights_in"] = ("logic" if not any(m.bram for m in maps) else
                             "EBR" if family == "ice40" else "DP16KD")


def _width_converter_cost(component: Any, cost: _StageCost, plan: Any) -> None:
    cost.features["reg_bits"] = component.out_width + (
        component.in_width if component.in_width > component.out_width else 0)


def _quantizer_cost(component: Any, cost: _StageCost, plan: Any) -> None:
    bits = component.pixels_per_word * component.levels
    cost.features["pe_bits"] = 8 * bits
    cost.features["reg_bits"] = bits


def _label_select_cost(component: Any, cost: _StageCost, plan: Any) -> None:
    # An output affine adds one product per lane, counted as its partial-product bits
    # (no affine build is among the calibration builds yet).
    cost.features["pe_bits"] = component.pe * (component.score_bits
                                               + component.in_bits * component.scale_bits)
    cost.features["reg_bits"] = component.out_width + component.score_bits
    if component.scale_bits:  # the affine stage's registered scores
        cost.features["reg_bits"] += component.pe * component.score_bits


def _sliding_window_cost(component: Any, cost: _StageCost, plan: Any) -> None:
    # Input queue (C bits), line buffer ((K-1)*C bits per column), K-1 column registers
    # and the held window; the held window leaves through an S-way slice multiplexer.
    h, w, c = component.in_shape
    k, width = component.kernel, component.out_width
    # The queue is an amaranth.lib.fifo.SyncFIFOBuffered: storage of depth - 1 words.
    cost.add(map_memory(cost.family, component.queue_depth - 1, c, writable=True))
    if k > 1:
        cost.add(map_memory(cost.family, w, (k - 1) * c, writable=True))
    cost.features["pe_bits"] = width * (component.slices - 1) / 2
    cost.features["reg_bits"] += (k - 1) * k * c + k * k * c + width
    cost.features["map_stages"] = 1.0


def _maxpool_cost(component: Any, cost: _StageCost, plan: Any) -> None:
    # One row of OR partials (C bits per output column), the left pixel and the output.
    h, w, c = component.in_shape
    cost.add(map_memory(cost.family, component.out_shape[1], c, writable=True))
    cost.features["reg_bits"] += 2 * c
    cost.features["map_stages"] = 1.0


COST_MODELS = {"MVTU": _mvtu_cost, "WidthConverter": _width_converter_cost,
               "InputQuantizer": _quantizer_cost, "LabelSelect": _label_select_cost,
               "SlidingWindowUnit": _sliding_window_cost, "MaxPool": _maxpool_cost}
"""The cost model of each gateware unit, by class name (a subclass inherits its base's):
``(component, cost, SPRAM plan or None)`` fills in the features the calibration fits and the
memory the unit takes. Keyed by name so that the gateware loads only when a design is
estimated."""


def _stage_features(component: Any, family: str, spram: dict[int, Any],
                    index: int | None) -> tuple[dict[str, float], dict[str, Any], bool]:
    """Features, memory placement and whether the component is modelled: its
    :data:`COST_MODELS` entry, an ``estimate_features(family)`` hook, or (unmodelled) its
    output register only."""
    cost = _StageCost(family)
    cost.features["stages"] = 1.0
    model = next((COST_MODELS[k.__name__] for k in type(component).__mro__
                  if k.__name__ in COST_MODELS), None)
    if model is not None:
        model(component, cost, spram.get(index))
        return cost.features, cost.memory, True
    hook = getattr(component, "estimate_features", None)
    if callable(hook):
        given = dict(hook(family))
        for key in ("bram", "spram", "weight_bits"):
            if key in given:
                cost.memory[key] = int(given.pop(key))
        cost.features.update({k: float(v) for k, v in given.items() if k in FEATURES})
        return cost.features, cost.memory, True
    # amaranth loads when a design is estimated, not with this module (CLI start-up time).
    from amaranth.hdl import Value

    cost.features["reg_bits"] = float(sum(
        len(Value.cast(getattr(component, port).payload))
        for port in ("o_stream",) if hasattr(component, port)))
    return cost.features, cost.memory, False


def _linear(coefs: dict[str, float], features: dict[str, float], names: tuple[str, ...]) -> float:
    return sum(coefs.get(n, 0.0) * features[n] for n in names)


def estimate(model: Model, board: str | Board, folding: Folding | str | None = None,
             coefficients: dict[str, Any] | None = None,
             spram_layers: tuple[int, ...] | None = None, *,
             placement: Placement | None = None) -> Estimate:
    """Estimate cycles, LUTs, flip-flops and RAM blocks of ``model`` folded by ``folding``.

    Parameters
    ----------
    model : Model
    board : str or Board
        A key of :data:`bnnhw.devices.BOARDS`.
    folding : Folding, str or None
        A folding, or a spec for :func:`bnnhw.folding.parse_fold`. None: the folding
        ``boards/build.py`` takes by default (balanced, or
        :func:`bnnhw.devices.spram_folding` when weights go to SPRAM).
    coefficients : dict or None
        Default: :func:`load_coefficients`.
    spram_layers : tuple of int or None
        Layers in SPRAM; None places them as :func:`bnnhw.devices.check_fits` does.
    placement : Placement or None
        A placement already checked by :func:`bnnhw.devices.place` (a build's); it replaces
        ``folding`` and ``spram_layers``.

    Returns
    -------
    Estimate

    Raises
    ------
    ValueError
        Unknown board, bad folding, or weights that fit no memory of the board (the
        messages of :func:`bnnhw.devices.check_fits`).
    """
    # The gateware loads when a design is estimated, not with this module (CLI start-up).
    from .gateware.dataflow import Accelerator

    info = board if isinstance(board, Board) else get_board(board)
    all_coefs = coefficients or load_coefficients()
    coefs = all_coefs[info.family]
    if placement is None:
        placement = place(model, info, folding, spram_layers)
    folding, layers = placement.folding, placement.spram_layers
    spram = {p.index: p for p in plan_spram(model, folding, layers)}
    accelerator = Accelerator(model, folding)
    rows = []
    for stage in accelerator.stages:
        index = stage.index if stage.kind in ("mvtu", "maxpool") else None
        f, mem, modelled = _stage_features(stage.component, info.family, spram, index)
        row = StageEstimate(
            name=stage.name, kind=type(stage.component).__name__,
            cycles_per_frame=stage.cycles_per_frame, latency=stage.latency,
            luts=_linear(coefs["luts"], f, LUT_FEATURES),
            ffs=_linear(coefs["ffs"], f, FF_FEATURES), bram=mem["bram"], spram=mem["spram"],
            weight_bits=mem["weight_bits"], weights_in=mem["weights_in"], features=f,
            modelled=modelled)
        if index is not None and folding.layers[index] is not None:
            row.pe, row.simd = folding.layers[index]
            row.nf_sf = stage.cycles_per_frame
        rows.append(row)
    rows.append(StageEstimate(name="top", kind="UART + link", cycles_per_frame=0, latency=0,
                              luts=coefs["luts"]["fixed"], ffs=coefs["ffs"]["fixed"],
                              bram=TOP_BRAM[info.family], spram=0, weight_bits=0,
                              weights_in="-"))
    totals = {key: sum(getattr(r, key) for r in rows)
              for key in ("luts", "ffs", "bram", "spram", "weight_bits")}
    capacity = {"luts": info.luts, "ffs": info.luts, "bram": info.bram_blocks,
                "spram": info.spram_bits // 262_144}
    cpf = accelerator.cycles_per_frame
    features = fmax_features(accelerator, totals["luts"])
    built = measured_design(all_coefs, info, model.sha256(), folding.spec)
    fmax, measured, safe = estimate_fmax(all_coefs, info, built, features)
    return Estimate(
        topology=model.topology, board=info.name, family=info.family, device=info.device,
        folding=folding.spec, stages=rows, spram_layers=list(layers), cycles_per_frame=cpf,
        ideal_cycles=max(folding.layer_cycles(model)), latency=accelerator.latency,
        totals=totals, capacity=capacity, clk_mhz=info.clk_hz / 1e6, fmax_mhz=fmax,
        fps_at_board_clock=info.clk_hz / cpf,
        fps_at_fmax=None if fmax is None else fmax * 1e6 / cpf, measured_fmax_mhz=measured,
        measured_luts=None if built is None else built["luts"], safe_clock_mhz=safe,
        fmax_features=features)


def fmax_features(accelerator: Any, luts: float) -> dict[str, float]:
    """The period model's features of a design with ``luts`` estimated LUTs.

    ``argmax_chain = max(0, PE_out - ARGMAX_FREE_COMPARES)`` and ``kluts = luts / 1000``.
    """
    pe_out = max((s.component.pe for s in accelerator.stages if s.kind == "labelselect"),
                 default=1)
    return {"argmax_chain": float(max(0, pe_out - ARGMAX_FREE_COMPARES)),
            "kluts": luts / 1000}


def modelled_fmax(model: dict[str, Any], board: str, features: dict[str, float]) -> float:
    """``1000 / (t_board + sum_n c_n * features[n])`` MHz for a family's period ``model``."""
    return 1000.0 / (model["period_ns"][board]
                     + sum(model[n] * features[n] for n in FMAX_FEATURES))


def _fmax_ceiling(coefficients: dict[str, Any], board: Board) -> float | None:
    """The highest fmax in MHz any design can get on ``board``: the model at zero features
    (every feature is ``>= 0``) or a measured design, whichever is higher; None: no model."""
    model = coefficients.get(board.family, {}).get("fmax")
    if model is None or board.name not in model["period_ns"]:
        return None
    zero = dict.fromkeys(FMAX_FEATURES, 0.0)
    return max([modelled_fmax(model, board.name, zero)]
               + [k["fmax_mhz"] for k in coefficients.get("measured", ())
                  if k["board"] == board.name and k["fmax_mhz"] is not None])


def measured_design(coefficients: dict[str, Any], board: Board, model_sha256: str,
                    folding: str) -> dict[str, Any] | None:
    """The entry of ``coefficients["measured"]`` for this board, model hash and folding spec
    (``fmax_mhz``: the lowest fmax of its builds, ``luts``: the most LUTs), or None."""
    return next((k for k in coefficients.get("measured", ())
                 if (k["board"], k["model_sha256"], k["folding"])
                 == (board.name, model_sha256, folding)), None)


def estimate_fmax(coefficients: dict[str, Any], board: Board, built: dict[str, Any] | None,
                  features: dict[str, float]
                  ) -> tuple[float | None, float | None, float | None]:
    """``(modelled fmax, measured fmax, safe clock)`` in MHz of a design (None: unknown).

    The modelled fmax is the period model of the board's family (see the module notes). The
    measured one is ``built["fmax_mhz"]`` (:func:`measured_design`). The safe clock divides
    the measured fmax by ``1 + MEASURED_MARGIN`` if there is one, else the modelled one by
    ``1 + margin``.
    """
    model = coefficients.get(board.family, {}).get("fmax")
    fmax = safe = None
    if model is not None and board.name in model["period_ns"]:
        fmax = modelled_fmax(model, board.name, features)
        safe = fmax / (1 + model["margin"])
    measured = None if built is None else built["fmax_mhz"]
    if measured is not None:
        safe = measured / (1 + MEASURED_MARGIN)
    return fmax, measured, safe


def _shortfalls(est: Estimate, lut_share: float) -> list[str]:
    """What does not fit, as ``"<resource>: <need> > <limit> by <excess>"``; the LUTs are the
    estimate's, or a build's of the same design where that used more."""
    out = []
    limit = lut_share * est.capacity["luts"]
    luts, source = est.totals["luts"], "estimated"
    if est.measured_luts is not None and est.measured_luts > luts:
        luts, source = est.measured_luts, "measured"
    if luts > limit:
        out.append(f"LUTs: {luts:.0f} {source} > {limit:.0f} "
                   f"({100 * lut_share:.0f} % of {est.capacity['luts']}) by "
                   f"{luts - limit:.0f}")
    for key, name in (("bram", "block RAMs"), ("spram", "SPRAMs")):
        if est.totals[key] > est.capacity[key]:
            out.append(f"{name}: {est.totals[key]} > {est.capacity[key]} by "
                       f"{est.totals[key] - est.capacity[key]}")
    return out


def _balanced_candidates(model: Model) -> list[Folding]:
    """Balanced foldings for every target ``T``, fastest first.

    Every dense or conv layer but the output layer takes a ``(PE, SIMD)`` with
    ``V * NF * SF <= T`` and the fewest lanes, as :func:`bnnhw.folding.balanced_folding`
    does; max-pool layers take ``-``. Several ``(PE, SIMD)`` often tie on lanes and differ in
    logic (a PE has its own accumulator, comparator and threshold memory; a wide SIMD word
    widens the input buffer), so each ``T`` gives one candidate per SIMD cap ``S``: every layer
    takes its largest tied SIMD ``<= S`` (its smallest if none is). The output layer sets the
    label select's comparator chain (``PE_out``, see the module notes), so each of those gives
    one candidate per ``PE_out`` that can meet ``T``, with that PE's fewest lanes. ``T`` runs
    over every ``V * NF * SF`` a layer can take, from the smallest ``T`` every layer can meet.
    """
    options: list[list[tuple[int, int, int]] | None] = []
    for layer in model.layers:
        if not layer.folded:
            options.append(None)
            continue
        (mh, mw), v = layer.matrix_shape, layer.vectors
        options.append([(v * (mh // pe) * (mw // simd), pe, simd) for pe in divisors(mh)
                        for simd in divisors(mw)])
    computing = [opts for opts in options if opts is not None]
    floor = max(min(c for c, _, _ in opts) for opts in computing)
    targets = sorted({c for opts in computing for c, _, _ in opts if c >= floor})
    caps = sorted({simd for opts in computing for _, _, simd in opts})

    def cheapest(opts: list[tuple[int, int, int]], target: int, cap: int) -> tuple[int, int]:
        meeting = [(pe, simd) for c, pe, simd in opts if c <= target]
        lanes = min(pe * simd for pe, simd in meeting)
        tied = [p for p in meeting if p[0] * p[1] == lanes]
        under = [p for p in tied if p[1] <= cap]
        return max(under, key=lambda p: p[1]) if under else min(tied, key=lambda p: p[1])

    out, seen = [], set()
    for target in targets:
        pe_outs = sorted({pe for c, pe, _ in options[-1] if c <= target})
        for cap in caps:
            body = tuple(None if opts is None else cheapest(opts, target, cap)
                         for opts in options[:-1])
            for pe_out in pe_outs:
                last = cheapest([o for o in options[-1] if o[1] == pe_out], target, cap)
                layers = body + (last,)
                if layers in seen:
                    continue
                seen.add(layers)
                cycles = max(Folding(layers, 1).layer_cycles(model))
                out.append(Folding(layers, _default_pixels_per_word(model.quantizer.pixels,
                                                                    cycles)))
    return out


def _rate(est: Estimate) -> float:
    """Frames per second at the safe clock, the one ``--clock-mhz auto`` builds at (at the board
    clock if there is no fmax)."""
    if est.safe_clock_mhz is None:
        return est.fps_at_board_clock
    return est.safe_clock_mhz * 1e6 / est.cycles_per_frame


def auto_folding(model: Model, board: str | Board, target_fps: float | str | None = "max",
                 lut_share: float | None = None,
                 coefficients: dict[str, Any] | None = None) -> Folding:
    """Choose a balanced folding that fits ``board`` (with a LUT margin) for a frame rate.

    Candidates are the balanced foldings of every target ``T`` (see
    :func:`_balanced_candidates`), so no layer takes more than ``T`` cycles per frame. A
    candidate fits when the estimate has ``LUT <= lut_share * device LUTs`` (default: the
    family's :data:`AUTO_LUT_SHARE`), block RAMs and
    SPRAMs within the device, and its weights placed as the build places them (block RAM, or
    SPRAM on the UP5K with a valid :func:`bnnhw.devices.plan_spram`). Its rate is
    ``safe_clock_mhz / cycles_per_frame``, the frame rate at the clock ``--clock-mhz auto``
    builds it for (:func:`estimate_fmax`): a design built before, whose fmax is measured, needs
    a smaller margin than one the model has to predict.

    * ``target_fps="max"`` (or None): the fitting candidate with the highest rate (ties: the
      fewest LUTs).
    * ``target_fps=N``: the fitting candidate with the fewest LUTs whose rate is ``>= N``.

    Raises
    ------
    FitError
        No candidate fits (naming each resource short and by how much, for the smallest
        candidate), or the target frame rate is out of reach (naming the best rate that fits).
    ValueError
        Bad ``target_fps`` or ``lut_share``.
    """
    info = board if isinstance(board, Board) else get_board(board)
    if lut_share is None:
        lut_share = AUTO_LUT_SHARE[info.family]
    if not 0 < lut_share <= 1:
        raise ValueError(f"LUT share must be in (0, 1] (lut_share={lut_share})")
    if isinstance(target_fps, str):
        if target_fps != "max":
            try:
                target_fps = float(target_fps)
            except ValueError:
                raise ValueError(f"target fps must be a number or 'max' "
                                 f"(target_fps={target_fps!r})") from None
        else:
            target_fps = None
    if target_fps is not None and not target_fps > 0:
        raise ValueError(f"target fps must be > 0 (target_fps={target_fps})")
    fitting: list[Estimate] = []
    last_error = None
    # No candidate of C cycles can run faster than ceiling / C frames/s: once that is below
    # the best rate found (or below the target), the slower candidates need no estimate.
    ceiling = _fmax_ceiling(coefficients or load_coefficients(), info)
    best_rate = 0.0
    for folding in _balanced_candidates(model):
        if ceiling is not None and fitting:
            bound = ceiling * 1e6 / max(folding.layer_cycles(model))
            if bound < (target_fps or best_rate):
                continue
        try:
            est = estimate(model, info, folding, coefficients)
        except (ValueError, FoldingError) as exc:
            last_error = str(exc)
            continue
        if not _shortfalls(est, lut_share):
            fitting.append(est)
            best_rate = max(best_rate, _rate(est))
        last_est = est
        last_error = None
    if not fitting:
        if last_error is not None:
            raise FitError(f"no folding of {model.topology} fits {info.name}: {last_error}")
        raise FitError(f"no folding of {model.topology} fits {info.name} ({info.device}); "
                       f"the smallest ({last_est.folding}) needs "
                       + "; ".join(_shortfalls(last_est, lut_share)))
    best = min(fitting, key=lambda e: (-_rate(e), e.totals["luts"]))
    if target_fps is None:
        return parse_fold(best.folding, model)
    meeting = [e for e in fitting if _rate(e) >= target_fps]
    if not meeting:
        clock = best.safe_clock_mhz or best.clk_mhz
        raise FitError(
            f"{model.topology} on {info.name}: {target_fps:g} frames/s needs <= "
            f"{clock * 1e6 / target_fps:.0f} cycles/frame at {clock:.1f} MHz, but the fastest "
            f"folding that fits ({best.folding}) takes {best.cycles_per_frame} "
            f"({_rate(best):.0f} frames/s)")
    return parse_fold(min(meeting, key=lambda e: (e.totals["luts"], -_rate(e))).folding, model)


def resolve_fold(spec: str | None, model: Model, board: str | Board | None = None,
                 target_fps: float | str | None = None) -> Folding:
    """:func:`bnnhw.folding.parse_fold`, plus ``"auto"`` (:func:`auto_folding` on ``board``).

    Raises
    ------
    ValueError
        ``"auto"`` without a board, or ``target_fps`` with a spec other than ``"auto"``.
    """
    if spec is not None and spec.strip() == "auto":
        if board is None:
            raise ValueError("fold 'auto' needs a board (--board)")
        return auto_folding(model, board, target_fps if target_fps is not None else "max")
    if target_fps is not None:
        raise ValueError(f"--target-fps needs --fold auto (fold={spec!r})")
    return parse_fold(spec, model)


def format_estimate(est: Estimate) -> str:
    """The per-stage table and the totals as text."""
    head = (f"{'stage':<12} {'kind':<15} {'PExSIMD':>8} {'cycles':>7} {'LUT':>7} {'FF':>7} "
            f"{'BRAM':>5} {'SPRAM':>5} {'weights':>9}  in")
    lines = [f"bnnhw estimate: {est.topology} on {est.board} ({est.device}), "
             f"folding {est.folding}", head, "-" * len(head)]
    for r in est.stages:
        fold = f"{r.pe}x{r.simd}" if r.pe else ""
        lines.append(f"{r.name:<12} {r.kind:<15} {fold:>8} {r.cycles_per_frame:>7} "
                     f"{r.luts:>7.0f} {r.ffs:>7.0f} {r.bram:>5} {r.spram:>5} "
                     f"{r.weight_bits:>9}  {r.weights_in}" + ("" if r.modelled else
                                                               "  (not modelled)"))
    t, c = est.totals, est.capacity
    lines.append("-" * len(head))
    lines.append(f"{'total':<12} {'':<15} {'':>8} {est.cycles_per_frame:>7} {t['luts']:>7.0f} "
                 f"{t['ffs']:>7.0f} {t['bram']:>5} {t['spram']:>5} {t['weight_bits']:>9}")
    util = ", ".join(f"{k} {100 * v:.1f} %" for k, v in est.utilisation.items())
    lines.append(f"device       {c['luts']} LUT, {c['bram']} block RAM"
                 + (f", {c['spram']} SPRAM" if c["spram"] else "") + f": {util}"
                 + ("" if est.measured_luts is None else
                    f" (built: {est.measured_luts} LUTs)"))
    lines.append(f"pipeline     {est.cycles_per_frame} cycles/frame (ideal {est.ideal_cycles}, "
                 f"efficiency {100 * est.efficiency:.0f} %), latency {est.latency} cycles")
    fps = f"{est.fps_at_board_clock:.0f} frames/s at the {est.clk_mhz:g} MHz board clock"
    if est.fmax_mhz is not None:
        fps += f", {est.fps_at_fmax:.0f} at the modelled fmax {est.fmax_mhz:.1f} MHz"
    if est.measured_fmax_mhz is not None:
        fps += f" (measured on this design: {est.measured_fmax_mhz:.2f} MHz)"

    lines.append(f"throughput   {fps}")
    if est.safe_clock_mhz is not None:
        lines.append(f"clock        {est.safe_clock_mhz:.1f} MHz should meet timing "
                     f"(--clock-mhz auto)")
    return "\n".join(lines) + "\n"
