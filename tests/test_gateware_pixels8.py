# amaranth: UnusedElaboratable=no
"""The 8-bit first layer in gateware: pixel MVTU (and pixel SWU) against the reference."""

import numpy as np
import pytest
from gateware_helpers import random_folding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gateware_dataflow import check_against_reference, measure

from bnnhw import reference
from bnnhw.folding import balanced_folding, parse_fold
from bnnhw.gateware.dataflow import Accelerator
from bnnhw.gateware.mvtu import MVTU
from bnnhw.gateware.simulate import measure_accelerator
from bnnhw.model import ConvLayer, DenseLayer, MaxPoolLayer, Model, PixelInput


def pixel_thresholds(rng, fan_in, rows):
    """Extremes ``-255 K`` / ``255 K + 1``, uniform values, and values near 0 where sums fall."""
    full = 255 * fan_in
    kind = rng.integers(0, 3, rows)
    return np.where(kind == 0, rng.choice([-full, full + 1], rows),
                    np.where(kind == 1, rng.integers(-full, full + 2, rows),
                             rng.integers(-60 * fan_in, 60 * fan_in + 1, rows)))


def bit_thresholds(rng, mw, mh):
    return rng.integers(0, mw + 2, mh)


def dense_tail(rng, mw, hidden, classes):
    layers = []
    for i, mh in enumerate([*hidden, classes]):
        last = i == len(hidden)
        layers.append(DenseLayer(rng.integers(0, 2, (mh, mw)),
                                 None if last else bit_thresholds(rng, mw, mh)))
        mw = mh
    return layers


def random_pixel_model(rng, pixels, first, hidden, classes):
    """Pixel dense layer of ``first`` neurons, then binary dense layers."""
    layer0 = DenseLayer(rng.integers(0, 2, (first, pixels)),
                        pixel_thresholds(rng, pixels, first), pixels8=True)
    return Model(PixelInput(pixels), (layer0, *dense_tail(rng, first, hidden, classes)))


def random_pixel_conv_model(rng, side, hidden, classes):
    """Pixel conv (random ``K``, ``OC``), optional max-pool, optional binary conv, dense."""
    k = int(rng.integers(1, 4))
    oc = int(rng.integers(1, 4))
    conv = ConvLayer(rng.integers(0, 2, (oc, k * k)), pixel_thresholds(rng, k * k, oc), k,
                     (side, side, 1), pixels8=True)
    layers, shape = [conv], conv.out_shape
    if min(shape[:2]) >= 2 and rng.random() < 0.6:
        layers.append(MaxPoolLayer(shape))
        shape = layers[-1].out_shape
    if min(shape[:2]) >= 2 and rng.random() < 0.4:
        fan_in = 4 * shape[2]
        layers.append(ConvLayer(rng.integers(0, 2, (2, fan_in)), bit_thresholds(rng, fan_in, 2),
                                2, shape))
        shape = layers[-1].out_shape
    return Model(PixelInput(side * side),
                 (*layers, *dense_tail(rng, int(np.prod(shape)), hidden, classes)))


def pixel_images(rng, pixels, n):
    """Uniform pixels mixed with the extremes 0 and 255."""
    uniform = rng.integers(0, 256, (n, pixels))
    edges = rng.choice([0, 255], (n, pixels))
    return np.where(rng.random((n, pixels)) < 0.3, edges, uniform).astype(np.uint8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), pixels=st.integers(1, 12), depth=st.integers(0, 1),
       stall=st.sampled_from([0.0, 0.2, 0.5]))
def test_pixel_accelerator_equals_reference(seed, pixels, depth, stall):
    """Dense pixel layer + binary layers: outputs equal, latency and interval as declared."""
    rng = np.random.default_rng(seed)
    hidden = [int(v) for v in rng.integers(1, 9, depth)]
    model = random_pixel_model(rng, pixels, int(rng.integers(1, 9)), hidden,
                               int(rng.integers(2, 5)))
    folding = random_folding(rng, model)
    images = pixel_images(rng, pixels, 3)
    accel, words = check_against_reference(model, folding, images, seed, stall,
                                           float(rng.choice([0.0, 0.3, 0.6])))
    assert accel.stages[0].name != "quantizer"
    latency, interval = measure(accel, words, len(images))
    assert latency == accel.latency
    assert interval == accel.cycles_per_frame


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), side=st.integers(3, 7),
       stall=st.sampled_from([0.0, 0.2, 0.5]))
def test_pixel_conv_accelerator_equals_reference(seed, side, stall):
    """Pixel conv (+ pool, + binary conv) + dense; the conv bound of :class:`Accelerator`."""
    rng = np.random.default_rng(seed)
    hidden = [int(v) for v in rng.integers(1, 7, int(rng.integers(0, 2)))]
    model = random_pixel_conv_model(rng, side, hidden, int(rng.integers(2, 4)))
    folding = random_folding(rng, model)
    images = pixel_images(rng, side * side, 3)
    accel, words = check_against_reference(model, folding, images, seed, stall,
                                           float(rng.choice([0.0, 0.3, 0.6])))
    latency, interval = measure(accel, words, len(images))
    assert latency >= accel.latency
    assert interval >= accel.cycles_per_frame


def test_pixel_ties_extremes_and_stage_widths():
    """Thresholds equal to the accumulator (ties), -255 K and 255 K + 1, negative sums."""
    rng = np.random.default_rng(11)
    pixels = 6
    images = pixel_images(rng, pixels, 4)
    weights = rng.integers(0, 2, (6, pixels))
    sums = reference.pixel_sums(images, weights)
    thresholds = np.array([sums[0, 0], sums[1, 1] + 1, -255 * pixels, 255 * pixels + 1,
                           sums[2, 4], sums[3, 5]])
    layer0 = DenseLayer(weights, thresholds, pixels8=True)
    model = Model(PixelInput(pixels), (layer0, DenseLayer(rng.integers(0, 2, (3, 6)))))
    bits = reference.layer_outputs(model, images)[1]
    assert bits[0, 0] == 1 and bits[1, 1] == 0 and bits[:, 2].all() and not bits[:, 3].any()
    folding = parse_fold("3x3,3x3@3", model)
    accel = Accelerator(model, folding)
    names = [s.name for s in accel.stages]
    assert names == ["layer0", "layer1", "labelselect"]  # 8 P = 8 SIMD = 24: no converter
    stage = {s.name: s.component for s in accel.stages}
    assert accel.i_stream.payload.shape().width == 24                    # 8 * P
    assert stage["layer0"].in_width == 24 and stage["layer0"].depth == 2  # 8 MW / in_width
    assert stage["layer0"].latency == 2 + 2 + 2 + 3                     # D + SF + tree + 3
    assert stage["layer0"].cycles_per_frame == 2 * 2                     # NF * SF
    accel, words = check_against_reference(model, folding, images, 0, 0.3, 0.3)
    assert measure(accel, words, len(images)) == (accel.latency, accel.cycles_per_frame)
    # P = 3, SIMD = 2: words of lcm(24, 16) = 48 bits through a converter
    accel = Accelerator(model, parse_fold("3x2,3x3@3", model))
    assert [s.name for s in accel.stages][:2] == ["width0", "layer0"]
    assert accel.stages[0].component.out_width == 48
    check_against_reference(model, parse_fold("3x2,3x3@3", model), images, 1, 0.3, 0.3)


def test_pixel_conv_stage_list_and_timing():
    """No quantizer; 8P -> 8-bit converter; the SWU carries 8 bits per pixel."""
    rng = np.random.default_rng(4)
    conv = ConvLayer(rng.integers(0, 2, (4, 9)), pixel_thresholds(rng, 9, 4), 3, (6, 6, 1),
                     pixels8=True)
    model = Model(PixelInput(36), (conv, MaxPoolLayer((4, 4, 4)),
                                   *dense_tail(rng, 16, [6], 3)))
    folding = parse_fold("2x3,-,3x4,3x2@3", model)
    accel = Accelerator(model, folding)
    names = [s.name for s in accel.stages]
    assert names == ["width0", "swu0", "layer0", "width1", "layer1", "layer2", "width3",
                     "layer3", "labelselect"]
    stage = {s.name: s.component for s in accel.stages}
    assert (stage["width0"].in_width, stage["width0"].out_width) == (24, 8)   # 8P -> 8 bits
    assert stage["swu0"].in_shape == (6, 6, 8) and stage["swu0"].out_width == 24
    assert stage["layer0"].in_width == 24 and stage["layer0"].pixels8
    assert stage["layer0"].cycles_per_frame == 16 * 2 * 3                    # OH*OW * NF*SF
    images = pixel_images(rng, 36, 4)
    accel, words = check_against_reference(model, folding, images, 0, 0.0, 0.0)
    latency, interval = measure(accel, words, len(images))
    assert latency == accel.latency
    # the conv bound: the MVTU (96 cycles) runs dry while the SWU refills its rows between
    # frames, as the Accelerator docstring states
    assert interval >= accel.cycles_per_frame == 96


def test_pixel_balanced_folding_runs_at_declared_rate():
    rng = np.random.default_rng(3)
    model = random_pixel_model(rng, 64, 32, [16], 10)
    accel = Accelerator(model, balanced_folding(model, lanes=16))
    figures = measure_accelerator(accel, pixel_images(rng, 64, 5))
    assert figures["correct"]
    assert figures["interval"] == figures["declared_cycles_per_frame"]
    assert figures["latency"] == figures["declared_latency"]


def test_pixel_mvtu_checks_its_arguments():
    w = np.ones((2, 4), np.uint8)
    with pytest.raises(ValueError, match="layer 7: a pixels8 MVTU needs thresholds"):
        MVTU(w, None, 1, 2, name="7", pixels8=True)
    with pytest.raises(ValueError, match=r"multiple of 8\*SIMD dividing 8\*MW \(in_width=2"):
        MVTU(w, np.zeros(2), 1, 2, in_width=2, name="7", pixels8=True)
    mvtu = MVTU(w, np.array([-1020, 1021]), 2, 2, pixels8=True)
    assert (mvtu.in_width, mvtu.depth, mvtu.latency) == (16, 2, 2 + 2 + 1 + 3)


def test_accelerator_refuses_an_mvtu_without_pixel_lanes():
    """A subclass whose ``make_mvtu`` ignores ``pixels8`` is refused, naming the input kind."""

    class BitsOnly(Accelerator):
        def make_mvtu(self, index, layer, pe, simd, in_width, banks=2):
            return MVTU(layer.weights, layer.thresholds, pe, simd, name=str(index))

    model = random_pixel_model(np.random.default_rng(0), 4, 3, [], 2)
    with pytest.raises(ValueError, match="layer 0: MVTU does not build .* kind 'pixels8'"):
        BitsOnly(model, parse_fold("1x4,1x3@4", model))
