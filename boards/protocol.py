"""Framing of the host link, shared by the host client, the testbenches and the gateware.

Every message in either direction is one frame (full description in ``docs/host-link.md``)::

    SYNC0 SYNC1 | CMD | LEN_LO LEN_HI | PAYLOAD (LEN bytes) | CRC

* ``SYNC0 SYNC1 = 0xB5 0x4E``.
* ``CMD``: a :class:`Command`; a reply carries the request's command with bit 7 set.
* ``LEN``: payload length, 16-bit little-endian.
* ``CRC``: CRC-8 (polynomial ``x^8 + x^2 + x + 1`` = 0x07, initial value 0, no reflection,
  no final XOR) over ``CMD, LEN_LO, LEN_HI, PAYLOAD`` (:func:`crc8`).

A reply's payload starts with a :class:`Status` byte. A classify reply then holds the
accelerator's output word, ``ceil(out_width / 8)`` bytes little-endian: the class in bits
``[0, class_bits)`` and score ``c`` in bits ``[class_bits + c * score_bits, ...)``. An identify
reply holds the :class:`Identity` record. A LOAD_WEIGHTS request carries a little-endian u32
byte offset into the board's run-time weight image and an even number of bytes (at most
:data:`MAX_WEIGHT_CHUNK`) written there as 16-bit little-endian words; one with no data bytes
commits the image (the board then reports its weights as loaded). Its reply is the status byte.

Resynchronisation: a receiver hunts for ``SYNC0 SYNC1``; a header it cannot accept or a CRC
mismatch makes it resume hunting one byte after the rejected ``SYNC0``, so garbage before a
frame costs nothing but the garbage.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

SYNC = bytes((0xB5, 0x4E))
REPLY = 0x80
HEADER_BYTES = 5  # SYNC0 SYNC1 CMD LEN_LO LEN_HI
OVERHEAD_BYTES = HEADER_BYTES + 1  # plus the CRC byte
MAX_PAYLOAD = 0xFFFF
CRC_POLY = 0x07
MAX_WEIGHT_CHUNK = 512
"""Largest data part of one LOAD_WEIGHTS request, in bytes."""


class Command(enum.IntEnum):
    """Request commands (a reply sets bit 7: ``command | REPLY``)."""

    IDENTIFY = 0x01
    CLASSIFY_RAW = 0x02
    CLASSIFY_BITS = 0x03
    LOAD_WEIGHTS = 0x04


class Status(enum.IntEnum):
    """First payload byte of every reply."""

    OK = 0
    BAD_CRC = 1
    TIMEOUT = 2
    OVERRUN = 3
    """Bytes were lost before this reply (the board's receiver overflowed): every request
    sent since the previous reply may be lost or damaged, so the host resends them."""


class ProtocolError(ValueError):
    """A frame or reply that does not follow the protocol."""


def crc8(data: bytes | bytearray, crc: int = 0) -> int:
    """CRC-8 with polynomial 0x07, MSB first: ``crc = ((crc ^ byte) << 1) ^ (0x07 if msb)``.

    Parameters
    ----------
    data : bytes
        Message bytes.
    crc : int
        Running value (0 to start).
    """
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def encode(command: int, payload: bytes = b"") -> bytes:
    """One frame: ``SYNC, command, len(payload) (LE16), payload, crc8(command..payload)``.

    Raises
    ------
    ProtocolError
        If ``command`` is not a byte or the payload is longer than 65535 bytes.
    """
    if not 0 <= command <= 0xFF:
        raise ProtocolError(f"command must be a byte, got {command}")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = bytes((command,)) + struct.pack("<H", len(payload)) + bytes(payload)
    return SYNC + body + bytes((crc8(body),))


@dataclass(frozen=True)
class Frame:
    """A decoded frame: its command byte and payload."""

    command: int
    payload: bytes


class FrameDecoder:
    """Incremental frame decoder that resynchronises after garbage.

    Parameters
    ----------
    max_payload : int
        Headers announcing a longer payload are rejected at once (the receiver resumes hunting)
        instead of waiting for bytes that may never come.

    Attributes
    ----------
    discarded : int
        Bytes skipped so far while hunting for a valid frame.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = max_payload
        self.discarded = 0
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Append received bytes; return every frame completed by them, in order."""
        self._buffer += data
        frames = []
        buf = self._buffer
        while True:
            start = buf.find(SYNC)
            if start < 0:
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self.discarded += len(buf) - keep
                del buf[:len(buf) - keep]
                break
            self.discarded += start
            del buf[:start]
            if len(buf) < HEADER_BYTES:
                break
            length = buf[3] | buf[4] << 8
            if length > self.max_payload:
                self.discarded += 1
                del buf[:1]
                continue
            end = HEADER_BYTES + length + 1
            if len(buf) < end:
                break
            if crc8(buf[2:end - 1]) != buf[end - 1]:
                self.discarded += 1
                del buf[:1]
                continue
            frames.append(Frame(buf[2], bytes(buf[HEADER_BYTES:end - 1])))
            del buf[:end]
        return frames


def decode_one(data: bytes) -> Frame:
    """Decode exactly one frame with no bytes before or after it.

    Raises
    ------
    ProtocolError
        If ``data`` is not exactly one valid frame.
    """
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    if len(frames) != 1 or decoder.discarded or decoder._buffer:
        raise ProtocolError(f"expected exactly one frame, got {len(frames)} frame(s) and "
                            f"{decoder.discarded + len(decoder._buffer)} stray byte(s)")
    return frames[0]


def bits_payload_bytes(pixels: int, levels: int) -> int:
    """Payload bytes of CLASSIFY_BITS: ``pixels * levels / 8``.

    Raises
    ------
    ProtocolError
        If ``levels`` does not divide 8 or ``pixels * levels`` is not a multiple of 8 (the
        gateware expands whole bytes of whole pixels).
    """
    if levels not in (1, 2, 4, 8) or (pixels * levels) % 8:
        raise ProtocolError(
            f"CLASSIFY_BITS needs levels in (1, 2, 4, 8) and pixels * levels divisible by 8 "
            f"(pixels={pixels}, levels={levels})"
        )
    return pixels * levels // 8


def classify_raw(image: np.ndarray) -> bytes:
    """CLASSIFY_RAW request: the image's uint8 pixels in order."""
    image = np.asarray(image)
    if image.ndim != 1 or image.dtype != np.uint8:
        raise ProtocolError(f"an image must be a 1-D uint8 array, got {image.dtype} "
                            f"shape {image.shape}")
    return encode(Command.CLASSIFY_RAW, image.tobytes())


def classify_bits(bits: np.ndarray, levels: int) -> bytes:
    """CLASSIFY_BITS request from the quantized input bits of one image.

    Parameters
    ----------
    bits : ndarray of 0/1, shape (pixels * levels,)
        ``InputQuantizer.quantize`` output for one image: bit ``j * L + l`` is level ``l`` of
        pixel ``j``. Packed least significant bit first (bit ``k`` is bit ``k % 8`` of byte
        ``k // 8``). Each pixel's ``L`` bits must be a thermometer code, as the quantizer
        makes them: the gateware rebuilds pixel ``j`` as ``thresholds[c - 1]`` (0 for
        ``c = 0``) from its count ``c`` of ones.
    levels : int
        Thermometer levels ``L`` (1, 2, 4 or 8).
    """
    bits = np.asarray(bits)
    if bits.ndim != 1 or not np.isin(bits, (0, 1)).all():
        raise ProtocolError(f"bits must be a 1-D array of 0/1, got shape {bits.shape}")
    if bits.size % levels:
        raise ProtocolError(f"{bits.size} bits are not whole pixels of {levels} levels")
    bits_payload_bytes(bits.size // levels, levels)
    packed = np.packbits(bits.astype(np.uint8), bitorder="little")
    return encode(Command.CLASSIFY_BITS, packed.tobytes())


def identify() -> bytes:
    """IDENTIFY request (empty payload)."""
    return encode(Command.IDENTIFY)


def load_weights(offset: int, data: bytes = b"") -> bytes:
    """LOAD_WEIGHTS request: ``u32 offset (LE) + data``; empty ``data`` commits the image.

    Raises
    ------
    ProtocolError
        If ``offset`` is negative, odd or above 32 bits, or ``data`` has an odd length or is
        longer than :data:`MAX_WEIGHT_CHUNK` bytes.
    """
    if not 0 <= offset <= 0xFFFFFFFF or offset % 2:
        raise ProtocolError(f"weight offset must be an even u32, got {offset}")
    if len(data) % 2 or len(data) > MAX_WEIGHT_CHUNK:
        raise ProtocolError(f"weight chunk of {len(data)} bytes must be even and at most "
                            f"{MAX_WEIGHT_CHUNK}")
    return encode(Command.LOAD_WEIGHTS, struct.pack("<I", offset) + bytes(data))


def load_weight_frames(regions: list[tuple[int, bytes]],
                       chunk: int = MAX_WEIGHT_CHUNK) -> list[bytes]:
    """All LOAD_WEIGHTS requests for an image given as ``(byte offset, data)`` regions.

    Each region is cut into chunks of at most ``chunk`` bytes; the last request is the commit
    (no data, offset = total bytes sent).
    """
    if chunk < 2 or chunk % 2 or chunk > MAX_WEIGHT_CHUNK:
        raise ProtocolError(f"chunk must be even and in [2, {MAX_WEIGHT_CHUNK}], got {chunk}")
    frames = []
    total = 0
    for offset, data in regions:
        for start in range(0, len(data), chunk):
            frames.append(load_weights(offset + start, data[start:start + chunk]))
        total += len(data)
    frames.append(load_weights(total))
    return frames


def decode_status(frame: Frame, command: int) -> Status:
    """The status of a reply to ``command`` whose payload is the status byte alone.

    Raises
    ------
    ProtocolError
        If the frame is not such a reply.
    """
    if frame.command != command | REPLY or len(frame.payload) != 1:
        raise ProtocolError(f"frame with command 0x{frame.command:02x} and "
                            f"{len(frame.payload)} payload byte(s) is not a status reply to "
                            f"0x{command:02x}")
    try:
        return Status(frame.payload[0])
    except ValueError:
        raise ProtocolError(f"unknown status {frame.payload[0]}") from None


_IDENTITY = struct.Struct("<8sHBBBBHIIIBB")


@dataclass(frozen=True)
class Identity:
    """What an IDENTIFY reply reports about the loaded accelerator.

    Layout after the status byte (little-endian): 8 bytes of the model's SHA-256, u16
    pixels, u8 levels, u8 classes, u8 class_bits, u8 score_bits, u16 pixels_per_word,
    u32 cycles_per_frame, u32 clock Hz, u32 baud, u8 flags (bit 0: CLASSIFY_BITS
    accepted; bit 1: weights live in run-time memory and must be sent with LOAD_WEIGHTS;
    bit 2: such weights have been loaded and committed), u8 n, then ``n`` ASCII bytes of the
    folding (``PExSIMD`` per layer), then u8 m and ``m`` bytes: the indices of the layers whose
    weights are loaded at run time (:mod:`bnnhw.boards.spram`).
    """

    model_sha256_prefix: str
    pixels: int
    levels: int
    classes: int
    class_bits: int
    score_bits: int
    pixels_per_word: int
    cycles_per_frame: int
    clk_hz: int
    baud: int
    bits_supported: bool
    folding: str
    weights_in_ram: bool = False
    weights_loaded: bool = False
    spram_layers: tuple[int, ...] = ()

    def encode(self) -> bytes:
        """The identity record (without the status byte)."""
        fold = self.folding.encode("ascii")
        if len(fold) > 255:
            raise ProtocolError(f"folding string of {len(fold)} bytes exceeds 255")
        return _IDENTITY.pack(
            bytes.fromhex(self.model_sha256_prefix), self.pixels, self.levels, self.classes,
            self.class_bits, self.score_bits, self.pixels_per_word, self.cycles_per_frame,
            self.clk_hz, self.baud, self.flags, len(fold)) + fold + bytes(
            (len(self.spram_layers), *self.spram_layers))

    @property
    def flags(self) -> int:
        """The flags byte: bit 0 bits_supported, bit 1 weights_in_ram, bit 2 weights_loaded."""
        return (int(self.bits_supported) | int(self.weights_in_ram) << 1
                | int(self.weights_loaded) << 2)

    @classmethod
    def decode(cls, data: bytes) -> Identity:
        """Parse an identity record (without the status byte)."""
        if len(data) < _IDENTITY.size:
            raise ProtocolError(f"identity record of {len(data)} bytes is shorter than "
                                f"{_IDENTITY.size}")
        (digest, pixels, levels, classes, class_bits, score_bits, ppw, cpf, clk, baud,
         flags, n) = _IDENTITY.unpack_from(data)
        fold = data[_IDENTITY.size:_IDENTITY.size + n]
        rest = data[_IDENTITY.size + n:]
        if len(fold) != n or not rest or len(rest) != 1 + rest[0]:
            raise ProtocolError(f"identity announces a {n}-byte folding and a layer list but "
                                f"carries {len(data) - _IDENTITY.size} bytes after the header")
        return cls(digest.hex(), pixels, levels, classes, class_bits, score_bits, ppw, cpf,
                   clk, baud, bool(flags & 1), fold.decode("ascii"), bool(flags & 2),
                   bool(flags & 4), tuple(rest[1:]))

    @property
    def result_bytes(self) -> int:
        """Bytes of the output word in a classify reply, ``ceil(out_width / 8)``."""
        return result_bytes(self.classes, self.class_bits, self.score_bits)


def result_bytes(classes: int, class_bits: int, score_bits: int) -> int:
    """``ceil((class_bits + classes * score_bits) / 8)``."""
    return -(-(class_bits + classes * score_bits) // 8)


@dataclass(frozen=True)
class Result:
    """A decoded classify reply."""

    status: Status
    label: int
    scores: tuple[int, ...]


def encode_result(command: int, status: int, label: int, scores: list[int] | tuple[int, ...],
                  class_bits: int, score_bits: int) -> bytes:
    """A classify reply frame, as the gateware sends it (used to test the decoder)."""
    word = label
    for c, score in enumerate(scores):
        word |= int(score) << (class_bits + c * score_bits)
    data = word.to_bytes(result_bytes(len(scores), class_bits, score_bits), "little")
    return encode(command | REPLY, bytes((status,)) + data)


def decode_result(frame: Frame, identity: Identity) -> Result:
    """Decode a classify reply using the field widths from :class:`Identity`.

    Raises
    ------
    ProtocolError
        If the frame is not a classify reply or its length does not match.
    """
    if frame.command not in (Command.CLASSIFY_RAW | REPLY, Command.CLASSIFY_BITS | REPLY):
        raise ProtocolError(f"frame with command 0x{frame.command:02x} is not a classify reply")
    expected = 1 + identity.result_bytes
    if len(frame.payload) != expected:
        raise ProtocolError(f"classify reply of {len(frame.payload)} bytes, expected {expected}")
    try:
        status = Status(frame.payload[0])
    except ValueError:
        raise ProtocolError(f"unknown status {frame.payload[0]}") from None
    word = int.from_bytes(frame.payload[1:], "little")
    label = word & ((1 << identity.class_bits) - 1)
    mask = (1 << identity.score_bits) - 1
    scores = tuple((word >> (identity.class_bits + c * identity.score_bits)) & mask
                   for c in range(identity.classes))
    return Result(status, label, scores)


def decode_identity(frame: Frame) -> Identity:
    """Decode an IDENTIFY reply.

    Raises
    ------
    ProtocolError
        If the frame is not an OK identify reply.
    """
    if frame.command != Command.IDENTIFY | REPLY:
        raise ProtocolError(f"frame with command 0x{frame.command:02x} is not an identify reply")
    if not frame.payload or frame.payload[0] != Status.OK:
        raise ProtocolError(f"identify reply with status {frame.payload[:1].hex() or 'none'}")
    return Identity.decode(frame.payload[1:])


IDENTITY_FLAGS_INDEX = _IDENTITY.size - 2
"""Byte index of the flags in the identity record."""

__all__ = [
    "IDENTITY_FLAGS_INDEX", "MAX_WEIGHT_CHUNK", "SYNC", "Command", "Frame", "FrameDecoder",
    "Identity", "ProtocolError", "Result", "Status", "bits_payload_bytes", "classify_bits",
    "classify_raw", "crc8", "decode_identity", "decode_one", "decode_result", "decode_status",
    "encode", "encode_result", "identify", "load_weight_frames", "load_weights", "result_bytes",
]
