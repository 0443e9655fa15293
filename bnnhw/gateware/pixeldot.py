"""Pipelined signed sum of 8-bit pixels with +-1 weights: the lanes of an 8-bit first layer.

Maths: for ``N`` pixels ``x_i`` in ``[0, 255]`` and a lane's weight bits ``w_i`` (1 = +1,
0 = -1) the output is ``sum_i (2 w_i - 1) x_i = sum_i (w_i ? x_i : -x_i)``, an integer in
``[-255 N, 255 N]`` held in two's complement. The pixels are shared by all lanes (the MVTU's PEs
see the same input slice); an optional tag travels alongside unchanged.
"""

from amaranth.hdl import Mux, signed, unsigned
from amaranth.lib import data

from .popcount import AdderTreeUnit

__all__ = ["PixelDot", "PIXEL_BITS"]

PIXEL_BITS = 8


class PixelDot(AdderTreeUnit):
    """Add/subtract of ``N`` 8-bit pixels per lane (an
    :class:`~bnnhw.gateware.popcount.AdderTreeUnit`).

    The tree has the shape of :class:`~bnnhw.gateware.popcount.Popcount`: the first level adds
    pairs of ``+-x_i`` (the sign chosen by the weight bit) and every level ends in a register,
    so its depth is the same ``popcount_latency(N)``.

    Payload layouts (low bits first):

    * ``i_stream.payload``: ``pixels[i]`` (8 bits each), then ``weights[l]``, lane ``l``'s
      ``N`` weight bits, then ``tag``.
    * ``o_stream.payload`` (:func:`~bnnhw.gateware.popcount.lanes_layout`): ``lanes[l]``, lane
      ``l``'s sum, signed, ``B = count_width = bit_length(255 N) + 1`` bits, then ``tag``.
    """

    unit_name = "pixel dot"
    signed = True

    @staticmethod
    def sum_shape(width):
        return signed((255 * width).bit_length() + 1)

    @staticmethod
    def in_layout(width, lanes, tag_width):
        return data.StructLayout({
            "pixels": data.ArrayLayout(unsigned(PIXEL_BITS), width),
            "weights": data.ArrayLayout(unsigned(width), lanes),
            "tag": unsigned(tag_width),
        })

    def terms(self, payload):
        """Per lane, ``+x_i`` or ``-x_i`` by the weight bit, each of magnitude at most 255."""
        pixels = [payload.pixels[i] for i in range(self.width)]
        return [[(Mux(payload.weights[lane][i], pixels[i], -pixels[i]), 255)
                 for i in range(self.width)] for lane in range(self.lanes)]
