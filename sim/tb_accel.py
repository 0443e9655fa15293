"""cocotb bench of the exported accelerator ``bnnhw_top``: image by image, cycle by cycle.

This module runs only inside a simulator started by :func:`bnnhw.sim.run_sim` (its name starts
with ``tb_`` so pytest never imports it). It reads its job from the JSON file named by the
``BNNHW_SIM_JOB`` environment variable:

``images``
    ``.npy`` file, uint8 ``(N, pixels)``.
``expected``
    ``.npy`` file, int64 ``(N, 1 + C)``: the reference class, then the ``C`` scores
    (:func:`bnnhw.reference.infer`).
``layout``
    JSON file with the design's stream layout and declared timing (``pixels_per_word``,
    ``class_bits``, ``score_bits``, ``classes``, ``latency``, ``cycles_per_frame``), as
    :func:`bnnhw.sim.check.layout` reads them from the ``bnnhw_top.json`` layout.
``result``
    where to write the result JSON.
``seed``, ``stall_in``, ``stall_out``
    the random generator's seed and, per cycle, the probability of a valid gap on the input
    and of a ready stall on the output.
``clean_images``
    the first ``clean_images`` images travel without gaps or stalls (the measuring phase);
    the rest see the random gaps and stalls.
``idle_limit``
    cycles without any transfer after which the bench gives up (a hung design).
``drain_cycles``
    cycles to keep ``ready`` high after the last expected word, to catch extra words.

Stream protocol: a word moves on a rising edge where ``valid & ready``. The bench never
withdraws an offered input word (gaps start only after a transfer), and checks the same of the
design's output. The bench drives its
outputs right after each rising edge and samples the design in the read-only phase of the same
time step; nothing changes between that sample and the next edge, so the sample decides the
transfer on the next edge. Transfer ``k`` is counted at cycle ``c_k`` = number of that edge.

The clock is cocotb's GPI clock (period 10 ns); ``rst`` is held high for the first
:data:`RESET_CYCLES` edges. Python work per cycle is one edge and one read-only wait, a few
signal reads, and writes only when a driven value changes.

Figures written to the result JSON (cycles counted from the first edge after reset):

* ``images``, ``received``; ``lost = max(0, N - received)``; ``duplicated = max(0,
  received - N)``.
* ``mismatches``: images whose decoded class or any score differs from the expected row
  (words past ``N`` are not compared, they count as duplicated); ``details`` for the first few,
  with ``neighbour`` set when the word equals the expectation of image ``k - 1`` or ``k + 1``
  (an order fault).
* ``frame_intervals``: ``c_out[k] - c_out[k-1]`` for the clean phase's second half, whose mean
  is ``cycles_per_frame_measured`` (equal to the declared figure for a design that sustains it).
* ``latency_measured``: image 0 enters an empty pipeline without stalls; its latency is
  ``c_out[0] - c_in_first[0]`` (first input word to output word) and
  ``latency_last_word = c_out[0] - c_in_last[0]``.
* ``cycles``: cycles simulated; ``span_cycles = c_out[last] - c_in_first[0]``.
* ``protocol_violations``: cycles where the output held ``valid`` while stalled and then
  dropped ``valid`` or changed its payload before the transfer.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from bnnhw.packing import pixel_words

from .check import compare

JOB_ENV = "BNNHW_SIM_JOB"
RESET_CYCLES = 4


class Bench:
    """Cycle loop driving ``i_stream`` and consuming ``o_stream`` of one design."""

    def __init__(self, dut: Any, job: dict[str, Any], layout: dict[str, Any]) -> None:
        self.dut = dut
        self.job = job
        images = np.load(job["images"], allow_pickle=False)
        ppw = int(layout["pixels_per_word"])
        self.words = [w for image in images for w in pixel_words(image, ppw)]
        self.n_images = int(images.shape[0])
        self.words_per_image = images.shape[1] // ppw
        self.rng = random.Random(int(job["seed"]))
        self.clean = int(job["clean_images"])
        self.outputs: list[int | None] = []
        self.out_cycles: list[int] = []
        self.in_first: list[int] = []
        self.in_last: list[int] = []
        self.violations = 0
        self.cycle = 0

    async def run(self) -> None:
        """Reset, then stream every image and collect every output word."""
        dut, job, rng = self.dut, self.job, self.rng
        stall_in, stall_out = float(job["stall_in"]), float(job["stall_out"])
        idle_limit, drain = int(job["idle_limit"]), int(job["drain_cycles"])
        words, wpi, n, clean = self.words, self.words_per_image, self.n_images, self.clean
        total = len(words)
        i_payload, i_valid, i_ready = (dut.i_stream__payload, dut.i_stream__valid,
                                       dut.i_stream__ready)
        o_payload, o_valid, o_ready = (dut.o_stream__payload, dut.o_stream__valid,
                                       dut.o_stream__ready)
        edge, read_only = RisingEdge(dut.clk), ReadOnly()
        dut.rst.value = 1
        i_valid.value = 0
        o_ready.value = 0
        i_payload.value = words[0] if words else 0
        for _ in range(RESET_CYCLES):
            await edge
        dut.rst.value = 0
        sent = 0            # input words transferred
        valid = ready = 0   # what the bench drives this cycle
        in_fire = out_fire = False
        held: int | None = -1   # payload of a stalled valid output word, -1 if none
        last_progress = 0
        finished_at = None
        while True:
            await edge
            self.cycle += 1
            cycle = self.cycle
            if in_fire:
                if sent % wpi == 0:
                    self.in_first.append(cycle)
                sent += 1
                if sent % wpi == 0:
                    self.in_last.append(cycle)
                if sent < total:
                    i_payload.value = words[sent]
                last_progress = cycle
            if out_fire:
                self.out_cycles.append(cycle)
                last_progress = cycle
                if finished_at is None and len(self.outputs) >= n:
                    finished_at = cycle
            if finished_at is not None and cycle - finished_at >= drain:
                break
            if cycle - last_progress > idle_limit:
                break
            # a word offered but not taken stays offered (valid is never withdrawn)
            new_valid = int(sent < total and (sent // wpi < clean or (valid and not in_fire)
                                              or rng.random() >= stall_in))
            if new_valid != valid:
                i_valid.value = valid = new_valid
            new_ready = int(len(self.outputs) < clean or len(self.outputs) >= n
                            or rng.random() >= stall_out)
            if new_ready != ready:
                o_ready.value = ready = new_ready
            await read_only
            in_fire = bool(valid) and i_ready.value == 1
            ov = o_valid.value == 1
            out_fire = ov and bool(ready)
            if held != -1 and (not ov or self._payload(o_payload) != held):
                self.violations += 1
            held = -1
            if out_fire:
                self.outputs.append(self._payload(o_payload))
            elif ov:
                held = self._payload(o_payload)

    @staticmethod
    def _payload(signal: Any) -> int | None:
        value = signal.value
        return value.to_unsigned() if value.is_resolvable else None

    def result(self, expected: np.ndarray, layout: dict[str, Any]) -> dict[str, Any]:
        """The figures described in the module docstring."""
        n, received = self.n_images, len(self.outputs)
        mismatches, details = compare(self.outputs, expected, layout)
        class_mask = (1 << int(layout["class_bits"])) - 1
        out = self.out_cycles
        clean_out = min(self.clean, received)
        start = max(1, clean_out // 2)
        intervals = [out[k] - out[k - 1] for k in range(start, clean_out)]
        latency = out[0] - self.in_first[0] if out and self.in_first else None
        return {
            "images": n, "received": received, "lost": max(0, n - received),
            "duplicated": max(0, received - n), "mismatches": mismatches, "details": details,
            "cycles": self.cycle,
            "span_cycles": out[-1] - self.in_first[0] if out and self.in_first else None,
            "clean_images": self.clean,
            "frame_intervals_min": min(intervals) if intervals else None,
            "frame_intervals_max": max(intervals) if intervals else None,
            "cycles_per_frame_measured": (sum(intervals) / len(intervals)
                                          if intervals else None),
            "latency_measured": latency,
            "latency_last_word": out[0] - self.in_last[0] if out and self.in_last else None,
            "protocol_violations": self.violations,
            "classes": [None if w is None else w & class_mask for w in self.outputs],
        }


@cocotb.test()
async def accelerator_matches_reference(dut: Any) -> None:
    """Stream the job's images through ``bnnhw_top`` and write the result JSON."""
    job = json.loads(Path(os.environ[JOB_ENV]).read_text())
    layout = json.loads(Path(job["layout"]).read_text())
    expected = np.load(job["expected"], allow_pickle=False)
    bench = Bench(dut, job, layout)
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    await bench.run()
    result = bench.result(expected, layout)
    tmp = Path(job["result"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(job["result"])
