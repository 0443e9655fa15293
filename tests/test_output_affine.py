# amaranth: UnusedElaboratable=no
"""The output layer's per-class affine: fold pass, model file, reference, label select,
accelerator, all exact."""

import json
from pathlib import Path

import numpy as np
import pytest
from gateware_helpers import (
    batchnorm_table,
    random_folding,
    random_images,
    random_model,
    with_output_affine,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnhw import reference
from bnnhw.gateware.dataflow import Accelerator
from bnnhw.gateware.labelselect import LabelSelect
from bnnhw.gateware.simulate import run_stream
from bnnhw.model import DenseLayer, ModelError, load_model
from bnnhw.packing import pixel_words
from bnnhw.passes import fold_output_affine
from bnnhw.reference import argmax_lowest


def pm1(rng, classes, k):
    return rng.choice([-1, 1], (classes, k))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), classes=st.integers(2, 12), k=st.integers(1, 700))
def test_fold_orders_every_pair_as_the_float_scores(seed, classes, k):
    rng = np.random.default_rng(seed)
    table = batchnorm_table(rng, classes, k)
    layer = fold_output_affine(pm1(rng, classes, k), table)
    p = np.arange(k + 1)[:, None].repeat(classes, axis=1)
    scores = layer.scores(p)
    # Every pair (c, P), (d, Q) compares the same way: dense ranks agree over the whole table.
    assert np.array_equal(np.unique(scores.ravel(), return_inverse=True)[1],
                          np.unique(table.ravel(), return_inverse=True)[1])
    assert scores.min() == 0 and layer.score_max == scores.max()
    popcounts = rng.integers(0, k + 1, (500, classes))
    floats = table[popcounts, np.arange(classes)]
    assert np.array_equal(argmax_lowest(floats), argmax_lowest(layer.scores(popcounts)))


def test_fold_pins_negative_zero_and_tied_scales():
    k = 4
    p = np.arange(k + 1, dtype=np.float64)
    # class 0: decreasing (gamma < 0); class 1: constant 1.5 (gamma = 0); class 2: increasing,
    # class 3 its twin; ties go to the lowest index.
    table = np.stack([3 - p, np.full(k + 1, 1.5), p - 2, p - 2], axis=1)
    layer = fold_output_affine(np.ones((4, k)), table)
    assert layer.scale[1] == 0 and layer.scale[0] < 0 < layer.scale[2] == layer.scale[3]
    assert layer.offset[2] == layer.offset[3]
    cases = {(0, 0, 0, 0): 0, (4, 0, 0, 0): 1, (4, 0, 4, 4): 2, (4, 0, 3, 4): 3,
             (1, 0, 4, 4): 0, (2, 0, 4, 3): 2}
    for popcounts, winner in cases.items():
        floats = table[list(popcounts), range(4)]
        assert argmax_lowest(floats[None])[0] == winner
        assert argmax_lowest(layer.scores(np.array([popcounts])))[0] == winner


def test_fold_refuses_scores_that_are_not_affine():
    table = np.stack([np.arange(5.0) ** 2, np.full(5, 4.5)], axis=1)
    with pytest.raises(ModelError, match=r"no exact integer affine form .* class \d at popcount"):
        fold_output_affine(np.ones((2, 4)), table)


def test_model_file_round_trip_and_refusals(tmp_path):
    rng = np.random.default_rng(3)
    model = with_output_affine(rng, random_model(rng, 6, 1, [5, 4]))
    assert model.header()["layers"][-1]["affine"] is True
    path = model.save(tmp_path / "m.npz")
    loaded = load_model(path)
    assert loaded.sha256() == model.sha256()
    out = loaded.layers[-1]
    assert np.array_equal(out.scale, model.layers[-1].scale)
    assert np.array_equal(out.offset, model.layers[-1].offset)
    # Scores must stay in [0, 2**60): a negative one is refused, naming the range.
    with pytest.raises(ModelError, match=r"must lie in \[0, 2\*\*60\).*got \[-1,"):
        DenseLayer(np.ones((2, 3)), None, scale=np.array([1, 1]), offset=np.array([0, -1]))
    with pytest.raises(ModelError, match="both a scale and an offset"):
        DenseLayer(np.ones((2, 3)), None, scale=np.array([1, 1]))
    with pytest.raises(ModelError, match="only the output layer"):
        DenseLayer(np.ones((2, 3)), np.array([1, 1]), scale=np.array([1, 1]),
                   offset=np.array([0, 0]))


def test_model_file_without_affine_flag_refuses_affine_arrays(tmp_path):
    rng = np.random.default_rng(4)
    model = with_output_affine(rng, random_model(rng, 6, 1, [5, 4]))
    arrays = model.arrays()
    header = model.header()
    del header["layers"][-1]["affine"]
    arrays["header"] = np.array(json.dumps(header, sort_keys=True))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelError, match=r"holds 'layer1\.scale' but its header entry has no"):
        load_model(tmp_path / "bad.npz")


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from([(2, 1), (4, 2), (6, 3), (10, 1), (10, 5), (10, 10)]),
       k=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_labelselect_affine_matches_reference(shape, k, seed):
    classes, pe = shape
    rng = np.random.default_rng(seed)
    layer = fold_output_affine(pm1(rng, classes, k), batchnorm_table(rng, classes, k))
    popcounts = rng.integers(0, k + 1, (5, classes))
    in_bits, score_bits = k.bit_length(), max(1, layer.score_max.bit_length())
    words = [sum(int(v) << (p * in_bits) for p, v in enumerate(row[s:s + pe]))
             for row in popcounts for s in range(0, classes, pe)]
    dut = LabelSelect(classes, pe, score_bits, in_bits, layer.scale, layer.offset)
    run = run_stream(dut, words, len(popcounts), in_stall=0.3, out_stall=0.4, seed=seed)
    scores = layer.scores(popcounts)
    mask = (1 << score_bits) - 1
    got = [(w & ((1 << dut.class_bits) - 1),
            [(w >> (dut.class_bits + c * score_bits)) & mask for c in range(classes)])
           for w in run.outputs]
    assert got == [(int(c), [int(v) for v in row])
                   for c, row in zip(argmax_lowest(scores), scores, strict=True)]
    timed = run_stream(LabelSelect(classes, pe, score_bits, in_bits, layer.scale, layer.offset),
                       words, len(popcounts))
    # One cycle more than without an affine: the product and sum end in a register.
    assert timed.out_times[0] - timed.in_times[0] == dut.latency == classes // pe + 1
    assert timed.out_times[0] == dut.frame_times(timed.in_times[:classes // pe])[0]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), depth=st.integers(1, 3))
def test_accelerator_with_output_affine_equals_reference(seed, depth):
    rng = np.random.default_rng(seed)
    sizes = [int(v) for v in rng.integers(1, 13, depth - 1)] + [int(rng.integers(2, 7))]
    model = with_output_affine(rng, random_model(rng, int(rng.integers(1, 10)), 1, sizes))
    folding = random_folding(rng, model)
    images = random_images(rng, model, 3)
    accel = Accelerator(model, folding)
    assert accel.score_bits == max(1, model.layers[-1].score_max.bit_length())
    classes, scores = reference.infer(model, images)
    words = [w for image in images for w in pixel_words(image, folding.pixels_per_word)]
    run = run_stream(accel, words, len(images), in_stall=0.2, out_stall=0.3, seed=seed)
    assert [accel.decode(w) for w in run.outputs] == [
        (int(c), [int(v) for v in s]) for c, s in zip(classes, scores, strict=True)]
    timed = run_stream(accel, words, len(images))
    assert timed.out_times[0] - timed.in_times[0] == accel.latency


@pytest.mark.needs_data
@pytest.mark.cocotb
def test_icarus_runs_a_trained_network_with_a_final_batch_norm(tmp_path):
    """The trained tfc with a random final batch norm (scales of both signs and zero) folded
    into its output layer: the exported Verilog on Icarus equals the reference on MNIST."""
    from bnnhw.sim import run_sim

    rng = np.random.default_rng(11)
    model = with_output_affine(rng, load_model(Path(__file__).resolve().parents[1] / "docs"
                                               / "models" / "tfc_mnist.npz"))
    out = model.layers[-1]
    assert (out.scale < 0).any() and (out.scale > 0).any()
    result = run_sim(model, limit=60, simulator="icarus", fold="balanced:64", build_dir=tmp_path,
                     seed=2, stall=0.2)
    assert result["images"] == result["received"] == 60
    assert (result["mismatches"], result["lost"], result["duplicated"]) == (0, 0, 0)
    assert result["latency_measured"] == result["latency_declared"]
    assert result["cycles_per_frame_measured"] == result["cycles_per_frame_declared"]


@pytest.mark.needs_data
def test_trainer_output_batch_norm_exports_the_exact_affine(tmp_path):
    """``train(..., output_bn=True)``: a final batch norm per class, trained, folded into the
    integer affine, float = reference on all 10,000 test images, scores in the same order."""
    from bnnhw.train import train

    from bnnhw import datasets

    out = tmp_path / "tfc_bn.npz"
    result = train("mnist", "tfc", 1, 0, out, progress=False, limit_train=5000, output_bn=True)
    model = load_model(out)
    assert model.layers[-1].affine and model.meta["recipe"]["output_bn"] is True
    test = datasets.load("mnist", "test")
    classes, scores = reference.infer(model, test.images)
    logits = result.network.logits(test.images)
    assert logits.dtype == np.float64
    np.testing.assert_array_equal(classes, argmax_lowest(logits))
    assert float((classes == test.labels).mean()) == result.float_test_accuracy
    # The integer scores order every image's classes as the float scores do.
    assert (np.sign(scores[:, :, None] - scores[:, None, :])
            == np.sign(logits[:, :, None] - logits[:, None, :])).all()


def test_cnn_with_output_batch_norm_exports_exactly():
    from bnnhw.train.conv import CNN
    from bnnhw.train.layers import F32, BatchNorm1d

    from bnnhw.model import InputQuantizer

    rng = np.random.default_rng(5)
    net = CNN(((3, True),), (6,), 3, InputQuantizer.thermometer(2, 64), rng,
              np.random.default_rng(6), output_bn=True)
    images = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    for _ in range(3):
        logits = net.forward(net.encode(images).astype(F32), training=True)
        net.backward(np.sign(logits) / 64)
    for layer in net.layers:
        if isinstance(layer, BatchNorm1d):   # negative and zero scales, the output one too
            layer.params["gamma"][::2] *= -1
            layer.params["gamma"][1] = 0
    model = net.export({"arch": "random"})
    assert [layer.kind for layer in model.layers] == ["conv", "maxpool", "dense", "output"]
    assert model.layers[-1].affine and model.layers[-1].scale[1] == 0
    np.testing.assert_array_equal(reference.infer(model, images)[0], net.predict(images))
