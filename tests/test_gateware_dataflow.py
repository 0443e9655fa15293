# amaranth: UnusedElaboratable=no
"""The whole accelerator against the reference: random networks, foldings and stalls."""

import numpy as np
import pytest
from gateware_helpers import (
    frame_words,
    random_conv_model,
    random_folding,
    random_images,
    random_model,
    reference_outputs,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnhw.folding import Folding, balanced_folding, parse_fold
from bnnhw.gateware.dataflow import Accelerator
from bnnhw.gateware.simulate import measure_accelerator, run_stream, steady_interval


def check_against_reference(model, folding, images, seed, in_stall, out_stall):
    accel = Accelerator(model, folding)
    words = frame_words(folding, images)
    run = run_stream(accel, words, len(images), in_stall=in_stall, out_stall=out_stall,
                     seed=seed, max_cycles=budget(accel, len(images)))
    assert [accel.decode(word) for word in run.outputs] == reference_outputs(model, images)
    return accel, words


def budget(accel, frames):
    """Cycles after which a run counts as hung: generous for stalls of up to 60 %."""
    return 1000 + 20 * (accel.latency + frames * accel.cycles_per_frame)


def measure(accel, words, frames):
    """Latency and steady-state interval with no stalls (first frame, then frames 2..)."""
    run = run_stream(accel, words, frames, max_cycles=budget(accel, frames))
    return run.out_times[0] - run.in_times[0], steady_interval(run.out_times, 1, skip=1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), depth=st.integers(1, 3), levels=st.integers(1, 3),
       pixels=st.integers(1, 12), stall=st.sampled_from([0.0, 0.2, 0.5]))
def test_accelerator_equals_reference(seed, depth, levels, pixels, stall):
    rng = np.random.default_rng(seed)
    sizes = [int(v) for v in rng.integers(1, 13, depth - 1)] + [int(rng.integers(2, 7))]
    model = random_model(rng, pixels, levels, sizes)
    folding = random_folding(rng, model)
    images = random_images(rng, model, 3)
    accel, words = check_against_reference(model, folding, images, seed, stall,
                                           float(rng.choice([0.0, 0.3, 0.6])))
    latency, interval = measure(accel, words, len(images))
    assert latency == accel.latency
    assert interval == accel.cycles_per_frame


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), side=st.integers(4, 8), levels=st.integers(1, 2),
       blocks=st.integers(1, 2), stall=st.sampled_from([0.0, 0.2, 0.5]))
def test_conv_accelerator_equals_reference(seed, side, levels, blocks, stall):
    """Conv (+ max-pool) + dense networks on small images, random foldings and stalls."""
    rng = np.random.default_rng(seed)
    hidden = [int(v) for v in rng.integers(1, 9, int(rng.integers(0, 2)))]
    model = random_conv_model(rng, side, levels, blocks, hidden, int(rng.integers(2, 5)))
    folding = random_folding(rng, model)
    images = random_images(rng, model, 3)
    accel, words = check_against_reference(model, folding, images, seed, stall,
                                           float(rng.choice([0.0, 0.3, 0.6])))
    latency, interval = measure(accel, words, len(images))
    assert latency == accel.latency
    assert interval == accel.cycles_per_frame


def test_conv_mvtu_rides_out_the_frame_gap():
    """6x6 map, K = 3: the window unit sends nothing for ``2 * 6 + 3 = 15`` cycles between
    frames, while the bottleneck conv MVTU has 4 cycles of work per window. Two banks would run
    dry for 7 cycles a frame (71 instead of 64); it gets ``ceil(15 / 4) = 4``."""
    from gateware_helpers import random_thresholds

    from bnnhw.model import ConvLayer, DenseLayer, InputQuantizer, Model

    rng = np.random.default_rng(64)
    conv = ConvLayer(rng.integers(0, 2, (4, 18)), random_thresholds(rng, 18, 4), 3, (6, 6, 2))
    model = Model(InputQuantizer((60, 150), 36), (
        conv, DenseLayer(rng.integers(0, 2, (3, 64)))))
    folding = parse_fold("2x9,1x16@12", model)
    images = random_images(rng, model, 4)
    accel, words = check_against_reference(model, folding, images, 0, 0.0, 0.0)
    stage = {s.name: s.component for s in accel.stages}
    assert stage["layer0"].cycles_per_frame == accel.cycles_per_frame == 64
    assert stage["layer0"].banks == 4
    assert measure(accel, words, len(images)) == (accel.latency, 64)


def test_conv_stage_list_and_timing():
    """Converter to C bits before each conv / pool, SWU -> MVTU over OH*OW windows."""
    from gateware_helpers import random_thresholds

    from bnnhw.model import ConvLayer, DenseLayer, InputQuantizer, MaxPoolLayer, Model

    rng = np.random.default_rng(4)
    conv = ConvLayer(rng.integers(0, 2, (4, 18)), random_thresholds(rng, 18, 4), 3, (6, 6, 2))
    model = Model(InputQuantizer((60, 150), 36), (
        conv, MaxPoolLayer((4, 4, 4)),
        DenseLayer(rng.integers(0, 2, (6, 16)), random_thresholds(rng, 16, 6)),
        DenseLayer(rng.integers(0, 2, (3, 6)))))
    accel = Accelerator(model, parse_fold("2x3,-,3x4,3x2@3", model))
    names = [s.name for s in accel.stages]
    assert names == ["quantizer", "width0", "swu0", "layer0", "width1", "layer1", "layer2",
                     "width3", "layer3", "labelselect"]
    assert [(s.index, s.kind) for s in accel.stages] == [
        (None, "quantizer"), (0, "width"), (0, "swu"), (0, "mvtu"), (1, "width"),
        (1, "maxpool"), (2, "mvtu"), (3, "width"), (3, "mvtu"), (None, "labelselect")]
    stage = {s.name: s.component for s in accel.stages}
    assert (stage["width0"].in_width, stage["width0"].out_width) == (6, 2)     # P*L -> C
    assert stage["swu0"].out_width == 3 and stage["layer0"].in_width == 3    # SIMD
    assert stage["layer0"].cycles_per_frame == 16 * 2 * 6                    # OH*OW * NF*SF
    assert (stage["width1"].in_width, stage["width1"].out_width) == (2, 4)     # PE -> C
    assert accel.cycles_per_frame == 192
    images = random_images(rng, model, 4)
    accel, words = check_against_reference(model, parse_fold("2x3,-,3x4,3x2@3", model), images,
                                           0, 0.0, 0.0)
    assert measure(accel, words, len(images)) == (accel.latency, accel.cycles_per_frame)


def test_pinned_edge_cases():
    """Constant neurons (T = 0 and T = MW + 1), quantizer thresholds 0 and 256, score ties."""
    rng = np.random.default_rng(7)
    model = random_model(rng, 4, 2, [6, 4])
    quantizer = type(model.quantizer)((0, 256), 4)
    hidden = type(model.layers[0])(model.layers[0].weights, np.array([0, 9, 9, 0, 9, 0]))
    # Output rows 0 and 2 equal, rows 1 and 3 equal: every frame has a tie.
    out = model.layers[1].weights.copy()
    out[2], out[3] = out[0], out[1]
    model = type(model)(quantizer, (hidden, type(model.layers[1])(out)))
    images = rng.integers(0, 256, (4, 4)).astype(np.uint8)
    check_against_reference(model, parse_fold("3x4,2x3@2", model), images, 0, 0.3, 0.3)


def test_balanced_folding_runs_at_declared_rate():
    """A multi-layer net, balanced folding: the measured interval is the declared one, and
    that is within 5 % of the slowest layer's NF * SF (efficiency >= 0.95)."""
    rng = np.random.default_rng(3)
    model = random_model(rng, 64, 1, [32, 32, 10])
    accel = Accelerator(model, balanced_folding(model, lanes=16))
    figures = measure_accelerator(accel, random_images(rng, model, 5))
    assert figures["correct"]
    assert figures["interval"] == figures["declared_cycles_per_frame"]
    assert figures["latency"] == figures["declared_latency"]
    assert figures["efficiency"] >= 0.95


def test_stage_list_and_widths():
    rng = np.random.default_rng(5)
    model = random_model(rng, 6, 2, [4, 3])
    accel = Accelerator(model, parse_fold("2x3,3x2@3", model))
    names = [s.name for s in accel.stages]
    # P*L = 6 is a multiple of SIMD 3: no converter; PE 2 and SIMD 2: none either.
    assert names == ["quantizer", "layer0", "layer1", "labelselect"]
    assert accel.cycles_per_frame == max(s.cycles_per_frame for s in accel.stages)
    assert accel.class_bits == 2 and accel.score_bits == 3
    assert accel.out_width == 2 + 3 * 3
    assert accel.i_stream.payload.shape().width == 24


def test_rejects_bad_folding():
    rng = np.random.default_rng(5)
    model = random_model(rng, 6, 1, [4, 3])
    with pytest.raises(ValueError, match=r"layer 0: PE must divide MH \(MH=4, PE=3\)"):
        Accelerator(model, Folding(((3, 1), (1, 1)), 1))
