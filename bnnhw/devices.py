"""What bnnhw knows about each FPGA board and device, and what fits on it.

The facts the estimator, the board builds and the CLI share, with no tool behind them: one
:class:`Board` entry per board in :data:`BOARDS` (device, clock, LUTs, block RAM, SPRAM, the
programmer, the LEDs), the UP5K's SPRAM geometry and the placement of layers in it, and
:func:`check_fits`, which refuses before synthesis a model that fits neither way. The
amaranth-boards platforms behind each entry are made in :mod:`bnnhw.boards.platforms`.

Device figures (see ``/shared/TOOLCHAIN.md``):

============== ========== ======== ===================================== ============
board          device     clock    block RAM                             LUT4
============== ========== ======== ===================================== ============
icebreaker     iCE40UP5K  12 MHz   30 x 4 Kbit EBR = 122,880 bits        5,280
ulx3s-85f      LFE5U-85F  25 MHz   208 x 18 Kbit DP16KD = 3,833,856 bits 83,640
orangecrab-25f LFE5U-25F  48 MHz   56 x 18 Kbit DP16KD = 1,032,192 bits  24,288
============== ========== ======== ===================================== ============

SPRAM placement (the layout :mod:`bnnhw.boards.spram` builds and loads)
---------------------------------------------------------------------
The UP5K has four ``SB_SPRAM256KA`` blocks of 16,384 words of 16 bits. All PEs of an MVTU
read the same weight address in the same cycle, so an SPRAM layer keeps one wide word of
``PE * SIMD`` bits per address, ``n = ceil(PE * SIMD / 16)`` SPRAMs side by side, at most
16,384 words deep. Layers get SPRAMs in layer order; if that needs more than four, layers
whose last SPRAM would be partly used give it up, last layer first, and keep those tail bits
in a block RAM ROM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from math import ceil
from typing import Any

from .folding import Folding, divisors, parse_fold
from .model import Model

__all__ = ["BOARDS", "NEXTPNR_ROUTERS", "SPRAM_BLOCKS", "SPRAM_EBR_SHARE", "SPRAM_MAX_LANES",
           "SPRAM_WIDTH",
           "SPRAM_WORDS", "Board", "Placement", "SpramLayer", "auto_spram_layers", "check_fits",
           "place",
           "get_board", "plan_spram", "spram_folding"]

NEXTPNR_ROUTERS = ("router1", "router2")
"""nextpnr's routers, for a build's ``router`` (its default is router1)."""


@dataclass(frozen=True, kw_only=True)
class Board:
    """What the build needs to know about one board.

    Attributes
    ----------
    name : str
        Key in :data:`BOARDS`.
    platform : str
        ``module:Class`` of the amaranth-boards platform (imported on use).
    family : str
        ``"ice40"`` or ``"ecp5"``.
    device : str
    clk_hz : int
        Frequency of the board's default clock.
    luts : int
        LUT4s of the device.
    bram_blocks, bram_block_bits : int
        Block RAM count and bits per block (data bits, without parity).
    spram_bits : int
        Single-port RAM (UP5K SPRAM), 0 if none.
    bitstream : str
        Extension of the file to flash (``bin`` or ``bit``).
    programmer : str
        The tool ``program=True`` runs (looked up through ``programmer_env``).
    programmer_env : str
        Environment variable amaranth-boards reads for that tool.
    stub_tools : tuple of str
        Environment variables of tools the platform insists on even without programming;
        a build that does not program points them at ``true``.
    default_baud : int
        Host link rate; the clock divides it exactly.
    leds : tuple of (resource, number, subsignal or None, role)
        Which LED shows what: role ``"class<i>"`` is bit ``i`` of the last class,
        ``"valid"`` lights once a class was shown, ``"activity"`` blinks per reply, ``"error"``
        is sticky after a UART framing error, an rx overrun, or a BAD_CRC/TIMEOUT reply.
    extra_resources : tuple of str
        Resources the platform lacks and the build adds, by name of a recipe in
        :data:`bnnhw.boards.platforms.EXTRA_RESOURCES` (a host-link UART on a header, a PMOD).
    """

    name: str
    platform: str
    family: str
    device: str
    clk_hz: int
    luts: int
    bram_blocks: int
    bram_block_bits: int
    spram_bits: int
    bitstream: str
    programmer: str
    programmer_env: str
    stub_tools: tuple[str, ...]
    default_baud: int
    leds: tuple[tuple[str, int, str | None, str], ...]
    extra_resources: tuple[str, ...] = ()

    @property
    def bram_bits(self) -> int:
        """Block RAM capacity in bits, ``bram_blocks * bram_block_bits``."""
        return self.bram_blocks * self.bram_block_bits

    def programmer_path(self) -> str:
        """The programmer command: ``$programmer_env`` if set, else ``programmer``."""
        return os.environ.get(self.programmer_env, self.programmer)


BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        name="icebreaker", platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        family="ice40", device="iCE40UP5K", clk_hz=12_000_000, luts=5_280, bram_blocks=30,
        bram_block_bits=4_096, spram_bits=4 * 262_144, bitstream="bin", programmer="iceprog",
        programmer_env="ICEPROG", stub_tools=(), default_baud=1_000_000,
        # led_r / led_g on the main board; led 2..6 on the break-off PMOD.
        leds=(("led_r", 0, None, "error"), ("led_g", 0, None, "activity"),
              ("led", 2, None, "class0"), ("led", 3, None, "class1"),
              ("led", 4, None, "class2"), ("led", 5, None, "class3"),
              ("led", 6, None, "valid")),
        extra_resources=("break-off-pmod",)),
    "ulx3s-85f": Board(
        name="ulx3s-85f", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        family="ecp5", device="LFE5U-85F", clk_hz=25_000_000, luts=83_640, bram_blocks=208,
        bram_block_bits=18_432, spram_bits=0, bitstream="bit", programmer="openFPGALoader",
        programmer_env="OPENFPGALOADER", stub_tools=("OPENFPGALOADER",),
        default_baud=1_000_000,
        leds=(("led", 0, None, "class0"), ("led", 1, None, "class1"),
              ("led", 2, None, "class2"), ("led", 3, None, "class3"),
              ("led", 5, None, "valid"), ("led", 6, None, "activity"),
              ("led", 7, None, "error"))),
    "orangecrab-25f": Board(
        name="orangecrab-25f",
        platform="amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_25FPlatform",
        family="ecp5", device="LFE5U-25F", clk_hz=48_000_000, luts=24_288, bram_blocks=56,
        bram_block_bits=18_432, spram_bits=0, bitstream="bit", programmer="dfu-util",
        programmer_env="DFU_UTIL", stub_tools=("DFU_SUFFIX",), default_baud=1_000_000,
        leds=(("rgb_led", 0, "r", "error"), ("rgb_led", 0, "g", "activity"),
              ("rgb_led", 0, "b", "valid")),
        # The host link's UART on the Feather header: pin 0 receives, pin 1 transmits.
        extra_resources=("uart-io0-io1",)),
}


def get_board(name: str) -> Board:
    """Look a board up by name.

    Raises
    ------
    ValueError
        ``unknown board 'x' (choices: icebreaker, orangecrab-25f, ulx3s-85f)``.
    """
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown board {name!r} (choices: {', '.join(sorted(BOARDS))})") from None


SPRAM_BLOCKS = 4
SPRAM_WORDS = 16_384
SPRAM_WIDTH = 16


@dataclass(frozen=True)
class SpramLayer:
    """Where one layer's weights sit: SPRAMs ``first .. first + count - 1``, ``depth`` words,
    and the top ``rom_bits`` bits of each wide word in a block RAM ROM."""

    index: int
    first: int
    count: int
    depth: int
    pe: int
    simd: int
    rom_bits: int = 0


def auto_spram_layers(model, ebr_weight_bits: int) -> tuple[int, ...]:
    """Layers to move to SPRAM: the largest first, until the rest has ``<= ebr_weight_bits``.

    Parameters
    ----------
    model : bnnhw.model.Model
    ebr_weight_bits : int
        Weight bits the block RAM may hold.
    """
    sizes = [layer.weights.size for layer in model.layers]
    rest = sum(sizes)
    chosen = []
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        if rest <= ebr_weight_bits:
            break
        chosen.append(index)
        rest -= sizes[index]
    return tuple(sorted(chosen))


def spram_folding(model, layers, ebr_weight_bits: int, max_lanes: int):
    """The fastest folding whose ``layers`` fit the SPRAMs, found by a sweep over the target.

    For each target ``T`` (every ``NF * SF`` any layer can take, ascending) each layer gets
    the ``(PE, SIMD)`` with ``NF * SF <= T`` and the fewest lanes (ties: larger SIMD), as
    :func:`bnnhw.folding.balanced_folding` does. The first ``T`` is taken whose folding has
    a valid :func:`plan_spram`, at most ``ebr_weight_bits`` weight bits in block RAM (the other
    layers plus the ROM tails) and at most ``max_lanes`` lanes in all. For SFC with layers 0
    and 1 in SPRAM that is ``1x49,1x16,1x16,1x1`` at ``T = 4096``.

    Raises
    ------
    ValueError
        If no target fits, naming the limits.
    """
    sizes = [(layer.out_features, layer.in_features) for layer in model.layers]
    options = [[(pe, simd, (mh // pe) * (mw // simd)) for pe in divisors(mh)
                for simd in divisors(mw)] for mh, mw in sizes]
    for target in sorted({c for opts in options for _, _, c in opts}):
        if any(min(c for _, _, c in opts) > target for opts in options):
            continue
        pairs = [min(((pe, simd) for pe, simd, c in opts if c <= target),
                     key=lambda p: (p[0] * p[1], -p[1])) for opts in options]
        if sum(pe * simd for pe, simd in pairs) > max_lanes:
            continue
        folding = parse_fold(",".join(f"{pe}x{simd}" for pe, simd in pairs), model)
        try:
            plan = plan_spram(model, folding, layers)
        except ValueError:
            continue
        ebr = sum(model.layers[i].weights.size for i in range(len(sizes)) if i not in layers)
        if ebr + sum(p.rom_bits * p.depth for p in plan) <= ebr_weight_bits:
            return folding
    raise ValueError(f"no folding puts layers {tuple(layers)} of {model.topology} in the "
                     f"{SPRAM_BLOCKS} SPRAMs with <= {ebr_weight_bits} weight bits in block RAM "
                     f"and <= {max_lanes} lanes")


def plan_spram(model, folding, layers) -> tuple[SpramLayer, ...]:
    """Give each layer in ``layers`` its SPRAMs (see the module docs).

    Raises
    ------
    ValueError
        If a layer index is out of range, a layer needs more than 16,384 words, or the layers
        need more than four SPRAMs even with their tails in ROM; the message names the layers
        and figures.
    """
    wanted = []
    for index in sorted(set(layers)):
        if not 0 <= index < len(model.layers):
            raise ValueError(f"SPRAM layer {index} does not exist (model has "
                             f"{len(model.layers)} layers)")
        layer = model.layers[index]
        pe, simd = folding.layers[index]
        depth = (layer.out_features // pe) * (layer.in_features // simd)
        if depth > SPRAM_WORDS:
            raise ValueError(f"layer {index}: NF*SF = {depth} words exceed the {SPRAM_WORDS} "
                             f"words of an SPRAM (fold PE={pe}, SIMD={simd}; use more lanes)")
        wanted.append([index, ceil(pe * simd / SPRAM_WIDTH), depth, pe, simd])
    total = sum(w[1] for w in wanted)
    for w in reversed(wanted):
        if total > SPRAM_BLOCKS and w[1] * SPRAM_WIDTH > w[3] * w[4] and w[1] > 1:
            w[1] -= 1
            total -= 1
    if total > SPRAM_BLOCKS:
        need = ", ".join(f"layer {w[0]}: {w[1]} (PE*SIMD={w[3] * w[4]})" for w in wanted)
        raise ValueError(f"SPRAM layers need {total} SPRAMs but the UP5K has {SPRAM_BLOCKS} "
                         f"({need}; each SPRAM gives {SPRAM_WIDTH} weight bits per cycle)")
    plan = []
    first = 0
    for index, count, depth, pe, simd in wanted:
        rom = max(0, pe * simd - count * SPRAM_WIDTH)
        plan.append(SpramLayer(index, first, count, depth, pe, simd, rom))
        first += count
    return tuple(plan)


SPRAM_EBR_SHARE = 0.75
"""Share of the block RAM the weights may take when the rest goes to SPRAM (the other
block RAMs hold input buffers and FIFOs)."""

SPRAM_MAX_LANES = 96
"""Lanes (sum of PE * SIMD) the default SPRAM folding may use: the UP5K build of SFC folded
``1x49,1x16,1x16,1x4`` (82 lanes) took 64 % of the LUTs."""


@dataclass(frozen=True)
class Placement:
    """Where a design's weights go on a board, checked: its folding and the layers in SPRAM.

    Made by :func:`place`, once per build or estimate; the build, the board top and the
    estimator read it instead of deciding again.
    """

    folding: Folding
    spram_layers: tuple[int, ...]


def place(model: Model, board: Board, fold: Folding | str | None = None,
          spram_layers: tuple[int, ...] | None = None) -> Placement:
    """Check that ``model`` fits ``board`` and fix its folding and SPRAM layers, in one pass.

    The SPRAM layers are chosen (or checked) by :func:`check_fits`; the folding is ``fold``
    (a :class:`~bnnhw.folding.Folding` or a spec for :func:`~bnnhw.folding.parse_fold`), or by
    default :func:`spram_folding` when weights go to SPRAM and the balanced folding otherwise;
    an SPRAM placement is then checked against that folding (:func:`plan_spram`).

    Raises
    ------
    ValueError
        The messages of :func:`check_fits`, :func:`~bnnhw.folding.parse_fold` and
        :func:`plan_spram`.
    """
    layers = check_fits(model, board, spram_layers=spram_layers)
    if fold is None and layers:
        folding = spram_folding(model, layers, int(SPRAM_EBR_SHARE * board.bram_bits),
                                SPRAM_MAX_LANES)
    else:
        folding = fold if isinstance(fold, Folding) else parse_fold(fold, model)
    if layers:
        plan_spram(model, folding, layers)
    return Placement(folding, layers)


def check_fits(model: Model, board: Board, folding: Any = None,
               spram_layers: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Fail fast when the weights fit neither the block RAM nor block RAM + SPRAM.

    A model whose weights fit the block RAM keeps them all there. Otherwise, on a device with
    SPRAM, ``spram_layers`` (default: :func:`auto_spram_layers`, the
    largest layers until the rest takes at most ``SPRAM_EBR_SHARE`` of the block RAM) go to
    SPRAM.

    Parameters
    ----------
    model : Model
    board : Board
    folding : bnnhw.folding.Folding or None
        If given, the SPRAM placement is checked too (:func:`plan_spram`:
        at most four SPRAMs of 16,384 words).
    spram_layers : tuple of int or None
        Layers to place in SPRAM; None chooses them.

    Returns
    -------
    tuple of int
        The layers placed in SPRAM (empty when all weights are in block RAM).

    Raises
    ------
    ValueError
        Naming the figures: weights above block RAM on a device without SPRAM, above block
        RAM + SPRAM, the block RAM part still too large, or an SPRAM placement that does not
        fit.
    """
    bits = model.weight_bits
    ebr = (f"{board.bram_bits} bits of block RAM ({board.bram_blocks} x "
           f"{board.bram_block_bits})")
    if spram_layers is None:
        if bits <= board.bram_bits:
            return ()
        if not board.spram_bits:
            raise ValueError(
                f"model {model.topology} has {bits} weight bits but the {board.device} on "
                f"{board.name} has {ebr} and no SPRAM: choose a smaller model or a larger "
                f"board")
        if bits > board.bram_bits + board.spram_bits:
            raise ValueError(
                f"model {model.topology} has {bits} weight bits but the {board.device} on "
                f"{board.name} has {ebr} + {board.spram_bits} bits of SPRAM: choose a smaller "
                f"model or a larger board")
        maps = [i for i, layer in enumerate(model.layers) if layer.maps]
        if maps:
            raise ValueError(
                f"model {model.topology} has {bits} weight bits but the {board.device} on "
                f"{board.name} has {ebr}; SPRAM holds dense layers of dense-only models, and "
                f"layer {maps[0]} is a {model.layers[maps[0]].kind} layer: choose a smaller "
                f"model or a larger board")
        spram_layers = auto_spram_layers(model, int(SPRAM_EBR_SHARE * board.bram_bits))
    spram_layers = tuple(sorted(set(spram_layers)))
    for i in spram_layers:
        if not 0 <= i < len(model.layers) or model.layers[i].maps:
            raise ValueError(f"spram_layers={spram_layers}: layer {i} is not a dense layer of "
                             f"{model.topology}")
    if spram_layers and not board.spram_bits:
        raise ValueError(f"the {board.device} on {board.name} has no SPRAM "
                         f"(spram_layers={spram_layers})")
    rest = sum(layer.weight_bits for i, layer in enumerate(model.layers)
               if i not in spram_layers)
    if rest > board.bram_bits:
        raise ValueError(
            f"model {model.topology}: the layers outside SPRAM (spram_layers={spram_layers}) "
            f"have {rest} weight bits but the {board.device} on {board.name} has {ebr}")
    if folding is not None:
        plan_spram(model, folding, spram_layers)
    return spram_layers
