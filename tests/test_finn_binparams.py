"""FINN / BNN-PYNQ binparams import: a writer of the MVTU layout, round trips over random
padded networks and foldings against a direct evaluation of the padded network, and errors."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.finn_binparams import (
    PAD_THRESHOLD,
    BinparamsError,
    BinparamsLayer,
    import_binparams,
    parse_layers,
)
from bnnhw.model import load_model
from bnnhw.reference import argmax_lowest, infer


def write_binparams(folder, index, layer, bits, thresholds):
    """Write one layer's ``(MH, MW)`` bits and ``(MH,)`` thresholds (or None) in FINN's
    layout: PE ``p`` holds neurons ``nf * PE + p``; word ``nf * SF + sf`` bit ``i`` is column
    ``sf * SIMD + i``."""
    for p in range(layer.pe):
        rows = bits[p::layer.pe].reshape(layer.nf, layer.sf, layer.simd).astype(np.uint64)
        words = (rows << np.arange(layer.simd, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)
        words.astype("<u8").tofile(folder / f"{index}-{p}-weights.bin")
        if thresholds is not None:
            thresholds[p::layer.pe].astype("<i8").tofile(folder / f"{index}-{p}-thres.bin")


def padded_network(rng, inputs, hidden, outputs, output_thresholds):
    """Random layers ``MW x MH : SIMD x PE`` with padded inputs and outputs, their bits and
    thresholds (padding neurons at FINN's 32767)."""
    layers, params, real = [], [], inputs
    for i, mh_real in enumerate([*hidden, outputs]):
        last = i == len(hidden)
        simd = int(rng.choice([1, 2, 3, 4, 8, 64]))
        mw = -(-real // simd) * simd + simd * int(rng.integers(0, 2))
        pe = int(rng.choice([1, 2, 3]))
        mh = -(-mh_real // pe) * pe + (pe * int(rng.integers(0, 2)) if last else 0)
        layer = BinparamsLayer(mw, mh, simd, pe)
        bits = rng.integers(0, 2, (mh, mw)).astype(np.uint8)
        t = None
        if not last or output_thresholds:
            t = rng.integers(-3, mw + 3, mh).astype(np.int64)
            t[rng.random(mh) < 0.1] = PAD_THRESHOLD
        layers.append(layer)
        params.append((bits, t))
        real = mh
    return layers, params


def finn_forward(params, layers, images, inputs, threshold, outputs):
    """The padded network itself: input bits ``pixel >= threshold`` padded with 0, XNOR
    popcounts over every padded column, ``P > T``; scores ``P`` or ``P - T``."""
    x = (images >= threshold).astype(np.uint8)
    for (bits, t), layer in zip(params, layers, strict=True):
        x = np.pad(x, ((0, 0), (0, layer.mw - x.shape[1])))
        p = (x[:, None, :] == bits[None, :, :]).sum(axis=2)
        if layer is layers[-1]:
            scores = (p if t is None else p - t[None, :])[:, :outputs]
            return argmax_lowest(scores), scores
        x = (p > t[None, :]).astype(np.uint8)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), depth=st.integers(0, 2),
       output_thresholds=st.booleans())
def test_round_trip_equals_the_padded_network(tmp_path_factory, seed, depth, output_thresholds):
    rng = np.random.default_rng(seed)
    inputs, outputs = int(rng.integers(3, 40)), int(rng.integers(2, 7))
    hidden = [int(v) for v in rng.integers(2, 20, depth)]
    layers, params = padded_network(rng, inputs, hidden, outputs, output_thresholds)
    folder = tmp_path_factory.mktemp("bp")
    for i, (layer, (bits, t)) in enumerate(zip(layers, params, strict=True)):
        write_binparams(folder, i, layer, bits, t)
    threshold = int(rng.integers(0, 257))
    model = import_binparams(folder, layers, inputs, outputs, threshold)
    images = rng.integers(0, 256, (64, inputs), dtype=np.uint8)
    images[0], images[1] = 0, 255
    classes, scores = infer(model, images)
    expected, finn_scores = finn_forward(params, layers, images, inputs, threshold, outputs)
    assert np.array_equal(classes, expected)
    # Same scores up to one constant for the whole network.
    difference = scores - finn_scores
    assert (difference == difference[0, 0]).all()
    assert [layer.out_features for layer in model.layers] == [
        *(v.mh for v in layers[:-1]), outputs]


def test_parse_layers_and_its_errors():
    assert parse_layers("832x1024:64x32,1024x64:8x16") == [
        BinparamsLayer(832, 1024, 64, 32), BinparamsLayer(1024, 64, 8, 16)]
    with pytest.raises(BinparamsError, match=r"layer 1: '1024x64' is not MWxMH:SIMDxPE"):
        parse_layers("832x1024:64x32,1024x64")
    with pytest.raises(BinparamsError, match=r"SIMD 3 must divide MW 832"):
        parse_layers("832x1024:3x32")
    with pytest.raises(BinparamsError, match=r"SIMD 128 does not fit a 64-bit word"):
        parse_layers("1024x64:128x16")


def test_wrong_sizes_and_missing_files_are_named(tmp_path):
    rng = np.random.default_rng(0)
    layers, params = padded_network(rng, 10, [6], 3, False)
    for i, (layer, (bits, t)) in enumerate(zip(layers, params, strict=True)):
        write_binparams(tmp_path, i, layer, bits, t)
    weights = tmp_path / "0-0-weights.bin"
    good = weights.read_bytes()
    weights.write_bytes(good[:-8])
    expected = len(good)
    with pytest.raises(BinparamsError, match=rf"0-0-weights.bin: {expected - 8} bytes, "
                                             rf"expected {expected}"):
        import_binparams(tmp_path, layers, 10, 3, 128)
    weights.write_bytes(good)
    thres = tmp_path / "0-0-thres.bin"
    kept = thres.read_bytes()
    thres.unlink()
    with pytest.raises(BinparamsError, match=r"0-0-thres.bin: missing"):
        import_binparams(tmp_path, layers, 10, 3, 128)
    thres.write_bytes(kept)
    with pytest.raises(BinparamsError, match=r"MW \d+ is smaller than its 999 inputs"):
        import_binparams(tmp_path, layers, 999, 3, 128)
    with pytest.raises(BinparamsError, match=r"outputs 1 must lie in \[2, "):
        import_binparams(tmp_path, layers, 10, 1, 128)


@pytest.mark.needs_data
def test_import_command_writes_a_checked_model(tmp_path, capsys):
    from bnnhw import datasets
    from bnnhw.tools.cli import main

    rng = np.random.default_rng(5)
    layers, params = padded_network(rng, 784, [32], 10, True)
    folder = tmp_path / "binparams"
    folder.mkdir()
    for i, (layer, (bits, t)) in enumerate(zip(layers, params, strict=True)):
        write_binparams(folder, i, layer, bits, t)
    spec = ",".join(f"{v.mw}x{v.mh}:{v.simd}x{v.pe}" for v in layers)
    out = tmp_path / "m.npz"
    argv = ["import", str(folder), "--from", "finn-binparams", "--layers", spec, "--inputs",
            "784", "--outputs", "10", "--input-threshold", "128", "--limit", "200"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model = load_model(out)
    assert result["model_sha256"] == model.sha256() and result["checked_images"] == 200
    test = datasets.load("mnist", "test")
    classes, _ = infer(model, test.images[:200])
    expected, _ = finn_forward(params, layers, test.images[:200], 784, 128, 10)
    assert np.array_equal(classes, expected)
    assert result["accuracy"] == round(100 * float((classes == test.labels[:200]).mean()), 2)
    bad = tmp_path / "bad.npz"
    (folder / "1-0-weights.bin").write_bytes(b"\0" * 3)
    assert main([*argv, "--out", str(bad)]) == 2
    assert "1-0-weights.bin: 3 bytes" in capsys.readouterr().err and not bad.exists()
