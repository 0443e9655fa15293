"""Label select: the argmax of the class scores, plus the scores, as one word per frame."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .registers import payload_register

__all__ = ["LabelSelect", "result_layout"]


def result_layout(classes, score_bits):
    """The accelerator's output word: ``label`` (the class), then ``scores[c]``, class ``c``'s
    score of ``score_bits`` bits, lowest bits first.

    ``label`` has ``max(1, (classes - 1).bit_length())`` bits.
    """
    return data.StructLayout({
        "label": unsigned(max(1, (classes - 1).bit_length())),
        "scores": data.ArrayLayout(unsigned(score_bits), classes),
    })


class LabelSelect(wiring.Component):
    """Collect ``C`` scores arriving ``PE`` per word and emit ``(class, scores)`` once per frame.

    Maths: ``class = min{c : s_c = max_k s_k}`` (ties go to the lowest index, as
    :func:`bnnhw.reference.argmax_lowest`). Input word ``w`` is an array of ``PE`` lanes; lane
    ``p`` holds score ``w*PE + p`` (``S = score_bits`` bits, or ``in_bits`` with an affine).
    The output payload is :func:`result_layout`: ``label``, the class, then ``scores[c]``.

    With an output affine (``scale`` and ``offset`` given) the input lanes are popcounts of
    ``in_bits`` bits and lane ``p`` of word ``w`` becomes the score ``s_c = scale_c * P +
    offset_c`` of class ``c = w*PE + p`` before anything else (the per-class integers of
    :meth:`bnnhw.model.DenseLayer.scores`, each score in ``[0, 2**S)``), a product by a
    constant, or by one of ``C/PE`` constants chosen by the word count, in a registered stage
    of its own in front of the argmax (on the OrangeCrab, sfc at 120 MHz: 65.5 MHz with the
    product in the argmax's cycle, its path count -> constants -> product -> compare -> label).

    Each word's ``PE`` scores are reduced by a balanced tree of compare-select nodes
    (``ceil(log2 PE)`` levels), then compared with the running maximum of the earlier words.
    Every node keeps its left (lower-index) operand unless the right one is strictly greater,
    so an equal later score never displaces an earlier one. Each node drives named signals, so
    elaboration time and logic grow linearly with ``PE``. ``i_stream.ready = ~o.valid |
    o.ready`` (with an affine: ``~v | ready`` of the affine stage's register ``v``).

    Timing
    ------
    latency : int
        ``C / PE`` cycles: the last of the ``C / PE`` words is accepted ``C/PE - 1`` cycles
        after the first, and the result is registered one cycle later; one more with an
        affine (its stage's register).
    cycles_per_frame : int
        ``C / PE``.

    Parameters
    ----------
    classes : int
        ``C`` (>= 2).
    pe : int
        Scores per input word; must divide ``C``.
    score_bits : int
        Bits per score ``S``.
    in_bits : int, optional
        Bits per input lane (the popcount width); defaults to ``score_bits``.
    scale, offset : sequence of int, optional
        The output affine, one integer per class (both or neither); ``scale_bits`` is the
        signed width of the scales (0 without an affine).
    """

    def __init__(self, classes, pe, score_bits, in_bits=None, scale=None, offset=None):
        if classes < 2 or pe < 1 or classes % pe:
            raise ValueError(
                f"label select needs C >= 2 classes and PE dividing C (C={classes}, PE={pe})")
        if (scale is None) != (offset is None) or (
                scale is not None and not len(scale) == len(offset) == classes):
            raise ValueError(f"the output affine needs {classes} scales and {classes} offsets")
        self.classes = classes
        self.pe = pe
        self.score_bits = score_bits
        self.in_bits = score_bits if in_bits is None else in_bits
        self.scale = None if scale is None else tuple(int(v) for v in scale)
        self.offset = None if offset is None else tuple(int(v) for v in offset)
        self.scale_bits = (0 if scale is None
                           else max(abs(v) for v in self.scale).bit_length() + 1)
        self.out_layout = result_layout(classes, score_bits)
        self.class_bits = self.out_layout["label"].shape.width
        self.words = classes // pe
        self.latency = self.words + (1 if self.scale is not None else 0)
        self.cycles_per_frame = self.words
        self.out_width = self.out_layout.size
        super().__init__({
            "i_stream": In(stream.Signature(data.ArrayLayout(unsigned(self.in_bits), pe))),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    def frame_times(self, in_times):
        """Output time of the frame offered at ``in_times`` to an idle unit, consumer ready."""
        return [in_times[-1] + 1 + (self.latency - self.words)]

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        s = self.score_bits
        count = Signal(range(self.words))
        # Data registers (no reset, :mod:`.registers`): the running maximum, the scores seen so
        # far, and the finished frame's result.
        best = Signal(s, reset_less=True)
        best_index = Signal(self.class_bits, reset_less=True)
        scores = Signal(self.classes * s, reset_less=True)
        result = payload_register(m, o, "result")
        valid, ready = i.valid, Signal()
        m.d.comb += ready.eq(~o.valid | o.ready)
        if self.scale is None:
            m.d.comb += i.ready.eq(ready)
            lanes = Cat(*(i.payload[p] for p in range(self.pe)))
        else:
            valid, lanes = self._affine_stage(m, ready)
        # Tree over the word's scores: nodes are (value, index) pairs, lower indices on the left.
        nodes = [(lanes[p * s:(p + 1) * s], count * self.pe + p) for p in range(self.pe)]
        level = 0
        while len(nodes) > 1:
            merged = []
            for k in range(0, len(nodes) - 1, 2):
                merged.append(self._select(m, f"l{level}n{k // 2}", nodes[k], nodes[k + 1]))
            if len(nodes) % 2:
                merged.append(nodes[-1])
            nodes, level = merged, level + 1
        word_value, word_index = nodes[0]
        take = (count == 0) | (word_value > best)
        value, index = Mux(take, word_value, best), Mux(take, word_index, best_index)
        shifted = Cat(scores[self.pe * s:], lanes)

        with m.If(o.valid & o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(valid & ready):
            m.d.sync += [best.eq(value), best_index.eq(index), scores.eq(shifted)]
            with m.If(count == self.words - 1):
                m.d.sync += [count.eq(0), o.valid.eq(1), result.label.eq(index[:self.class_bits]),
                             result.scores.eq(shifted)]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m

    def _affine_stage(self, m, ready):
        """A registered stage in front of the argmax: each lane's popcount ``P`` becomes the
        class score ``scale_c * P + offset_c``, the class's constants chosen by the stage's own
        word count through a chain of multiplexers (continuous assignments: defined from time
        zero in every simulator). The product and sum end in a register, off the compare tree's
        path. Returns the stage's ``valid`` and its registered scores; ``ready`` is the argmax
        side's."""
        i, s = self.i_stream, self.score_bits
        count = Signal(range(self.words), name="affine_count")
        valid = Signal(name="affine_valid")
        lanes = Signal(self.pe * s, name="affine_scores", reset_less=True)
        m.d.comb += i.ready.eq(~valid | ready)
        scores = []
        for p in range(self.pe):
            scale, offset = self.scale[p], self.offset[p]
            for w in range(1, self.words):
                c = w * self.pe + p
                scale = Mux(count == w, Const(self.scale[c], signed(self.scale_bits)), scale)
                offset = Mux(count == w, Const(self.offset[c], signed(s + 1)), offset)
            score = Signal(s, name=f"lane{p}_score")
            m.d.comb += score.eq(i.payload[p] * scale + offset)
            scores.append(score)
        with m.If(valid & ready):
            m.d.sync += valid.eq(0)
        with m.If(i.valid & i.ready):
            m.d.sync += [valid.eq(1), lanes.eq(Cat(*scores)),
                         count.eq(Mux(count == self.words - 1, 0, count + 1))]
        return valid, lanes

    def _select(self, m, name, left, right):
        """The larger of two (value, index) nodes, the left one on ties, as named signals."""
        value = Signal(self.score_bits, name=f"{name}_value")
        index = Signal(self.class_bits, name=f"{name}_index")
        take_right = right[0] > left[0]
        m.d.comb += [value.eq(Mux(take_right, right[0], left[0])),
                     index.eq(Mux(take_right, right[1], left[1]))]
        return value, index
