# amaranth: UnusedElaboratable=no
"""The host-link engine in Amaranth's simulator, with a small stand-in accelerator.

The stand-in computes, per frame of pixels ``x``: ``s = sum(x)``, scores ``(s * (c + 1)) mod
2**S`` and class ``s mod C``, so every pixel's value and position matters for the reply.
"""

import numpy as np
import pytest
from amaranth.hdl import Cat, ClockDomain, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from bnnhw.boards import protocol
from bnnhw.boards.link import Link
from bnnhw.boards.protocol import Command, FrameDecoder, Status
from hypothesis import given, settings
from hypothesis import strategies as st

CLASSES, CLASS_BITS, SCORE_BITS = 3, 2, 6
OUT_WIDTH = CLASS_BITS + CLASSES * SCORE_BITS


class SumAccelerator(wiring.Component):
    """Test stand-in with the accelerator's stream interface (see module docstring)."""

    def __init__(self, pixels, pixels_per_word):
        self.words = pixels // pixels_per_word
        self.p = pixels_per_word
        super().__init__({"i_stream": In(stream.Signature(8 * pixels_per_word)),
                          "o_stream": Out(stream.Signature(OUT_WIDTH))})

    def elaborate(self, platform):
        m = Module()
        total = Signal(24)
        n = Signal(range(self.words + 1))
        m.d.comb += self.i_stream.ready.eq(~self.o_stream.valid)
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            s = total + sum(self.i_stream.payload[8 * j:8 * j + 8] for j in range(self.p))
            with m.If(n == self.words - 1):
                fields = [(s % CLASSES)[:CLASS_BITS]]
                fields += [(s * (c + 1))[:SCORE_BITS] for c in range(CLASSES)]
                m.d.sync += [self.o_stream.payload.eq(Cat(*fields)), self.o_stream.valid.eq(1),
                             total.eq(0), n.eq(0)]
            with m.Else():
                m.d.sync += [total.eq(s), n.eq(n + 1)]
        return m


def expected(pixels):
    s = int(np.asarray(pixels, dtype=np.int64).sum())
    return s % CLASSES, tuple((s * (c + 1)) % (1 << SCORE_BITS) for c in range(CLASSES))


THRESHOLDS = (100,)


def identity(pixels, ppw, levels=1):
    return protocol.Identity("00112233aabbccdd", pixels, levels, CLASSES, CLASS_BITS,
                             SCORE_BITS, ppw, 1234, 12_000_000, 1_000_000, True, "4x4,3x4")


def run_link(schedule, *, pixels=16, ppw=4, timeout=64, stall=0.0, seed=0,
             bits_values=(0, 100), max_cycles=20000):
    """Feed ``schedule`` (bytes to send, or ints = idle cycles) and collect reply bytes."""
    ident = identity(pixels, ppw)
    link = Link(pixels=pixels, pixels_per_word=ppw, out_width=OUT_WIDTH, class_bits=CLASS_BITS,
                identity=ident.encode(), bits_pixel_values=bits_values, timeout_cycles=timeout)
    m = Module()
    m.domains.sync = sync = ClockDomain()
    m.submodules.link = link
    m.submodules.acc = acc = SumAccelerator(pixels, ppw)
    wiring.connect(m, link.acc_in, acc.i_stream)
    wiring.connect(m, acc.o_stream, link.acc_out)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    out = bytearray()
    rng = np.random.default_rng(seed)
    state = {"sent": 0, "cycles": 0, "accept_at": [], "acc_valid_rise": [], "leds": []}

    async def producer(ctx):
        for item in schedule:
            if isinstance(item, int):
                ctx.set(link.i_bytes.valid, 0)
                await ctx.tick().repeat(item)
                continue
            if item == "reset":
                ctx.set(link.i_bytes.valid, 0)
                ctx.set(sync.rst, 1)
                await ctx.tick()
                ctx.set(sync.rst, 0)
                continue
            for byte in item:
                while stall and rng.random() < stall:
                    ctx.set(link.i_bytes.valid, 0)
                    await ctx.tick()
                ctx.set(link.i_bytes.valid, 1)
                ctx.set(link.i_bytes.payload, byte)
                while True:
                    _, _, ready = await ctx.tick().sample(link.i_bytes.ready)
                    if ready:
                        state["accept_at"].append(state["cycles"])
                        break
            ctx.set(link.i_bytes.valid, 0)

    async def consumer(ctx):
        ctx.set(link.o_bytes.ready, 1)
        prev = 0
        async for _, _, valid, payload, acc_valid, cls, cls_ok in ctx.tick().sample(
                link.o_bytes.valid, link.o_bytes.payload, link.acc_in.valid,
                link.last_class, link.last_class_valid):
            state["cycles"] += 1
            if valid:
                out.append(payload)
            if acc_valid and not prev:
                state["acc_valid_rise"].append(state["cycles"])
            prev = acc_valid
            state["leds"].append((cls, cls_ok))

    sim.add_testbench(producer)
    sim.add_process(consumer)
    sim.run_until(1e-6 * max_cycles)
    return bytes(out), state, link, ident


def replies(data, ident):
    frames = FrameDecoder().feed(data)
    result = []
    for f in frames:
        if f.command == Command.IDENTIFY | protocol.REPLY:
            result.append(protocol.decode_identity(f))
        else:
            result.append((f.command & 0x7F, protocol.decode_result(f, ident)))
    return result


def test_raw_frames_and_identify():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 16), dtype=np.uint8)
    schedule = [protocol.classify_raw(im) for im in images[:2]] + [protocol.identify(),
                                                                   protocol.classify_raw(images[2])]
    data, state, link, ident = run_link(schedule, max_cycles=600)
    got = replies(data, ident)
    assert len(got) == 4
    assert got[2] == ident
    for (cmd, res), im in zip([got[0], got[1], got[3]], images, strict=True):
        assert cmd == Command.CLASSIFY_RAW
        assert res.status == Status.OK
        assert (res.label, res.scores) == expected(im)
    assert state["leds"][-1] == (expected(images[2])[0], 1)


def test_one_byte_per_cycle_and_latency():
    image = np.arange(16, dtype=np.uint8)
    data, state, link, ident = run_link([protocol.classify_raw(image)], max_cycles=200)
    accept = state["accept_at"]
    assert len(accept) == link.request_bytes_raw
    assert accept[-1] - accept[0] + 1 == link.cycles_per_frame
    # Pixel bytes are frame bytes 5..20; every 4th completes a word.
    word_ends = [accept[5 + 4 * w + 3] for w in range(4)]
    assert [r - e for r, e in zip(state["acc_valid_rise"], word_ends, strict=True)] == \
        [link.latency] * 4
    assert replies(data, ident)[0][1].status == Status.OK


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=40).filter(lambda g: protocol.SYNC[:1] not in g),
       st.lists(st.integers(0, 255), min_size=16, max_size=16), st.floats(0, 0.5))
def test_garbage_then_frame(garbage, pixels, stall):
    image = np.array(pixels, dtype=np.uint8)
    data, _, _, ident = run_link([garbage, protocol.classify_raw(image)], stall=stall,
                                 max_cycles=400)
    (cmd, res), = replies(data, ident)
    assert (res.status, res.label, res.scores) == (Status.OK, *expected(image))


def test_garbage_with_false_sync_yields_no_reply():
    # A sync pair with an unknown command, then one with a wrong length: dropped silently.
    garbage = protocol.SYNC + b"\x09\x00\x00\x00" + protocol.SYNC + b"\x02\x05\x00"
    image = np.full(16, 7, np.uint8)
    data, _, _, ident = run_link([garbage, protocol.classify_raw(image)], max_cycles=400)
    assert [r[1].status for r in replies(data, ident)] == [Status.OK]


def test_bad_crc_reply_then_recovery():
    image = np.full(16, 3, np.uint8)
    bad = bytearray(protocol.classify_raw(image))
    bad[-1] ^= 0xFF
    data, state, _, ident = run_link([bytes(bad), protocol.classify_raw(image)],
                                     max_cycles=400)
    got = replies(data, ident)
    assert [r[1].status for r in got] == [Status.BAD_CRC, Status.OK]
    assert (got[1][1].label, got[1][1].scores) == expected(image)


def test_truncated_frame_times_out_and_pads():
    image = np.arange(16, dtype=np.uint8) + 1
    truncated = protocol.classify_raw(image)[:12]  # header and 7 pixels
    data, _, _, ident = run_link([truncated, 200, protocol.classify_raw(image)], timeout=64,
                                 max_cycles=800)
    got = replies(data, ident)
    assert [r[1].status for r in got] == [Status.TIMEOUT, Status.OK]
    assert (got[0][1].label, got[0][1].scores) == expected(image[:7])  # rest padded with 0
    assert (got[1][1].label, got[1][1].scores) == expected(image)


@pytest.mark.parametrize("levels,values", [(1, (0, 100)), (2, (0, 60, 200)),
                                           (4, (0, 10, 20, 30, 256))])
def test_classify_bits_rebuilds_pixels(levels, values):
    thresholds = values[1:]
    rng = np.random.default_rng(levels)
    image = rng.integers(0, 256, 16, dtype=np.uint8)
    bits = (image[:, None] >= np.array(thresholds)[None, :]).astype(np.uint8).reshape(-1)
    data, _, _, ident = run_link([protocol.classify_bits(bits, levels)], bits_values=values,
                                 max_cycles=400)
    counts = bits.reshape(16, levels).sum(axis=1)
    rebuilt = np.array([0 if c == 0 else min(values[c], 255) for c in counts])
    (cmd, res), = replies(data, ident)
    assert cmd == Command.CLASSIFY_BITS
    assert (res.status, res.label, res.scores) == (Status.OK, *expected(rebuilt))
    # The rebuilt pixels quantize back to the same bits.
    again = (rebuilt[:, None] >= np.array(thresholds)[None, :]).astype(np.uint8).reshape(-1)
    assert (again == bits).all()


def test_constructor_errors_name_values():
    with pytest.raises(ValueError, match=r"pixels per word \(3\) must divide the image size "
                                         r"\(16\)"):
        Link(pixels=16, pixels_per_word=3, out_width=8, class_bits=2, identity=b"")
    with pytest.raises(ValueError, match=r"pixels=16, levels=3"):
        Link(pixels=16, pixels_per_word=4, out_width=8, class_bits=2, identity=b"",
             bits_pixel_values=(0, 1, 2, 3))


@pytest.mark.parametrize("header", [
    protocol.SYNC + bytes((Command.CLASSIFY_RAW, 0xFF, 0xFF)),   # LEN 0xFFFF
    protocol.SYNC + bytes((0x33, 16, 0)),                         # unknown command
    protocol.SYNC + bytes((Command.IDENTIFY, 1, 0)),              # IDENTIFY with a payload
])
def test_false_header_directly_followed_by_a_frame(header):
    image = np.arange(16, dtype=np.uint8) * 3
    data, _, _, ident = run_link([header + protocol.classify_raw(image)], max_cycles=400)
    (cmd, res), = replies(data, ident)
    assert (cmd, res.status, res.label, res.scores) == (Command.CLASSIFY_RAW, Status.OK,
                                                        *expected(image))


def test_truncated_frame_directly_followed_by_a_frame():
    # The cut frame swallows the next one's bytes as pixels and fails its CRC; the host
    # resends, and the resent frame is answered normally.
    image = np.arange(16, dtype=np.uint8) + 5
    frame = protocol.classify_raw(image)
    data, _, _, ident = run_link([frame[:12] + frame, 100, frame], max_cycles=800)
    statuses = [r[1].status for r in replies(data, ident)]
    assert statuses[0] == Status.BAD_CRC and statuses[-1] == Status.OK
    assert replies(data, ident)[-1][1].scores == expected(image)[1]


def test_corrupted_pixel_byte_is_answered_bad_crc():
    image = np.full(16, 9, np.uint8)
    bad = bytearray(protocol.classify_raw(image))
    bad[7] ^= 0x10
    data, _, _, ident = run_link([bytes(bad), protocol.classify_raw(image)], max_cycles=400)
    assert [r[1].status for r in replies(data, ident)] == [Status.BAD_CRC, Status.OK]


def test_identify_with_bad_crc_gets_no_reply():
    bad = bytearray(protocol.identify())
    bad[-1] ^= 0x01
    data, _, _, ident = run_link([bytes(bad), protocol.identify()], max_cycles=600)
    assert replies(data, ident) == [ident]


def test_reset_mid_frame_then_a_whole_frame():
    image = np.arange(16, dtype=np.uint8) + 11
    frame = protocol.classify_raw(image)
    data, _, _, ident = run_link([frame[:13], "reset", frame], max_cycles=400)
    (cmd, res), = replies(data, ident)
    assert (res.status, res.label, res.scores) == (Status.OK, *expected(image))


def run_wire(data, period, fifo_depth=16, max_cycles=40000):
    """The board top's receive path around the link: one byte every ``period`` cycles into a
    ``fifo_depth`` FIFO that drops (and pulses ``rx_lost``) when full; replies leave at the
    same line rate. Returns the reply bytes, the bytes dropped and the link's counter."""
    from collections import deque

    ident = identity(16, 4)
    link = Link(pixels=16, pixels_per_word=4, out_width=OUT_WIDTH, class_bits=CLASS_BITS,
                identity=ident.encode(), timeout_cycles=1 << 12)
    m = Module()
    m.submodules.link = link
    m.submodules.acc = acc = SumAccelerator(16, 4)
    wiring.connect(m, link.acc_in, acc.i_stream)
    wiring.connect(m, acc.o_stream, link.acc_out)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    out, state = bytearray(), {"dropped": 0, "overruns": 0}

    async def line(ctx):
        fifo, pending, cycle = deque(), deque(data), 0
        while cycle < max_cycles - 2:
            lost = 0
            if pending and cycle % period == 0:
                byte = pending.popleft()
                if len(fifo) < fifo_depth:
                    fifo.append(byte)
                else:
                    lost = 1
                    state["dropped"] += 1
            ctx.set(link.rx_lost, lost)
            ctx.set(link.i_bytes.valid, bool(fifo))
            ctx.set(link.i_bytes.payload, fifo[0] if fifo else 0)
            ctx.set(link.o_bytes.ready, cycle % period == 0)
            _, _, ready, o_valid, o_byte, count = await ctx.tick().sample(
                link.i_bytes.ready, link.o_bytes.valid, link.o_bytes.payload, link.overruns)
            if fifo and ready:
                fifo.popleft()
            if o_valid and cycle % period == 0:
                out.append(o_byte)
            state["overruns"] = count
            cycle += 1

    sim.add_testbench(line)
    sim.run_until(1e-6 * max_cycles)
    return bytes(out), state, ident


def test_flood_of_identify_requests_reports_the_overrun():
    # 40 IDENTIFY requests back to back: each 6-byte request brings a 37-byte reply, so the
    # token queue fills, the FIFO overflows and bytes are lost. The reply after the loss says
    # OVERRUN, the counter holds the bytes dropped, and a later request is answered.
    image = np.arange(16, dtype=np.uint8)
    flood = protocol.identify() * 40
    data, state, ident = run_wire(flood + bytes(400) + protocol.classify_raw(image), period=4,
                                  max_cycles=60000)
    frames = FrameDecoder(max_payload=4096).feed(data)
    statuses = [Status(f.payload[0]) for f in frames]
    assert state["dropped"] > 0 and state["overruns"] == state["dropped"]
    assert Status.OVERRUN in statuses and len(frames) < 41
    assert statuses.count(Status.OVERRUN) <= state["dropped"]
    ok = [protocol.decode_identity(f) for f in frames
          if f.command == Command.IDENTIFY | protocol.REPLY and f.payload[0] == Status.OK]
    assert ok and all(i == ident for i in ok)
    last = protocol.decode_result(frames[-1], ident)
    assert (frames[-1].command & 0x7F, last.status, last.label, last.scores) == (
        Command.CLASSIFY_RAW, Status.OK, *expected(image))


def test_requests_at_the_line_rate_lose_nothing():
    image = np.arange(16, dtype=np.uint8) * 2
    data, state, ident = run_wire(protocol.classify_raw(image) * 10, period=4,
                                  max_cycles=4000)
    frames = FrameDecoder().feed(data)
    assert state["dropped"] == state["overruns"] == 0
    assert [protocol.decode_result(f, ident).status for f in frames] == [Status.OK] * 10
