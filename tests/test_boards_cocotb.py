"""The board top's Verilog driven through its UART pins on Icarus, against the reference."""

import numpy as np
import pytest
from bnnhw.boards.simulate import simulate_board
from bnnhw.boards.top import bits_pixel_values

from bnnhw import datasets
from bnnhw.model import DenseLayer, InputQuantizer, Model, PixelInput

# Needs Icarus (the README's test command installs it): a missing simulator fails, not skips.
pytestmark = pytest.mark.cocotb


def small_mnist_model(hidden=32, seed=0):
    rng = np.random.default_rng(seed)
    q = InputQuantizer((128,), 784)
    # Thresholds near the middle of the popcount range, so hidden bits vary between images.
    h = DenseLayer(rng.integers(0, 2, (hidden, 784)), rng.integers(380, 410, hidden))
    return Model(q, (h, DenseLayer(rng.integers(0, 2, (10, hidden)))))


def test_board_top_over_uart_matches_reference():
    images = datasets.load("mnist", "test").images[:20]
    result = simulate_board(small_mnist_model(), images, "8x49,10x8@4")
    assert result["expected_identity_ok"]
    assert result["bad_crc_replied"]
    assert (result["replied"], result["lost"], result["mismatches"]) == (20, 0, [])
    assert result["tx_framing_errors"] == 0 and result["discarded"] == 0


def test_board_top_with_spram_weights_loaded_over_uart():
    # 1x49 wants 4 SPRAMs and 5x4 wants 2: layer 0 gets SPRAMs 0-2 and a 1-bit ROM tail,
    # layer 1 SPRAM 3 and a 4-bit ROM tail (both with 256 and 8 words).
    model = small_mnist_model(hidden=16, seed=1)
    images = datasets.load("mnist", "test").images[:4]
    result = simulate_board(model, images, "1x49,5x4@4", spram_layers=(0, 1))
    ident = result["identity"]
    assert ident["weights_in_ram"] and not ident["weights_loaded"]
    assert result["loaded_identity"] == {**ident, "weights_loaded": True}
    statuses = result["load_statuses"]
    assert statuses[0] == "BAD_CRC" and set(statuses[1:]) == {"OK"}
    # 512-byte regions in 2 chunks of 256 bytes, a 16-byte one in 1, a commit, a bad copy.
    assert len(statuses) == 3 * 2 + 1 + 1 + 1
    assert result["expected_identity_ok"] and result["bad_crc_replied"]
    assert (result["replied"], result["lost"], result["mismatches"]) == (4, 0, [])
    assert result["tx_framing_errors"] == 0 and result["discarded"] == 0


def test_board_top_with_an_8_bit_first_layer_over_uart():
    # Input kind pixels8: the first layer reads the pixels, so only CLASSIFY_RAW applies.
    rng = np.random.default_rng(2)
    weights = rng.integers(0, 2, (16, 784))
    # a = sum w x over the pixels; thresholds near its middle so the hidden bits vary.
    images = datasets.load("mnist", "test").images[:6]
    sums = (2 * weights - 1) @ images.T.astype(np.int64)
    first = DenseLayer(weights, np.median(sums, axis=1).astype(np.int64), pixels8=True)
    model = Model(PixelInput(784), (first, DenseLayer(rng.integers(0, 2, (10, 16)))))
    assert bits_pixel_values(model) is None
    result = simulate_board(model, images, "4x49,10x4@4")
    assert not result["identity"]["bits_supported"]
    assert result["expected_identity_ok"] and result["bad_crc_replied"]
    assert (result["replied"], result["lost"], result["mismatches"]) == (6, 0, [])


@pytest.mark.synth
def test_post_synthesis_netlist_matches_reference():
    # yosys synth_ice40, then a gate-level Icarus run of 24 images (images 0 and 12 as raw
    # pixels through the netlist's quantizer, the others as packed bits): about 2 minutes.
    images = datasets.load("mnist", "test").images[:24]
    result = simulate_board(small_mnist_model(hidden=8), images, "2x49,5x8@4", netlist=True,
                            raw_every=12)
    assert result["netlist"] and result["expected_identity_ok"] and result["bad_crc_replied"]
    assert (result["replied"], result["lost"], result["mismatches"]) == (24, 0, [])


@pytest.mark.synth
def test_ecp5_post_synthesis_netlist_matches_reference():
    # yosys synth_ecp5 (LUT4, CCU2C carry chains, TRELLIS flip-flops, DP16KD block RAM), then
    # a gate-level Icarus run with yosys' ECP5 cell models: 20 images (0 and 10 as raw pixels,
    # the others as packed bits) plus a corrupted frame.
    images = datasets.load("mnist", "test").images[:20]
    result = simulate_board(small_mnist_model(hidden=8), images, "2x49,5x8@4", netlist=True,
                            raw_every=10, family="ecp5")
    assert result["netlist"] and result["expected_identity_ok"] and result["bad_crc_replied"]
    assert (result["replied"], result["lost"], result["mismatches"]) == (20, 0, [])


@pytest.mark.synth
def test_post_synthesis_netlist_with_spram_matches_reference():
    # About 40 s: the iCE40 netlist keeps SB_SPRAM256KA cells (yosys' simulation model);
    # layer 0 (1x49) takes SPRAMs 0-2 and a 1-bit ROM tail, layer 1 (5x2) SPRAM 3.
    images = datasets.load("mnist", "test").images[:2]
    result = simulate_board(small_mnist_model(hidden=8, seed=2), images, "1x49,5x2@4",
                            netlist=True, spram_layers=(0, 1))
    assert result["netlist"] and result["loaded_identity"]["weights_loaded"]
    assert result["load_statuses"][0] == "BAD_CRC"
    assert set(result["load_statuses"][1:]) == {"OK"}
    assert (result["replied"], result["lost"], result["mismatches"]) == (2, 0, [])
