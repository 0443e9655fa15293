"""Folding specs: parsing, the balanced default, and error messages that name the values."""

import numpy as np
import pytest
from gateware_helpers import random_model

from bnnhw.folding import Folding, FoldingError, balanced_folding, parse_fold


@pytest.fixture(scope="module")
def sfc():
    return random_model(np.random.default_rng(0), 784, 1, [256, 256, 256, 10])


def test_parse_explicit_spec(sfc):
    folding = parse_fold("16x49,16x32,16x32,10x32@4", sfc)
    assert folding == Folding(((16, 49), (16, 32), (16, 32), (10, 32)), 4)
    assert folding.layer_cycles(sfc) == [256, 128, 128, 8]
    assert parse_fold(folding.spec, sfc) == folding


def test_default_pixels_per_word_keeps_input_off_the_critical_path(sfc):
    folding = parse_fold("16x49,16x32,16x32,10x32", sfc)
    # max NF*SF = 256; the smallest P dividing 784 with 784 / P <= 256 is 4.
    assert folding.pixels_per_word == 4


def test_balanced_sfc(sfc):
    folding = parse_fold(None, sfc)
    assert folding == parse_fold("balanced", sfc) == balanced_folding(sfc, 256)
    cycles = folding.layer_cycles(sfc)
    # T = 784 * 256 / 256 lanes; the fewest lanes per layer with NF*SF <= T, larger SIMD first.
    assert folding.layers == ((16, 16), (1, 128), (1, 128), (1, 4))
    assert cycles == [784, 512, 512, 640]
    assert folding.pixels_per_word == 1


def test_balanced_lanes_trade_speed(sfc):
    slow = max(parse_fold("balanced:64", sfc).layer_cycles(sfc))
    fast = max(parse_fold("balanced:1024", sfc).layer_cycles(sfc))
    assert fast < slow
    assert fast <= -(-784 * 256 // 1024)


@pytest.mark.parametrize(("spec", "message"), [
    ("16x49,16x32,16x32", r"folding has 3 layer\(s\) but the model has 4 "
                          r"\(topology 784-256-256-256-10\)"),
    ("3x49,16x32,16x32,10x32", r"layer 0: PE must divide MH \(MH=256, PE=3\)"),
    ("16x49,16x30,16x32,10x32", r"layer 1: SIMD must divide MW \(MW=256, SIMD=30\)"),
    ("16x49,16x32,16x32,4x32", r"layer 3: PE must divide MH \(MH=10, PE=4\)"),
    ("16x49,16x32,16x32,10x32@5", r"pixels=784, P=5"),
    ("16x49,16x32,16x32,10x32@0", r"P=0"),
    ("16x49,16-32,16x32,10x32", r"layer 1 entry '16-32' is not PExSIMD"),
    ("16x49,ax32,16x32,10x32", r"layer 1 PE 'a' is not an integer"),
    ("16x0,16x32,16x32,10x32", r"layer 0: PE and SIMD must be >= 1 \(PE=16, SIMD=0\)"),
    ("balanced:many", r"lane count 'many' is not an integer"),
    ("balanced:0", r"lanes=0"),
    ("balanced:1000000", r"1 <= lanes <= 200704 .*\(lanes=1000000\)"),
    ("", r"fold spec '': layer 0 entry '' is not PExSIMD"),
])
def test_errors_name_the_values(sfc, spec, message):
    with pytest.raises(FoldingError, match=message):
        parse_fold(spec, sfc)


@pytest.fixture(scope="module")
def cnv():
    """28x28x1 -> conv 3x3x16 -> pool -> conv 3x3x32 -> pool -> 64 -> 10 (cnv-tiny's shape)."""
    from bnnhw.model import ConvLayer, DenseLayer, InputQuantizer, MaxPoolLayer, Model

    rng = np.random.default_rng(0)
    conv0 = ConvLayer(rng.integers(0, 2, (16, 9)), rng.integers(0, 10, 16), 3, (28, 28, 1))
    conv1 = ConvLayer(rng.integers(0, 2, (32, 144)), rng.integers(0, 145, 32), 3, (13, 13, 16))
    return Model(InputQuantizer((128,)), (
        conv0, MaxPoolLayer((26, 26, 16)), conv1, MaxPoolLayer((11, 11, 32)),
        DenseLayer(rng.integers(0, 2, (64, 800)), rng.integers(0, 801, 64)),
        DenseLayer(rng.integers(0, 2, (10, 64)))))


def test_conv_spec_with_pool_entries(cnv):
    folding = parse_fold("16x3,-,16x16,-,1x25,1x1@1", cnv)
    assert folding.layers == ((16, 3), None, (16, 16), None, (1, 25), (1, 1))
    # conv: OH*OW * NF*SF = 676 * 1*3 and 121 * 2*9; pool: H*W; dense: NF*SF.
    assert folding.layer_cycles(cnv) == [2028, 676, 2178, 121, 2048, 640]
    assert parse_fold(folding.spec, cnv) == folding


def test_balanced_conv_pipeline(cnv):
    folding = parse_fold(None, cnv)
    # T = ceil(121 * 32 * 144 / 256) = 2178; the fewest lanes per layer with cycles <= T.
    assert folding.layers == ((16, 3), None, (16, 16), None, (1, 25), (1, 1))
    assert max(folding.layer_cycles(cnv)) == 2178
    fast = parse_fold("balanced:100000", cnv)
    # No folding gets conv0 below its 676 windows: it takes the full (OC, K*K*C).
    assert fast.layers[0] == (16, 9) and fast.layer_cycles(cnv)[0] == 676


@pytest.mark.parametrize(("spec", "message"), [
    ("16x3,2x2,16x16,-,1x25,1x1", r"layer 1 is a maxpool layer and needs '-' in the folding, "
                                  r"got '2x2'"),
    ("-,-,16x16,-,1x25,1x1", r"layer 0 is a conv layer and needs PExSIMD in the folding, "
                             r"got '-'"),
    ("16x4,-,16x16,-,1x25,1x1", r"layer 0: SIMD must divide MW \(MW=9, SIMD=4\)"),
    ("16x3,-,5x16,-,1x25,1x1", r"layer 2: PE must divide MH \(MH=32, PE=5\)"),
    ("16x3,-,16x16,1x25,1x1", r"folding has 5 layer\(s\) but the model has 6"),
    ("16x3,*,16x16,-,1x25,1x1", r"layer 1 entry '\*' is not PExSIMD or '-'"),
])
def test_conv_errors_name_the_values(cnv, spec, message):
    with pytest.raises(FoldingError, match=message):
        parse_fold(spec, cnv)
