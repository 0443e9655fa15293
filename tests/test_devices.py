"""``bnnhw.devices``: the board registry and the block-RAM / SPRAM fit checks."""

import numpy as np
import pytest

from bnnhw.devices import BOARDS, auto_spram_layers, check_fits, get_board
from bnnhw.model import DenseLayer, InputQuantizer, Model


def test_registry_entries_are_consistent():
    assert set(BOARDS) == {"icebreaker", "ulx3s-85f", "orangecrab-25f"}
    for name, board in BOARDS.items():
        assert board.name == name and get_board(name) is board
        assert board.family in ("ice40", "ecp5") and board.luts > 0
        assert board.bram_blocks * board.bram_block_bits > 0
        assert (board.spram_bits > 0) == (board.family == "ice40")
        assert 0 < board.default_baud < board.clk_hz


def test_unknown_board_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown board 'de10' \(choices: icebreaker, "
                                         r"orangecrab-25f, ulx3s-85f\)"):
        get_board("de10")


def model_with(hidden):
    rng = np.random.default_rng(0)
    layers, mw = [], 784
    for h in hidden:
        layers.append(DenseLayer(rng.integers(0, 2, (h, mw)), np.full(h, mw // 2)))
        mw = h
    layers.append(DenseLayer(rng.integers(0, 2, (10, mw))))
    return Model(InputQuantizer.fixed(127.5), tuple(layers))


def test_weights_go_to_spram_only_when_block_ram_is_short():
    ice = get_board("icebreaker")
    assert check_fits(model_with([64, 64, 64]), ice) == ()         # tfc: EBR only
    sfc = model_with([256, 256, 256])
    layers = check_fits(sfc, ice)
    assert layers and layers == auto_spram_layers(sfc, int(0.75 * ice.bram_blocks
                                                           * ice.bram_block_bits))
    with pytest.raises(ValueError, match=r"784-2048-2048-10 has 5820416 weight bits but the "
                                         r"iCE40UP5K on icebreaker has 122880 bits of block "
                                         r"RAM \(30 x 4096\) \+ 1048576 bits of SPRAM"):
        check_fits(model_with([2048, 2048]), ice)


def test_place_checks_once_and_picks_the_spram_folding(monkeypatch):
    """place() checks the fit once; without a folding, an SPRAM design gets spram_folding."""
    from bnnhw import devices  # the module whose check_fits the test counts

    calls = []
    original = devices.check_fits
    monkeypatch.setattr(devices, "check_fits",
                        lambda *a, **k: calls.append(a) or original(*a, **k))
    ice = get_board("icebreaker")
    sfc = model_with([256, 256, 256])
    placement = devices.place(sfc, ice)
    assert len(calls) == 1 and placement.spram_layers
    assert placement.folding == devices.spram_folding(
        sfc, placement.spram_layers, int(devices.SPRAM_EBR_SHARE * ice.bram_bits),
        devices.SPRAM_MAX_LANES)
    tfc = devices.place(model_with([64, 64, 64]), ice, "16x16,16x16,16x16,10x16")
    assert tfc.spram_layers == () and tfc.folding.spec.startswith("16x16")
    with pytest.raises(ValueError, match=r"PE must divide MH \(MH=256, PE=3\)"):
        devices.place(sfc, ice, "3x7,1x1,1x1,1x1")
