"""SPRAM weights: image layout, placement checks, and LOAD_WEIGHTS in the link (Amaranth sim)."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from bnnhw.boards import protocol
from bnnhw.boards.link import Link
from bnnhw.boards.protocol import Command, FrameDecoder, Status
from bnnhw.boards.spram import weight_image
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.devices import (
    SPRAM_WORDS,
    auto_spram_layers,
    check_fits,
    get_board,
    plan_spram,
    spram_folding,
)
from bnnhw.folding import parse_fold
from bnnhw.model import DenseLayer, InputQuantizer, Model
from bnnhw.packing import mvtu_weight_words


def mlp(sizes, seed=0):
    rng = np.random.default_rng(seed)
    layers = [DenseLayer(rng.integers(0, 2, (o, i)), np.zeros(o, np.int64))
              for i, o in zip(sizes[:-2], sizes[1:-1], strict=True)]
    layers.append(DenseLayer(rng.integers(0, 2, (sizes[-1], sizes[-2]))))
    return Model(InputQuantizer((128,), sizes[0]), tuple(layers))


SFC = (784, 256, 256, 256, 10)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([(1, 16), (2, 8), (2, 16), (4, 4), (1, 7), (5, 4), (3, 12)]),
       st.integers(0, 2**32 - 1))
def test_weight_image_holds_each_pe_word(fold, seed):
    pe, simd = fold
    model = mlp((simd * 3, pe * 2, 10 * pe), seed)
    folding = parse_fold(f"{pe}x{simd},{pe}x{pe}", model)
    plan = plan_spram(model, folding, (0,))
    (p,) = plan
    assert (p.first, p.count, p.depth) == (0, -(-pe * simd // 16), 6)
    regions = weight_image(model, plan)
    assert [o for o, _ in regions] == [2 * SPRAM_WORDS * j for j in range(p.count)]
    # Word a of SPRAM j, bit b = bit 16 j + b of the wide word; PE pe's SIMD bits follow.
    blocks = [np.unpackbits(np.frombuffer(d, np.uint8).reshape(p.depth, 2), axis=1,
                            bitorder="little") for _, d in regions]
    wide = np.concatenate(blocks, axis=1)
    words = mvtu_weight_words(model.layers[0].weights, pe, simd)
    for k in range(pe):
        assert (wide[:, k * simd:(k + 1) * simd] == words[k]).all()
    assert not wide[:, pe * simd:].any()


def test_sfc_placement_and_messages():
    model = mlp(SFC)
    assert auto_spram_layers(model, 92_160) == (0, 1)
    board = get_board("icebreaker")
    assert check_fits(model, board) == (0, 1)
    folding = parse_fold("2x16,1x16,1x16,1x4", model)
    plan = plan_spram(model, folding, (0, 1))
    assert [(p.first, p.count, p.depth) for p in plan] == [(0, 2, 6272), (2, 1, 4096)]
    with pytest.raises(ValueError, match=r"need 5 SPRAMs but the UP5K has 4 \(layer 0: 4 "
                                         r"\(PE\*SIMD=64\), layer 1: 1"):
        check_fits(model, board, parse_fold("4x16,1x16,1x16,1x4", model), (0, 1))
    with pytest.raises(ValueError, match="layer 1: NF\\*SF = 65536 words exceed the 16384"):
        plan_spram(model, parse_fold("2x16,1x1,1x16,1x4", model), (0, 1))
    with pytest.raises(ValueError, match=r"layers outside SPRAM \(spram_layers=\(0,\)\) have "
                                         r"133632 weight bits but the iCE40UP5K"):
        check_fits(model, board, spram_layers=(0,))
    with pytest.raises(ValueError, match="SPRAM layer 7 does not exist"):
        plan_spram(model, folding, (7,))


def test_spram_folding_for_sfc():
    model = mlp(SFC)
    folding = spram_folding(model, (0, 1), 92_160, 96)
    assert folding.spec == "1x49,1x16,1x16,1x1@1"
    assert folding.layer_cycles(model) == [4096, 4096, 4096, 2560]
    plan = plan_spram(model, folding, (0, 1))
    assert [(p.first, p.count, p.rom_bits) for p in plan] == [(0, 3, 1), (3, 1, 0)]
    regions = weight_image(model, plan)
    assert [len(d) for _, d in regions] == [2 * 4096] * 4
    with pytest.raises(ValueError, match=r"no folding puts layers \(0,\) of 784-256-256-256-10 "
                                         r"in the 4 SPRAMs with <= 92160 weight bits"):
        spram_folding(model, (0,), 92_160, 96)


def test_too_big_for_ebr_and_spram():
    big = mlp((784, 1024, 512, 10))
    with pytest.raises(ValueError, match=r"784-1024-512-10 has 1332224 weight bits but the "
                                         r"iCE40UP5K on icebreaker has 122880 bits of block "
                                         r"RAM \(30 x 4096\) \+ 1048576 bits of SPRAM"):
        check_fits(big, get_board("icebreaker"))
    with pytest.raises(ValueError, match=r"\(56 x 18432\) and no SPRAM: choose a smaller"):
        check_fits(big, get_board("orangecrab-25f"))
    with pytest.raises(ValueError, match=r"LFE5U-85F on ulx3s-85f has no SPRAM \(spram_layers"):
        check_fits(mlp(SFC), get_board("ulx3s-85f"), spram_layers=(0,))
    assert check_fits(mlp((64, 16, 10)), get_board("icebreaker")) == ()


def run_load(data, cycles):
    """Send ``data`` to a LOAD_WEIGHTS link one byte per cycle; return writes, replies, link."""
    ident = protocol.Identity("00112233aabbccdd", 16, 1, 3, 2, 6, 4, 99, 12_000_000,
                              1_000_000, True, "4x4,3x4", weights_in_ram=True)
    link = Link(pixels=16, pixels_per_word=4, out_width=20, class_bits=2,
                identity=ident.encode(), timeout_cycles=64, load_weights=True)
    sim = Simulator(link)
    sim.add_clock(1e-6)
    writes, out = [], bytearray()

    async def producer(ctx):
        for byte in data:
            ctx.set(link.i_bytes.valid, 1)
            ctx.set(link.i_bytes.payload, byte)
            await ctx.tick().until(link.i_bytes.ready)
        ctx.set(link.i_bytes.valid, 0)

    async def monitor(ctx):
        ctx.set(link.o_bytes.ready, 1)
        async for _, _, en, addr, wdata, valid, payload in ctx.tick().sample(
                link.w_en, link.w_addr, link.w_data, link.o_bytes.valid, link.o_bytes.payload):
            if en:
                writes.append((addr, wdata))
            if valid:
                out.append(payload)

    sim.add_testbench(producer)
    sim.add_process(monitor)
    sim.run_until(1e-6 * cycles)
    return writes, FrameDecoder().feed(bytes(out)), ident


def test_link_writes_words_and_reports_loaded():
    regions = [(0x8000 - 4, bytes(range(1, 9))), (2 * SPRAM_WORDS * 3 + 2, b"\xaa\x55")]
    frames = protocol.load_weight_frames(regions, chunk=4)
    bad = bytearray(frames[1])
    bad[-1] ^= 1
    data = (protocol.identify() + frames[0] + bytes(bad) + b"".join(frames[1:])
            + protocol.identify())
    writes, replies, ident = run_load(data, len(data) * 2 + 400)
    first = 0x4000 - 2
    chunk1 = [(first + 2, 0x0605), (first + 3, 0x0807)]
    # The corrupted copy of chunk 1 is written, answered BAD_CRC, and written again.
    assert writes == [(first, 0x0201), (first + 1, 0x0403), *chunk1, *chunk1,
                      (3 * SPRAM_WORDS + 1, 0x55AA)]
    assert protocol.decode_identity(replies[0]) == ident
    statuses = [protocol.decode_status(f, Command.LOAD_WEIGHTS) for f in replies[1:-1]]
    assert statuses == [Status.OK, Status.BAD_CRC, Status.OK, Status.OK, Status.OK]
    loaded = protocol.decode_identity(replies[-1])
    assert loaded.weights_loaded and loaded == protocol.Identity(
        **{**ident.__dict__, "weights_loaded": True})


def test_link_ignores_load_with_odd_or_long_length():
    odd = protocol.encode(Command.LOAD_WEIGHTS, bytes(5))
    long = protocol.encode(Command.LOAD_WEIGHTS, bytes(4 + protocol.MAX_WEIGHT_CHUNK + 2))
    data = odd + long + protocol.load_weights(0)
    writes, replies, _ = run_load(data, len(data) + 200)
    assert writes == []
    assert [protocol.decode_status(f, Command.LOAD_WEIGHTS) for f in replies] == [Status.OK]


@pytest.mark.needs_data
@pytest.mark.parametrize("fold, layers", [("1x49,5x4@4", (0, 1)), ("2x16,10x4@4", (0,))])
def test_spram_accelerator_timing_and_reference(fold, layers):
    # Behavioural SPRAMs (preloaded image) in Amaranth's simulator: same outputs as the
    # reference, and the declared latency and cycles per frame.
    from bnnhw.boards.spram import SpramAccelerator, WeightBus

    from bnnhw import datasets, reference
    from bnnhw.gateware.simulate import run_stream, steady_interval
    from bnnhw.packing import pixel_words

    rng = np.random.default_rng(4)
    model = Model(InputQuantizer((128,), 784),
                  (DenseLayer(rng.integers(0, 2, (16, 784)), rng.integers(380, 410, 16)),
                   DenseLayer(rng.integers(0, 2, (10, 16)))))
    folding = parse_fold(fold, model)
    plan = plan_spram(model, folding, layers)
    accel = SpramAccelerator(model, folding, plan, WeightBus(), behavioural=True)
    images = datasets.load("mnist", "test").images[:3]
    words = [w for im in images for w in pixel_words(im, folding.pixels_per_word)]
    run = run_stream(accel, words, len(images))
    classes, scores = reference.infer(model, images)
    assert [accel.decode(w) for w in run.outputs] == [
        (int(c), [int(v) for v in s]) for c, s in zip(classes, scores, strict=True)]
    assert run.out_times[0] - run.in_times[0] == accel.latency
    assert steady_interval(run.out_times, 1, skip=1) == accel.cycles_per_frame
