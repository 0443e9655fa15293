# amaranth: UnusedElaboratable=no
"""Input quantizer: same thermometer code as the model, declared timing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.gateware.quantizer import InputQuantizer
from bnnhw.gateware.simulate import run_stream
from bnnhw.model import InputQuantizer as ModelQuantizer
from bnnhw.packing import pixel_words, vector_to_words, words_to_ints


@settings(max_examples=25, deadline=None)
@given(thresholds=st.lists(st.integers(0, 256), min_size=1, max_size=4, unique=True),
       per_word=st.sampled_from([1, 2, 3, 6]), seed=st.integers(0, 2**32 - 1))
def test_quantizer_matches_model(thresholds, per_word, seed):
    rng = np.random.default_rng(seed)
    q = ModelQuantizer(tuple(sorted(thresholds)), 6)
    images = rng.integers(0, 256, (3, 6)).astype(np.uint8)
    images[0, :len(thresholds)] = np.clip(sorted(thresholds), 0, 255)
    words = [w for image in images for w in pixel_words(image, per_word)]
    expected = [w for bits in q.quantize(images)
                for w in words_to_ints(vector_to_words(bits, per_word * q.levels))]
    dut = InputQuantizer(q.thresholds, 6, per_word)
    run = run_stream(dut, words, len(words), in_stall=0.3, out_stall=0.3, seed=seed)
    assert run.outputs == expected
    run = run_stream(InputQuantizer(q.thresholds, 6, per_word), words, len(words))
    assert run.out_times[0] - run.in_times[0] == dut.latency == 1
    frame = 6 // per_word
    assert dut.cycles_per_frame == frame
    assert run.out_times[frame] - run.out_times[0] == frame


def test_quantizer_rejects_bad_pixels_per_word():
    with pytest.raises(ValueError, match=r"pixels=784, pixels_per_word=3"):
        InputQuantizer((128,), 784, 3)
