"""Host-link framing: round trips, resynchronisation, pinned CRC values."""

import numpy as np
import pytest
from bnnhw.boards import protocol
from bnnhw.boards.protocol import (
    SYNC,
    Command,
    Frame,
    FrameDecoder,
    Identity,
    ProtocolError,
    Status,
    crc8,
    encode,
)
from hypothesis import given
from hypothesis import strategies as st


def test_crc8_check_value():
    # CRC-8 (poly 0x07, init 0, no reflection, no xorout) of "123456789" is 0xF4.
    assert crc8(b"123456789") == 0xF4
    assert crc8(b"") == 0


def test_encode_layout_pinned():
    frame = encode(Command.IDENTIFY)
    assert frame == bytes((0xB5, 0x4E, 0x01, 0x00, 0x00, crc8(b"\x01\x00\x00")))
    frame = encode(0x02, b"\x07\x08")
    assert frame[:5] == bytes((0xB5, 0x4E, 0x02, 0x02, 0x00))
    assert frame[5:7] == b"\x07\x08"
    assert frame[7] == crc8(frame[2:7])


@given(st.integers(0, 255), st.binary(max_size=2000))
def test_round_trip(command, payload):
    assert protocol.decode_one(encode(command, payload)) == Frame(command, payload)


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=5),
       st.integers(1, 64))
def test_stream_in_chunks(frames, chunk):
    data = b"".join(encode(c, p) for c, p in frames)
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i:i + chunk])
    assert out == [Frame(c, p) for c, p in frames]
    assert decoder.discarded == 0


@given(st.binary(max_size=200).filter(lambda g: SYNC not in g + SYNC[:1]),
       st.integers(0, 255), st.binary(max_size=300))
def test_resync_after_garbage(garbage, command, payload):
    decoder = FrameDecoder()
    frames = decoder.feed(garbage + encode(command, payload))
    assert frames == [Frame(command, payload)]
    assert decoder.discarded == len(garbage)


def test_false_sync_with_bad_crc_is_skipped():
    # Garbage holding a sync pair and a plausible header, then a real frame.
    garbage = SYNC + bytes((0x02, 0x03, 0x00, 0xAA))
    real = encode(Command.IDENTIFY)
    decoder = FrameDecoder()
    assert decoder.feed(garbage + real) == [Frame(Command.IDENTIFY, b"")]


def test_corrupted_frame_dropped_next_one_kept():
    bad = bytearray(encode(0x02, b"abc"))
    bad[6] ^= 0x10
    good = encode(0x03, b"xyz")
    assert FrameDecoder().feed(bytes(bad) + good) == [Frame(0x03, b"xyz")]


def test_max_payload_rejects_long_header_at_once():
    decoder = FrameDecoder(max_payload=16)
    garbage = SYNC + bytes((0x02, 0xFF, 0xFF))
    assert decoder.feed(garbage + encode(0x01)) == [Frame(0x01, b"")]


def test_encode_errors_name_the_value():
    with pytest.raises(ProtocolError, match="command must be a byte, got 256"):
        encode(256)
    with pytest.raises(ProtocolError, match="payload of 65536 bytes"):
        encode(1, bytes(65536))


def _identity(**kw):
    fields = dict(model_sha256_prefix="0123456789abcdef", pixels=784, levels=1, classes=10,
                  class_bits=4, score_bits=7, pixels_per_word=4, cycles_per_frame=12345,
                  clk_hz=12_000_000, baud=1_000_000, bits_supported=True,
                  folding="16x49,16x32,10x32")
    fields.update(kw)
    return Identity(**fields)


def test_identity_round_trip():
    ident = _identity()
    frame = protocol.decode_one(encode(Command.IDENTIFY | protocol.REPLY,
                                       bytes((Status.OK,)) + ident.encode()))
    assert protocol.decode_identity(frame) == ident
    assert ident.result_bytes == 10  # 4 + 10 * 7 = 74 bits


@given(st.lists(st.integers(0, 127), min_size=10, max_size=10), st.integers(0, 9),
       st.sampled_from(list(Status)))
def test_result_round_trip(scores, label, status):
    ident = _identity()
    data = protocol.encode_result(Command.CLASSIFY_RAW, status, label, scores, 4, 7)
    result = protocol.decode_result(protocol.decode_one(data), ident)
    assert result == protocol.Result(status, label, tuple(scores))


def test_decode_result_rejects_wrong_length_and_command():
    ident = _identity()
    with pytest.raises(ProtocolError, match="classify reply of 3 bytes, expected 11"):
        protocol.decode_result(Frame(Command.CLASSIFY_RAW | protocol.REPLY, b"\0\0\0"), ident)
    with pytest.raises(ProtocolError, match="command 0x81 is not a classify reply"):
        protocol.decode_result(Frame(0x81, b""), ident)


def test_classify_raw_and_bits_payloads():
    image = np.arange(784, dtype=np.int64).astype(np.uint8)
    assert protocol.decode_one(protocol.classify_raw(image)) == Frame(2, image.tobytes())
    bits = (image >= 128).astype(np.uint8)
    frame = protocol.decode_one(protocol.classify_bits(bits, 1))
    assert len(frame.payload) == 98
    assert (np.unpackbits(np.frombuffer(frame.payload, np.uint8), bitorder="little")
            == bits).all()


def test_bits_payload_rejects_unsupported_levels():
    with pytest.raises(ProtocolError, match=r"pixels=784, levels=3"):
        protocol.bits_payload_bytes(784, 3)
    with pytest.raises(ProtocolError, match="1-D uint8"):
        protocol.classify_raw(np.zeros((2, 2), np.uint8))
