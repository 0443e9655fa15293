"""The boards bnnhw builds for, on top of the amaranth-boards platform definitions.

Only this package knows about platforms; the accelerator (:mod:`bnnhw.gateware`) is
board-agnostic.

Device figures (for the fail-fast fit check, see ``/shared/TOOLCHAIN.md``):

============== ========== ======== ===================================== ============
board          device     clock    block RAM                             LUT4
============== ========== ======== ===================================== ============
icebreaker     iCE40UP5K  12 MHz   30 x 4 Kbit EBR = 122,880 bits        5,280
ulx3s-85f      LFE5U-85F  25 MHz   208 x 18 Kbit DP16KD = 3,833,856 bits 83,640
orangecrab-25f LFE5U-25F  48 MHz   56 x 18 Kbit DP16KD = 1,032,192 bits  24,288
============== ========== ======== ===================================== ============

Host link pins: the iCEBreaker and the ULX3S use the UART of their FTDI USB bridge. The
OrangeCrab's USB port goes straight to the FPGA (no UART bridge), so its UART is placed on
the Feather header: FPGA receive on pin ``0`` (Feather RX), transmit on pin ``1`` (Feather
TX), for a 3.3 V USB-serial adapter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["BOARDS", "Board", "get_board"]


@dataclass(frozen=True)
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

    @property
    def bram_bits(self) -> int:
        """Block RAM capacity in bits, ``bram_blocks * bram_block_bits``."""
        return self.bram_blocks * self.bram_block_bits

    def make_platform(self) -> Any:
        """An instance of the amaranth-boards platform, with the host-link UART present."""
        import importlib

        module, cls = self.platform.split(":")
        platform = getattr(importlib.import_module(module), cls)()
        if self.name == "orangecrab-25f":
            from amaranth.build import Attrs
            from amaranth_boards.resources import UARTResource

            platform.add_resources([UARTResource(0, rx="0", tx="1", conn=("io", 0),
                                                 attrs=Attrs(IO_TYPE="LVCMOS33",
                                                             PULLMODE="UP"))])
        if self.name == "icebreaker":
            platform.add_resources(platform.break_off_pmod)
        return platform

    def programmer_path(self) -> str:
        """The programmer command: ``$programmer_env`` if set, else ``programmer``."""
        return os.environ.get(self.programmer_env, self.programmer)


BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        "icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40", "iCE40UP5K",
        12_000_000, 5_280, 30, 4_096, 4 * 262_144, "bin", "iceprog", "ICEPROG", (),
        1_000_000,
        # led_r / led_g on the main board; led 2..6 on the break-off PMOD.
        (("led_r", 0, None, "error"), ("led_g", 0, None, "activity"),
         ("led", 2, None, "class0"), ("led", 3, None, "class1"), ("led", 4, None, "class2"),
         ("led", 5, None, "class3"), ("led", 6, None, "valid"))),
    "ulx3s-85f": Board(
        "ulx3s-85f", "amaranth_boards.ulx3s:ULX3S_85F_Platform", "ecp5", "LFE5U-85F",
        25_000_000, 83_640, 208, 18_432, 0, "bit", "openFPGALoader", "OPENFPGALOADER",
        ("OPENFPGALOADER",), 1_000_000,
        (("led", 0, None, "class0"), ("led", 1, None, "class1"), ("led", 2, None, "class2"),
         ("led", 3, None, "class3"), ("led", 5, None, "valid"), ("led", 6, None, "activity"),
         ("led", 7, None, "error"))),
    "orangecrab-25f": Board(
        "orangecrab-25f", "amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_25FPlatform",
        "ecp5", "LFE5U-25F", 48_000_000, 24_288, 56, 18_432, 0, "bit", "dfu-util", "DFU_UTIL",
        ("DFU_SUFFIX",), 1_000_000,
        (("rgb_led", 0, "r", "error"), ("rgb_led", 0, "g", "activity"),
         ("rgb_led", 0, "b", "valid"))),
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
