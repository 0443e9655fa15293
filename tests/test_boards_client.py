"""Host client over a pseudo-terminal, against a software stand-in of the board.

The stand-in decodes requests with the protocol module, answers with the integer reference
(or with a corrupted reply / silence on chosen requests) exactly as the gateware frames them.
"""

import os
import threading

import numpy as np
import pytest
from bnnhw.boards import client, protocol
from bnnhw.boards.protocol import Command, Status

from bnnhw import reference
from bnnhw.model import DenseLayer, InputQuantizer, Model


def model_784(seed=0):
    rng = np.random.default_rng(seed)
    h = DenseLayer(rng.integers(0, 2, (16, 784)), rng.integers(380, 410, 16))
    return Model(InputQuantizer((128,), 784), (h, DenseLayer(rng.integers(0, 2, (10, 16)))))


def start_board(fd, model, bad_first=(), silent_first=(), spram_layers=()):
    ident = protocol.Identity(model.sha256()[:16], 784, 1, 10, 4, 5, 1, 100, 12_000_000,
                              1_000_000, True, "2x16,10x16@1", bool(spram_layers), False,
                              spram_layers)
    seen = {"requests": 0, "image": {}, "loads": 0, "ident": ident}

    def serve():
        decoder = protocol.FrameDecoder()
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            for frame in decoder.feed(data):
                if frame.command == Command.LOAD_WEIGHTS:
                    # The first chunk is answered BAD_CRC once; the commit sets the flag.
                    seen["loads"] += 1
                    offset = int.from_bytes(frame.payload[:4], "little")
                    for i, byte in enumerate(frame.payload[4:]):
                        seen["image"][offset + i] = byte
                    if len(frame.payload) == 4:
                        seen["ident"] = protocol.Identity(
                            **{**ident.__dict__, "weights_loaded": True})
                    status = Status.BAD_CRC if seen["loads"] == 1 else Status.OK
                    os.write(fd, protocol.encode(Command.LOAD_WEIGHTS | protocol.REPLY,
                                                 bytes((status,))))
                    continue
                if frame.command == Command.IDENTIFY:
                    os.write(fd, protocol.encode(Command.IDENTIFY | protocol.REPLY,
                                                 bytes((Status.OK,)) + seen["ident"].encode()))
                    continue
                n = seen["requests"]
                seen["requests"] += 1
                if frame.command == Command.CLASSIFY_RAW:
                    image = np.frombuffer(frame.payload, np.uint8)
                else:
                    bits = np.unpackbits(np.frombuffer(frame.payload, np.uint8),
                                         bitorder="little")
                    image = np.where(bits == 1, 128, 0).astype(np.uint8)
                cls, scores = reference.infer(model, image[None, :])
                if n in silent_first:
                    continue
                status = Status.BAD_CRC if n in bad_first else Status.OK
                os.write(fd, protocol.encode_result(frame.command, status, int(cls[0]),
                                                    scores[0].tolist(), 4, 5))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    BOARDS.append(thread)
    return seen


BOARDS: list[threading.Thread] = []


@pytest.fixture
def pty_pair():
    board, host = os.openpty()
    yield board, os.ttyname(host)
    # Close the terminal side first: the stand-in's read then fails (EIO) and it stops before
    # its descriptor number can be reused by the next test's pseudo-terminal.
    os.close(host)
    while BOARDS:
        BOARDS.pop().join(timeout=5)
    os.close(board)


@pytest.mark.needs_data
@pytest.mark.parametrize("mode", ["raw", "bits"])
def test_client_accuracy_and_reference(tmp_path, pty_pair, mode):
    board_fd, port = pty_pair
    model = model_784()
    path = model.save(tmp_path / "m.npz")
    start_board(board_fd, model)
    result = client.run(port, "mnist", 12, model=path, mode=mode, window=3, progress=False)
    assert result["images"] == 12 and result["reference_mismatches"] == []
    assert result["retries"] == 0 and result["images_per_s"] > 0
    assert 0 <= result["accuracy"] <= 1


@pytest.mark.needs_data
def test_client_resends_after_bad_crc_and_silence(tmp_path, pty_pair):
    board_fd, port = pty_pair
    model = model_784()
    seen = start_board(board_fd, model, bad_first=(1,), silent_first=(4,))
    result = client.run(port, "mnist", 8, model=model.save(tmp_path / "m.npz"), window=1,
                        timeout=1.0, progress=False)
    assert result["reference_mismatches"] == []
    assert result["retries"] >= 2
    assert seen["requests"] >= 10


@pytest.mark.needs_data
def test_client_loads_weights_first(tmp_path, pty_pair):
    from bnnhw.boards.spram import weight_image

    from bnnhw.devices import plan_spram
    from bnnhw.folding import parse_fold

    board_fd, port = pty_pair
    model = model_784()
    seen = start_board(board_fd, model, spram_layers=(0,))
    with pytest.raises(ValueError, match="weights are not loaded yet: give the model file"):
        client.run(port, "mnist", 2, progress=False)
    result = client.run(port, "mnist", 3, model=model.save(tmp_path / "m.npz"), progress=False)
    assert result["weights_loaded_now"] and result["reference_mismatches"] == []
    regions = weight_image(model, plan_spram(model, parse_fold("2x16,10x16@1", model), (0,)))
    expected = {o + i: b for o, d in regions for i, b in enumerate(d)}
    assert seen["image"] == expected
    # 2 SPRAMs x 392 words x 2 bytes in 512-byte chunks, a commit, and one resend.
    assert seen["loads"] == 2 * 2 + 1 + 1


def test_client_rejects_other_model(tmp_path, pty_pair):
    board_fd, port = pty_pair
    start_board(board_fd, model_784(0))
    with pytest.raises(ValueError, match="the board runs model"):
        client.run(port, "mnist", 2, model=model_784(1).save(tmp_path / "o.npz"),
                   progress=False)


def test_client_argument_errors(pty_pair):
    _, port = pty_pair
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        client.run(port, mode="fast")
    with pytest.raises(ValueError, match="baud rate 123 is not supported"):
        client.SerialPort(port, 123)
