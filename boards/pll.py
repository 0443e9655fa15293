"""Run the design from a PLL at a chosen frequency instead of the board oscillator.

The accelerator's throughput is ``f_clk / cycles_per_frame``; the boards' oscillators (12, 25
and 48 MHz) are well below what the routed designs reach, so a build may ask for a faster
clock (``bnnhw build --clock-mhz F``). This module chooses the PLL settings and makes the
``sync`` domain from the PLL output, held in reset until the PLL locks.

iCE40 (``SB_PLL40_PAD``, fed straight from the oscillator pin)::

    f_pfd = f_in / (DIVR + 1)            10 <= f_pfd <= 133 MHz
    f_vco = f_pfd * (DIVF + 1)           533 <= f_vco <= 1066 MHz
    f_out = f_vco / 2**DIVQ              16 <= f_out <= 275 MHz, 1 <= DIVQ <= 6

with ``FILTER_RANGE`` chosen from ``f_pfd`` (1 below 17 MHz, 2 below 26, 3 below 44, 4 below
66, 5 below 101, else 6).

ECP5 (``EHXPLLL``, feedback from ``CLKOP``)::

    f_pfd = f_in / CLKI_DIV              f_pfd >= 3.125 MHz
    f_out = f_pfd * CLKFB_DIV            1 <= CLKI_DIV <= 128, 1 <= CLKFB_DIV <= 80
    f_vco = f_out * CLKOP_DIV            400 <= f_vco <= 800 MHz, 1 <= CLKOP_DIV <= 128

Among the settings in range, :func:`pll_settings` takes the highest ``f_out`` not above the
request (ties: the lowest VCO frequency).

:data:`FABRIC_MAX_MHZ` is the highest clock each family's data sheet specifies for its global
clock network (iCE40 UltraPlus 133 MHz, ECP5 400 MHz); :func:`check_clock` refuses a request
above it, or one that is not a positive finite number, before anything is synthesised.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    Elaboratable,
    Instance,
    Module,
    ResetSignal,
    Signal,
)
from amaranth.lib import io

__all__ = ["PLLSettings", "ClockGenerator", "pll_settings"]

ICE40_FILTER_STEPS_MHZ = (17, 26, 44, 66, 101)


FABRIC_MAX_MHZ = {"ice40": 133.0, "ecp5": 400.0}


def clock_arg(text: str) -> float | str:
    """``--clock-mhz`` of the command lines: a positive finite frequency in MHz, or ``auto``."""
    if text.strip() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"clock must be a positive finite number of MHz or 'auto' (got {text!r})")
    return value


def check_clock(family: str, clock_mhz: float) -> float:
    """``clock_mhz`` if it is a positive finite frequency the family's fabric can be clocked at.

    Raises
    ------
    ValueError
        Naming the value: not a number, not finite, not positive, or above
        :data:`FABRIC_MAX_MHZ` of ``family``.
    """
    if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) \
            or not math.isfinite(clock_mhz) or clock_mhz <= 0:
        raise ValueError(f"clock must be a positive finite number of MHz or 'auto' "
                         f"(clock_mhz={clock_mhz!r})")
    limit = FABRIC_MAX_MHZ.get(family)
    if limit is not None and clock_mhz > limit:
        raise ValueError(f"clock {clock_mhz:g} MHz is above what the {family} fabric is "
                         f"specified for ({limit:g} MHz)")
    return float(clock_mhz)


@dataclass(frozen=True)
class PLLSettings:
    """One PLL configuration.

    Attributes
    ----------
    family : str
        ``"ice40"`` or ``"ecp5"``.
    f_in_hz, f_out_hz, f_vco_hz : float
    params : dict
        The primitive's parameters (``DIVR``/``DIVF``/``DIVQ``/``FILTER_RANGE``, or
        ``CLKI_DIV``/``CLKFB_DIV``/``CLKOP_DIV``/``CLKOP_CPHASE``).
    """

    family: str
    f_in_hz: float
    f_out_hz: float
    f_vco_hz: float
    params: dict


def _ice40(f_in: float, f_req: float) -> list[PLLSettings]:
    out = []
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        filter_range = 1 + sum(pfd >= step * 1e6 for step in ICE40_FILTER_STEPS_MHZ)
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f_out = vco / 2 ** divq
                if 16e6 <= f_out <= min(275e6, f_req):
                    out.append(PLLSettings("ice40", f_in, f_out, vco, {
                        "DIVR": divr, "DIVF": divf, "DIVQ": divq,
                        "FILTER_RANGE": filter_range}))
    return out


def _ecp5(f_in: float, f_req: float) -> list[PLLSettings]:
    out = []
    for clki in range(1, 129):
        pfd = f_in / clki
        if pfd < 3.125e6:
            break
        for clkfb in range(1, 81):
            f_out = pfd * clkfb
            if f_out > f_req:
                break
            for clkop in range(1, 129):
                vco = f_out * clkop
                if 400e6 <= vco <= 800e6:
                    out.append(PLLSettings("ecp5", f_in, f_out, vco, {
                        "CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop,
                        "CLKOP_CPHASE": clkop - 1}))
                    break
    return out


def pll_settings(family: str, f_in_hz: float, f_out_hz: float) -> PLLSettings:
    """The PLL configuration closest to ``f_out_hz`` from below (see the module docs).

    Raises
    ------
    ValueError
        Unknown family, or no setting in range (naming the requested frequency).
    """
    search = {"ice40": _ice40, "ecp5": _ecp5}.get(family)
    if search is None:
        raise ValueError(f"no PLL support for FPGA family {family!r} (choices: ice40, ecp5)")
    candidates = search(float(f_in_hz), float(f_out_hz))
    if not candidates:
        lowest = min(s.f_out_hz for s in search(float(f_in_hz), float("inf")))
        raise ValueError(
            f"no {family} PLL setting makes {f_out_hz / 1e6:g} MHz or less from "
            f"{f_in_hz / 1e6:g} MHz (the lowest it makes is {lowest / 1e6:g} MHz)")
    return max(candidates, key=lambda s: (s.f_out_hz, -s.f_vco_hz))


class ClockGenerator(Elaboratable):
    """Drive the ``sync`` domain from a PLL on the board's default clock pin.

    The parent module defines ``sync`` (``m.domains.sync = ClockDomain()``), so the domain
    belongs to the top that holds the design it clocks; this module drives its clock and reset.

    The iCE40 PLL takes the pad itself (``SB_PLL40_PAD``: the iCEBreaker's 12 MHz oscillator
    sits on a PLL input pad); the ECP5 PLL takes the pin through an input buffer.

    ``sync`` is held in reset until the PLL reports lock (and for one more cycle, through a
    register, so the reset release is synchronous). nextpnr derives the output clock's
    constraint from the PLL parameters (and, on ECP5, the ``FREQUENCY_PIN_*`` attributes).

    Parameters
    ----------
    settings : PLLSettings
    """

    def __init__(self, settings: PLLSettings):
        self.settings = settings

    def elaborate(self, platform):
        m = Module()
        s = self.settings
        pin = platform.request(platform.default_clk, dir="-")
        pll_clk = Signal()
        locked = Signal()
        if s.family == "ice40":
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
                **{f"p_{k}": v for k, v in s.params.items()},
                i_PACKAGEPIN=pin.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=pll_clk, o_LOCK=locked)
        else:
            m.submodules.clk_buffer = clk_buffer = io.Buffer("i", pin)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{s.f_in_hz / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{s.f_out_hz / 1e6:g}",
                p_FEEDBK_PATH="CLKOP", p_CLKOP_ENABLE="ENABLED", p_CLKOP_FPHASE=0,
                p_OUTDIVIDER_MUXA="DIVA", p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
                p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
                **{f"p_{k}": v for k, v in s.params.items()},
                i_CLKI=clk_buffer.i, i_CLKFB=pll_clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0,
                i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=pll_clk, o_LOCK=locked)
        # The reset comes straight from a flip-flop (no inverter between it and the loads),
        # set from power-up until the cycle after the PLL reports lock.
        in_reset = Signal(init=1)
        m.d.comb += ClockSignal("sync").eq(pll_clk)
        m.domains.lock = ClockDomain("lock", reset_less=True)
        m.d.comb += ClockSignal("lock").eq(pll_clk)
        m.d.lock += in_reset.eq(~locked)
        m.d.comb += ResetSignal("sync").eq(in_reset)
        return m
