"""Drive a stream component in Amaranth's simulator: words in, words out, with timing.

One testbench acts as producer and consumer at once. Every cycle it decides (from a seeded
random generator) whether to offer the next input word and whether to accept an output word,
then samples both handshakes at the clock edge. A word moves exactly on an edge where
``valid & ready``. Cycle ``c`` is the ``c``-th edge after the testbench starts.
"""

from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import data
from amaranth.sim import Simulator

from ..packing import pixel_words
from ..reference import infer

__all__ = ["StreamRun", "measure_accelerator", "run_stream", "steady_interval"]


@dataclass
class StreamRun:
    """What one simulation observed.

    Attributes
    ----------
    outputs : list of int
        Output payloads in order.
    in_times, out_times : list of int
        Cycle of each input / output transfer.
    first_valid : list of int
        Cycle at which each output word was first offered (``valid`` high).
    cycles : int
        Cycles simulated.
    """

    outputs: list = field(default_factory=list)
    in_times: list = field(default_factory=list)
    out_times: list = field(default_factory=list)
    first_valid: list = field(default_factory=list)
    cycles: int = 0


def run_stream(dut, words, n_out, *, in_stall=0.0, out_stall=0.0, seed=0, max_cycles=None,
               vcd=None):
    """Simulate ``dut`` (a component with ``i_stream`` / ``o_stream``) on ``words``.

    Parameters
    ----------
    dut : amaranth.lib.wiring.Component
    words : sequence of int
        Input payloads as raw bits (also for a structured payload), sent in order; the outputs
        are collected as raw bits too.
    n_out : int
        Output words to collect before stopping.
    in_stall, out_stall : float
        Probability that the producer withholds ``valid`` / the consumer withholds ``ready``
        in a cycle (an offered word stays offered until taken, as the stream rules require).
    seed : int
        Seed of the stall pattern.
    max_cycles : int or None
        Give up (``RuntimeError``) after this many cycles; default ``1000 + 100 * (words +
        n_out)`` scaled up by the stall probabilities.
    vcd : str or None
        Write a waveform to this path.

    Returns
    -------
    StreamRun
    """
    words = [int(w) for w in words]
    rng = np.random.default_rng(seed)
    if max_cycles is None:
        slack = 1.0 / max(0.05, (1 - in_stall) * (1 - out_stall))
        max_cycles = int((1000 + 100 * (len(words) + n_out)) * slack)
    run = StreamRun()
    i, o = dut.i_stream, dut.o_stream
    # A structured payload (amaranth.lib.data) is set from, and read back as, its raw bits.
    in_shape = i.payload.shape() if isinstance(i.payload.shape(), data.Layout) else None

    async def bench(ctx):
        sent = 0
        offering = False
        cycle = 0
        while len(run.outputs) < n_out:
            if cycle >= max_cycles:
                raise RuntimeError(
                    f"stream simulation stalled: {sent}/{len(words)} words in, "
                    f"{len(run.outputs)}/{n_out} out after {cycle} cycles")
            if not offering and sent < len(words) and rng.random() >= in_stall:
                offering = True
                ctx.set(i.payload, in_shape.from_bits(words[sent]) if in_shape else words[sent])
            ctx.set(i.valid, offering)
            ctx.set(o.ready, rng.random() >= out_stall)
            _, _, i_ready, o_valid, o_ready, payload = await ctx.tick().sample(
                i.ready, o.valid, o.ready, o.payload)
            if o_valid and len(run.first_valid) == len(run.outputs):
                run.first_valid.append(cycle)
            if offering and i_ready:
                run.in_times.append(cycle)
                sent += 1
                offering = False
            if o_valid and o_ready:
                run.outputs.append(payload.as_bits() if isinstance(payload, data.Const)
                                   else int(payload))
                run.out_times.append(cycle)
            cycle += 1
        run.cycles = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    if vcd is None:
        sim.run()
    else:
        with sim.write_vcd(vcd):
            sim.run()
    return run


def steady_interval(times, per_frame, skip=1):
    """Mean cycles between frames from transfer ``times`` of ``per_frame`` words each.

    Frame ``f`` is marked by its first word; the first ``skip`` frames (the pipeline filling)
    are left out. Needs at least ``skip + 2`` frames.
    """
    marks = times[::per_frame]
    if len(marks) < skip + 2:
        raise ValueError(f"need at least {skip + 2} frames, got {len(marks)}")
    marks = marks[skip:]
    return (marks[-1] - marks[0]) / (len(marks) - 1)


def measure_accelerator(accelerator, images):
    """Run ``images`` (uint8, ``(N, pixels)``, ``N >= 3``) back to back through an accelerator.

    Returns
    -------
    dict
        ``correct`` (every output equals :func:`bnnhw.reference.infer`), measured ``latency``
        and steady-state ``interval`` (frames after the first), the declared
        ``declared_latency`` / ``declared_cycles_per_frame``, ``ideal`` (``max NF*SF`` over
        layers) and ``efficiency = ideal / interval``.
    """

    model, folding = accelerator.model, accelerator.folding
    words = [w for image in images for w in pixel_words(image, folding.pixels_per_word)]
    budget = 1000 + 4 * (accelerator.latency + len(images) * accelerator.cycles_per_frame)
    run = run_stream(accelerator, words, len(images), max_cycles=budget)
    classes, scores = infer(model, images)
    expected = [(int(c), [int(v) for v in s]) for c, s in zip(classes, scores, strict=True)]
    interval = steady_interval(run.out_times, 1, skip=1)
    ideal = max(folding.layer_cycles(model))
    return {
        "correct": [accelerator.decode(w) for w in run.outputs] == expected,
        "latency": run.out_times[0] - run.in_times[0],
        "interval": interval,
        "declared_latency": accelerator.latency,
        "declared_cycles_per_frame": accelerator.cycles_per_frame,
        "ideal": ideal,
        "efficiency": ideal / interval,
    }
