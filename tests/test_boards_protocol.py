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


def test_load_weights_layout_pinned():
    frame = protocol.load_weights(0x12346, b"\x01\x02")
    assert frame[2:5] == bytes((Command.LOAD_WEIGHTS, 6, 0))
    assert frame[5:11] == bytes((0x46, 0x23, 0x01, 0x00, 0x01, 0x02))
    assert protocol.decode_one(protocol.load_weights(8)) == Frame(0x04, bytes((8, 0, 0, 0)))


@pytest.mark.parametrize("offset, data, message", [
    (3, b"", "weight offset must be an even u32, got 3"),
    (-2, b"", "got -2"),
    (1 << 32, b"", "got 4294967296"),
    (0, b"\0", "weight chunk of 1 bytes must be even"),
    (0, bytes(514), "weight chunk of 514 bytes must be even and at most 512"),
])
def test_load_weights_errors_name_the_value(offset, data, message):
    with pytest.raises(ProtocolError, match=message):
        protocol.load_weights(offset, data)


@given(st.lists(st.tuples(st.integers(0, 1000).map(lambda x: 2 * x),
                          st.binary(max_size=700).map(lambda b: b[:len(b) // 2 * 2])),
                max_size=4),
       st.integers(1, 256).map(lambda x: 2 * x))
def test_load_weight_frames_cover_regions_then_commit(regions, chunk):
    frames = [protocol.decode_one(f) for f in protocol.load_weight_frames(regions, chunk)]
    assert all(f.command == Command.LOAD_WEIGHTS for f in frames)
    *data, commit = frames
    assert commit.payload == sum(len(d) for _, d in regions).to_bytes(4, "little")
    written = {}
    for f in data:
        offset = int.from_bytes(f.payload[:4], "little")
        assert 0 < len(f.payload) - 4 <= chunk
        written.update({offset + i: b for i, b in enumerate(f.payload[4:])})
    expected = {o + i: b for o, d in regions for i, b in enumerate(d)}
    assert written == expected


def test_load_weight_frames_rejects_bad_chunk():
    with pytest.raises(ProtocolError, match="chunk must be even and in \\[2, 512\\], got 3"):
        protocol.load_weight_frames([], 3)


def test_decode_status():
    frame = protocol.decode_one(encode(Command.LOAD_WEIGHTS | protocol.REPLY, b"\x01"))
    assert protocol.decode_status(frame, Command.LOAD_WEIGHTS) == Status.BAD_CRC
    with pytest.raises(ProtocolError, match="command 0x84 and 2 payload byte"):
        protocol.decode_status(Frame(0x84, b"\0\0"), Command.LOAD_WEIGHTS)
    with pytest.raises(ProtocolError, match="unknown status 9"):
        protocol.decode_status(Frame(0x84, b"\x09"), Command.LOAD_WEIGHTS)


@given(st.booleans(), st.booleans(), st.booleans())
def test_identity_flags_round_trip(bits, in_ram, loaded):
    ident = _identity(bits_supported=bits, weights_in_ram=in_ram, weights_loaded=loaded,
                      spram_layers=(0, 2) if in_ram else ())
    record = ident.encode()
    assert record[protocol.IDENTITY_FLAGS_INDEX] == bits | in_ram << 1 | loaded << 2
    assert Identity.decode(record) == ident
    with pytest.raises(ProtocolError, match="carries 17 bytes after the header"):
        Identity.decode(record[:-1] if not in_ram else record[:-3])
