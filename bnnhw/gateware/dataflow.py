# amaranth: UnusedElaboratable=no
"""The whole accelerator: quantizer, one MVTU per layer, width converters, label select."""

from dataclasses import dataclass
from math import lcm

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .labelselect import LabelSelect
from .maxpool import MaxPool
from .mvtu import MVTU
from .pixeldot import PIXEL_BITS
from .quantizer import InputQuantizer
from .swu import SlidingWindowUnit
from .widthconv import WidthConverter

__all__ = ["STAGE_BUILDERS", "Accelerator", "Stage"]


@dataclass(frozen=True)
class Stage:
    """One stage of the dataflow, with the timing its component declares.

    Attributes
    ----------
    name : str
        ``"quantizer"`` (absent for ``pixels8`` input), ``"width0"`` (width converter in front
        of layer 0), ``"swu0"`` (the sliding-window unit of a conv layer 0), ``"layer0"`` (its
        MVTU or max-pool), ..., ``"labelselect"``.
    component : amaranth.lib.wiring.Component
    latency, cycles_per_frame : int
        Copied from the component.
    index : int or None
        The model layer the stage serves (the one a width converter or sliding-window unit
        feeds); None for the quantizer and the label select.
    kind : str
        ``"quantizer"``, ``"width"``, ``"swu"``, ``"mvtu"``, ``"maxpool"`` or
        ``"labelselect"``.
    """

    name: str
    component: object
    latency: int
    cycles_per_frame: int
    index: int | None
    kind: str


class Accelerator(wiring.Component):
    """A streaming accelerator for ``model`` folded as ``folding``.

    Dataflow (all links are :mod:`amaranth.lib.stream` with back-pressure, joined with
    :func:`amaranth.lib.wiring.connect`)::

        i_stream -> InputQuantizer -> [WidthConverter] -> layer 0 -> [WidthConverter]
                 -> layer 1 -> ... -> output MVTU -> LabelSelect -> o_stream

    with each layer one of

    * dense: :class:`MVTU`;
    * conv: :class:`SlidingWindowUnit` -> :class:`MVTU` over ``V = OH * OW`` vectors per frame;
      the unit sends each window as ``SF`` words of ``SIMD`` bits (the MVTU's ``in_width``),
      and the MVTU's output (``NF`` words of ``PE`` channels per position) is the ``(oy, ox,
      c)`` map, channel innermost;
    * max-pool: :class:`MaxPool`.

    For a model of input kind ``pixels8`` there is no quantizer: ``i_stream``'s ``8 P``-bit words
    go straight to layer 0, an MVTU with ``pixels8`` (add/subtract lanes on 8-bit pixels, wide
    signed thresholds). A conv layer 0 reads the ``H x W x 1`` pixel map as ``H x W x 8`` bit
    channels: its sliding-window unit carries 8 bits per pixel and sends ``8 * SIMD``-bit words,
    pixel ``k`` of the window in bits ``[8k, 8k+8)``. Widths below count bits, so a pixel layer
    reads ``lcm(A, 8 SIMD)``-bit words (a conv one ``8 C = 8``). The timing rules are the same.

    A width converter stands in front of layer ``i`` when the producer's word width ``A``
    (``P * L`` after the quantizer, ``PE_{i-1}`` after an MVTU, ``C`` after a max-pool) is not
    what the layer reads. A dense MVTU reads words of ``lcm(A, SIMD_i)`` bits (converted only
    if ``A`` is not a multiple of ``SIMD_i``), which it buffers as whole words and reads
    ``SIMD_i`` bits at a time. The sliding-window unit and the max-pool read one pixel of ``C``
    bits per word.

    Ports: ``i_stream`` carries ``P`` pixels per word, pixel ``w*P + j`` of a frame in bits
    ``[8j, 8j+8)`` of word ``w`` (:func:`bnnhw.packing.pixel_words`); ``o_stream`` carries one
    word per frame: the class in bits ``[0, class_bits)``, then score ``c`` in bits
    ``[class_bits + c*score_bits, class_bits + (c+1)*score_bits)`` (see :class:`LabelSelect`).

    Timing
    ------
    latency : int
        Cycles from accepting the first input word of a frame to the output word, with the
        pipeline idle and no stalls. Computed by passing the input word times ``0, 1, ...,
        pixels/P - 1`` through every stage's ``frame_times`` (each stage's own schedule for
        one frame on an idle unit, its consumer always ready), so it follows the stages' own
        formulas (a conv MVTU's input banks take the first frame's windows as fast as its
        sliding-window unit sends them).
    cycles_per_frame : int
        ``max`` over stages of their ``cycles_per_frame`` (the input buffers let every stage
        work on one frame while it receives the next). Between a frame's last window and the
        next frame's first, a sliding-window unit reads ``(K - 1) * W + K`` pixels and sends
        nothing; a conv MVTU that could run dry for long enough to slow the pipeline gets
        more input banks (see ``_deepen_conv_buffers``), so this holds for conv networks too.

    Parameters
    ----------
    model : bnnhw.model.Model
    folding : bnnhw.folding.Folding
        Checked against the model (raises :class:`bnnhw.folding.FoldingError`).
    """

    def __init__(self, model, folding):
        folding.check(model)
        self.model = model
        self.folding = folding
        q = model.quantizer
        self.pixels_per_word = folding.pixels_per_word
        self.words_per_frame = q.pixels // folding.pixels_per_word
        self.classes = model.classes
        if q.kind == "pixels8":
            stages, width = [], PIXEL_BITS * folding.pixels_per_word
        else:
            stages = [("quantizer",
                       InputQuantizer(q.thresholds, q.pixels, folding.pixels_per_word), None,
                       "quantizer")]
            width = folding.pixels_per_word * q.levels
        for index, (layer, entry) in enumerate(zip(model.layers, folding.layers, strict=True)):
            built, width = STAGE_BUILDERS[layer.kind](self, index, layer, entry, width)
            stages += built
        output = model.layers[-1]
        self.score_bits = max(1, output.score_max.bit_length())
        affine = (output.scale, output.offset) if output.affine else (None, None)
        select = LabelSelect(model.classes, folding.layers[-1][0], self.score_bits,
                             stages[-1][1].score_bits, *affine)
        stages.append(("labelselect", select, None, "labelselect"))
        self.class_bits = select.class_bits
        self.out_layout = select.out_layout
        self.out_width = select.out_width
        self.cycles_per_frame = max(c.cycles_per_frame for _, c, _, _ in stages)
        self._deepen_conv_buffers(stages)
        self.stages = [Stage(name, c, c.latency, c.cycles_per_frame, index, kind)
                       for name, c, index, kind in stages]
        self.latency = self.frame_times(range(self.words_per_frame))[0]
        super().__init__({
            "i_stream": In(stream.Signature(8 * folding.pixels_per_word)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    def decode(self, word):
        """Split an output word into ``(class, [score_0, ..., score_{C-1}])``
        (:func:`~bnnhw.gateware.labelselect.result_layout`)."""
        result = self.out_layout.from_bits(word)
        return result.label, list(result.scores)

    def _converted(self, index, layer, width, in_width):
        """A width converter from ``width`` to ``in_width`` bits in front of layer ``index``,
        if they differ (as a list of stages)."""
        if in_width == width:
            return []
        bits = PIXEL_BITS if layer.pixels8 else 1
        return [(f"width{index}", WidthConverter(width, in_width, bits * layer.in_features),
                 index, "width")]

    def _mvtu_stage(self, index, layer, pe, simd, in_width):
        mvtu = self.make_mvtu(index, layer, pe, simd, in_width)
        if getattr(mvtu, "pixels8", False) != layer.pixels8:
            raise ValueError(f"layer {index}: {type(mvtu).__name__} does not build the "
                             f"8-bit first layer of input kind 'pixels8' "
                             f"(layer pixels8={layer.pixels8})")
        return (f"layer{index}", mvtu, index, "mvtu")

    def dense_stages(self, index, layer, entry, width):
        """A dense layer: an MVTU reading words of ``lcm(width, SIMD)`` bits (8-bit elements
        for a pixel layer). Returns ``(stages, output width)``, as every stage builder."""
        bits = PIXEL_BITS if layer.pixels8 else 1
        pe, simd = entry
        in_width = lcm(width, bits * simd)
        mvtu = self._mvtu_stage(index, layer, pe, simd, in_width)
        return self._converted(index, layer, width, in_width) + [mvtu], mvtu[1].out_width

    def conv_stages(self, index, layer, entry, width):
        """A convolution: one pixel (``C`` channels) per word into a sliding-window unit, whose
        ``SIMD``-wide window slices feed an MVTU over ``OH * OW`` vectors."""
        bits = PIXEL_BITS if layer.pixels8 else 1
        h, w, c = layer.in_shape  # a pixel map is a map of 8 bit-channels
        pe, simd = entry
        swu = (f"swu{index}", SlidingWindowUnit((h, w, bits * c), layer.kernel, bits * simd),
               index, "swu")
        mvtu = self._mvtu_stage(index, layer, pe, simd, bits * simd)
        return (self._converted(index, layer, width, bits * c) + [swu, mvtu],
                mvtu[1].out_width)

    def maxpool_stages(self, index, layer, entry, width):
        """A 2x2 max-pool: one pixel (``C`` bits) per word in and out."""
        unit = MaxPool(layer.in_shape)
        return (self._converted(index, layer, width, layer.in_shape[2])
                + [(f"layer{index}", unit, index, "maxpool")], unit.in_shape[2])

    def make_mvtu(self, index, layer, pe, simd, in_width, banks=2):
        """Create the MVTU of layer ``index``; override to change how layers are built."""
        return MVTU(layer.weights, layer.thresholds, pe, simd, in_width, name=str(index),
                    vectors=layer.vectors, pixels8=layer.pixels8, banks=banks)

    def _deepen_conv_buffers(self, stages):
        """Give a conv MVTU enough input banks to ride out its sliding-window unit's frame gap.

        Between a frame's last window and the next frame's first, the unit reads ``G = (K - 1)
        * W + K`` pixels, one per cycle, and sends nothing. An MVTU of ``B`` banks holds ``B``
        windows, ``c = NF * SF`` cycles of work each, so it runs dry for ``G - B c`` cycles
        per frame when ``G > B c``. That matters only when its own ``V c`` cycles plus the gap
        exceed the pipeline's interval ``T``; then it gets ``B = ceil(G / c)`` banks, and the
        pipeline keeps the interval ``T``. ``stages`` (name, component, layer index, kind) is
        updated in place.
        """
        for pos in range(len(stages) - 1):
            swu, (name, mvtu, index, kind) = stages[pos][1], stages[pos + 1]
            if not isinstance(swu, SlidingWindowUnit):
                continue
            gap = (swu.kernel - 1) * swu.in_shape[1] + swu.kernel
            work = mvtu.nf * mvtu.sf
            if gap <= 2 * work or mvtu.cycles_per_frame + gap - 2 * work <= self.cycles_per_frame:
                continue
            stages[pos + 1] = (name, self.make_mvtu(index, self.model.layers[index], mvtu.pe,
                                                    mvtu.simd, mvtu.in_width,
                                                    banks=-(-gap // work)), index, kind)

    def frame_times(self, in_times):
        """Output time of one frame offered at ``in_times`` to the idle accelerator."""
        times = list(in_times)
        for stage in self.stages:
            times = stage.component.frame_times(times)
        return times

    def elaborate(self, platform):
        m = Module()
        components = [stage.component for stage in self.stages]
        for stage in self.stages:
            m.submodules[stage.name] = stage.component
        wiring.connect(m, wiring.flipped(self.i_stream), components[0].i_stream)
        for producer, consumer in zip(components, components[1:], strict=False):
            wiring.connect(m, producer.o_stream, consumer.i_stream)
        wiring.connect(m, components[-1].o_stream, wiring.flipped(self.o_stream))
        return m


STAGE_BUILDERS = {"dense": Accelerator.dense_stages, "output": Accelerator.dense_stages,
                  "conv": Accelerator.conv_stages, "maxpool": Accelerator.maxpool_stages}
"""The gateware of each layer kind (:data:`bnnhw.model.LAYER_KINDS`): a method
``(accelerator, index, layer, folding entry, input word width) -> (stages, output width)``."""
