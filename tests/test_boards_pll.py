"""PLL settings: every choice is in the primitives' ranges and is the best one below the request."""

import pytest
from bnnhw.boards.pll import pll_settings
from hypothesis import given, settings
from hypothesis import strategies as st


def test_icebreaker_30_mhz_is_exact():
    s = pll_settings("ice40", 12e6, 30e6)
    assert s.f_out_hz == 30e6
    assert s.params["DIVR"] == 0 and s.params["FILTER_RANGE"] == 1
    assert s.f_vco_hz == 12e6 * (s.params["DIVF"] + 1)
    assert s.f_out_hz == s.f_vco_hz / 2 ** s.params["DIVQ"]


@settings(max_examples=60, deadline=None)
@given(st.floats(16.5, 270))
def test_ice40_settings_in_range_and_close(mhz):
    s = pll_settings("ice40", 12e6, mhz * 1e6)
    p = s.params
    pfd = 12e6 / (p["DIVR"] + 1)
    assert 10e6 <= pfd <= 133e6
    assert 533e6 <= pfd * (p["DIVF"] + 1) == s.f_vco_hz <= 1066e6
    assert s.f_out_hz == s.f_vco_hz / 2 ** p["DIVQ"] <= mhz * 1e6
    # The VCO steps by 12 MHz: the output is within a few per cent below the request.
    assert s.f_out_hz >= 0.97 * mhz * 1e6


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([25e6, 48e6]), st.floats(30, 300))
def test_ecp5_settings_in_range_and_close(f_in, mhz):
    s = pll_settings("ecp5", f_in, mhz * 1e6)
    p = s.params
    assert f_in / p["CLKI_DIV"] >= 3.125e6
    assert s.f_out_hz == pytest.approx(f_in / p["CLKI_DIV"] * p["CLKFB_DIV"])
    assert s.f_out_hz <= mhz * 1e6 * (1 + 1e-12)
    assert s.f_vco_hz == pytest.approx(s.f_out_hz * p["CLKOP_DIV"])
    assert 400e6 <= s.f_vco_hz <= 800e6
    assert p["CLKOP_CPHASE"] == p["CLKOP_DIV"] - 1
    # No valid (CLKI_DIV, CLKFB_DIV) pair comes closer from below.
    best = max(f_in * fb / ci for ci in range(1, int(f_in / 3.125e6) + 1) for fb in range(1, 81)
               if f_in * fb / ci <= mhz * 1e6
               and any(400e6 <= f_in * fb / ci * op <= 800e6 for op in range(1, 129)))
    assert s.f_out_hz == pytest.approx(best)


def test_out_of_range_names_the_frequency():
    with pytest.raises(ValueError, match="the lowest it makes is 16.125 MHz"):
        pll_settings("ice40", 12e6, 10e6)
    with pytest.raises(ValueError, match="'gowin'"):
        pll_settings("gowin", 12e6, 50e6)
