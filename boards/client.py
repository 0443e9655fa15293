"""Host client: classify a test set on a board over its serial port, measure accuracy and rate.

The serial port is opened with the standard library (``termios``: raw mode, 8N1, no flow
control), so no extra dependency is needed; any object with ``read(n)`` / ``write(data)`` works
as well (:class:`SerialPort` is one). Requests may be pipelined: up to ``window`` requests are
in flight, and replies come back in request order. A reply with status BAD_CRC or TIMEOUT, or
no reply within ``timeout`` seconds, makes the client resend that image (up to ``retries``
times).

Limitation: replies carry no sequence number, so with ``window > 1`` a reply lost on the wire
(corrupted bytes the decoder drops) shifts the pairing of later replies with their images.
The default ``window = 1`` detects every loss by its timeout; a larger window is for links
that do not lose bytes (reply corruption on a USB-serial bridge is rare, and request
corruption is already answered in order with BAD_CRC or TIMEOUT).
"""

from __future__ import annotations

import os
import select
import termios
import time
import tty
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from bnnhw import datasets, reference
from bnnhw.devices import plan_spram
from bnnhw.folding import parse_fold
from bnnhw.model import load_model

from . import protocol
from .protocol import FrameDecoder, Identity, ProtocolError, Status

__all__ = ["SerialPort", "Transport", "identify", "load_weights", "run"]


class Transport(Protocol):
    """What the client needs from a link: blocking write, read with timeout."""

    def write(self, data: bytes) -> None: ...

    def read(self, size: int, timeout: float) -> bytes: ...


class SerialPort:
    """A serial device in raw 8N1 mode at ``baud`` (``termios``; Linux and macOS).

    Raises
    ------
    ValueError
        If ``baud`` has no ``termios.B<baud>`` constant on this system, or ``path`` is not a
        terminal device (a regular file, ``/dev/null``, a folder).
    FileNotFoundError, PermissionError
        From opening ``path``.
    """

    def __init__(self, path: str | os.PathLike, baud: int):
        speed = getattr(termios, f"B{baud}", None)
        if speed is None:
            raise ValueError(f"baud rate {baud} is not supported by termios on this system")
        if Path(path).is_dir():
            raise ValueError(f"port {str(path)!r} is a folder, not a serial device")
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            if not os.isatty(self.fd):
                raise ValueError(f"port {str(path)!r} is not a serial device (not a terminal)")
            os.set_blocking(self.fd, True)
            tty.setraw(self.fd)
            attrs = termios.tcgetattr(self.fd)
            attrs[2] = (attrs[2] & ~(termios.PARENB | termios.CSTOPB | termios.CSIZE
                                     | getattr(termios, "CRTSCTS", 0))) \
                | termios.CS8 | termios.CLOCAL | termios.CREAD
            attrs[4] = attrs[5] = speed
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
            termios.tcflush(self.fd, termios.TCIOFLUSH)
        except BaseException:
            os.close(self.fd)
            raise

    def write(self, data: bytes) -> None:
        """Write all of ``data``."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes; empty if none arrive within ``timeout`` seconds."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return os.read(self.fd, size) if ready else b""

    def close(self) -> None:
        """Close the device."""
        os.close(self.fd)


class _Replies:
    """Frames from a transport, decoded incrementally."""

    def __init__(self, link: Transport):
        self.link = link
        self.decoder = FrameDecoder(max_payload=4096)
        self.frames: deque[protocol.Frame] = deque()

    def next(self, timeout: float) -> protocol.Frame | None:
        deadline = time.monotonic() + timeout
        while not self.frames:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.frames.extend(self.decoder.feed(self.link.read(4096, left)))
        return self.frames.popleft()


def identify(link: Transport, timeout: float = 1.0, retries: int = 3) -> Identity:
    """Ask the board what it runs.

    Raises
    ------
    TimeoutError
        If no IDENTIFY reply arrives after ``retries`` attempts.
    """
    replies = _Replies(link)
    for _ in range(retries):
        link.write(protocol.identify())
        while (frame := replies.next(timeout)) is not None:
            if frame.command == protocol.Command.IDENTIFY | protocol.REPLY \
                    and frame.payload[:1] != bytes((Status.OVERRUN,)):
                return protocol.decode_identity(frame)
    raise TimeoutError(f"no IDENTIFY reply after {retries} attempt(s) of {timeout} s")


def load_weights(link: Transport, model: Any, ident: Identity, timeout: float = 1.0,
                 retries: int = 3, progress: bool = False) -> int:
    """Send ``model``'s run-time weights (LOAD_WEIGHTS) as the board's identity describes.

    The image (:func:`bnnhw.boards.spram.weight_image`) follows the folding and the SPRAM
    layers of ``ident``. Requests go one at a time; a BAD_CRC or TIMEOUT status, or no reply
    within ``timeout``, resends the chunk. After the commit, IDENTIFY must report the weights
    loaded.

    Returns
    -------
    int
        Resends.

    Raises
    ------
    TimeoutError
        If a chunk gets no OK reply after ``retries`` resends.
    RuntimeError
        If the board does not report its weights loaded afterwards.
    """


    # The SPRAM code imports the gateware (amaranth): loaded on use.
    from .spram import weight_image

    plan = plan_spram(model, parse_fold(ident.folding, model), ident.spram_layers)
    frames = protocol.load_weight_frames(weight_image(model, plan))
    replies = _Replies(link)
    resent = 0
    for frame in tqdm(frames, disable=not progress, unit="chunk", desc="load weights"):
        for _attempt in range(retries + 1):
            link.write(frame)
            reply = replies.next(timeout)
            try:
                ok = reply is not None and protocol.decode_status(
                    reply, protocol.Command.LOAD_WEIGHTS) == Status.OK
            except ProtocolError:
                ok = False
            if ok:
                break
            if reply is None:
                replies.next(timeout)  # drain a late reply before resending
            resent += 1
        else:
            raise TimeoutError(f"weight chunk of {len(frame)} bytes: no OK reply after "
                               f"{retries} resend(s)")
    if not identify(link, timeout, retries).weights_loaded:
        raise RuntimeError("the board does not report its weights loaded after the commit")
    return resent


def run(port: str | os.PathLike | Transport, dataset: str = "mnist", limit: int | None = 100,
        *, model: str | os.PathLike | None = None, mode: str = "raw", baud: int = 1_000_000,
        window: int = 1, timeout: float = 1.0, retries: int = 3,
        data_dir: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Classify the first ``limit`` test images on the board and report accuracy and rate.

    Parameters
    ----------
    port : path or Transport
        Serial device (opened at ``baud`` with :class:`SerialPort`) or an open transport.
    dataset : str
        ``"mnist"`` or ``"fashion-mnist"`` (:func:`bnnhw.datasets.load`, test split).
    limit : int or None
        Number of images (None: all).
    model : path or None
        Model file. If given, its SHA-256 prefix must match the board's, and the board's
        answers are also compared with :func:`bnnhw.reference.infer` (``reference_mismatches``).
        Required for ``mode="bits"`` (the host quantizes the images) and for a board whose
        run-time weights are not loaded yet (they are then sent first, :func:`load_weights`).
    mode : str
        ``"raw"`` (CLASSIFY_RAW, one byte per pixel) or ``"bits"`` (CLASSIFY_BITS).
    window : int
        Requests in flight (>= 1); see the module docstring for ``window > 1``.
    timeout, retries
        Per-reply timeout in seconds; resends per image before giving up.

    Returns
    -------
    dict
        ``images``, ``accuracy``, ``images_per_s``, ``seconds``, ``retries`` (resends),
        ``identity``, ``reference_mismatches`` (None without ``model``), ``mode``,
        ``weights_loaded_now`` (bool) and ``load_seconds``.

    Raises
    ------
    ValueError
        Unknown mode, bad window, a model that is not the one on the board, bits mode
        without a model or on a board without CLASSIFY_BITS, or a board waiting for its
        weights without a model.
    TimeoutError
        If an image gets no valid reply after ``retries`` resends.
    """


    if mode not in ("raw", "bits"):
        raise ValueError(f"unknown mode {mode!r} (choices: raw, bits)")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    own = isinstance(port, str | os.PathLike)
    link: Transport = SerialPort(Path(port), baud) if own else port
    try:
        ident = identify(link, timeout, retries)
        net = load_model(model) if model is not None else None
        if net is not None and not net.sha256().startswith(ident.model_sha256_prefix):
            raise ValueError(f"the board runs model {ident.model_sha256_prefix}..., not "
                             f"{model} ({net.sha256()[:16]}...)")
        load_seconds = 0.0
        loaded_now = False
        if ident.weights_in_ram and not ident.weights_loaded:
            if net is None:
                raise ValueError("the board's weights are not loaded yet: give the model file")
            start = time.perf_counter()
            load_weights(link, net, ident, timeout, retries, progress)
            load_seconds, loaded_now = time.perf_counter() - start, True
        if mode == "bits" and (net is None or not ident.bits_supported):
            raise ValueError("mode 'bits' needs the model file and a board with CLASSIFY_BITS "
                             f"(board supports it: {ident.bits_supported})")
        split = datasets.load(dataset, "test", data_dir)
        images, labels = split.images[:limit], split.labels[:limit]
        if images.shape[1] != ident.pixels:
            raise ValueError(f"{dataset} images have {images.shape[1]} pixels, the board "
                             f"expects {ident.pixels}")
        if mode == "bits":
            bits = net.quantizer.quantize(images)
            requests = [protocol.classify_bits(b, ident.levels) for b in bits]
        else:
            requests = [protocol.classify_raw(im) for im in images]
        bar = tqdm(total=len(requests), disable=not progress, unit="img", desc=f"board {mode}")
        predicted, scores, resent, overruns, seconds = _classify(
            link, requests, ident, window, timeout, retries, bar)
    finally:
        if own:
            link.close()
    mismatches = None
    if net is not None:
        ref_classes, ref_scores = reference.infer(net, images)
        mismatches = [i for i in range(len(images))
                      if predicted[i] != ref_classes[i]
                      or list(scores[i]) != ref_scores[i].tolist()]
    accuracy = float(np.mean(np.array(predicted) == labels)) if len(labels) else 0.0
    result = {"images": int(len(labels)), "accuracy": accuracy, "mode": mode,
              "seconds": seconds, "images_per_s": len(labels) / seconds if seconds else 0.0,
              "retries": resent, "overrun_replies": overruns, "identity": ident.__dict__,
              "reference_mismatches": mismatches, "weights_loaded_now": loaded_now,
              "load_seconds": load_seconds}
    if progress:
        print(f"accuracy {100 * accuracy:.2f} % on {len(labels)} images, "
              f"{result['images_per_s']:.1f} images/s ({mode}, window {window})")
    return result


def _classify(link: Transport, requests: list[bytes], ident: Identity, window: int,
              timeout: float, retries: int,
              bar: Any) -> tuple[list[int], list[Any], int, int, float]:
    """Pipelined request/reply loop; returns labels, scores, resends, OVERRUN replies and
    seconds."""
    replies = _Replies(link)
    labels: list[int] = [0] * len(requests)
    scores: list[Any] = [()] * len(requests)
    attempts = [0] * len(requests)
    pending: deque[int] = deque()
    queue: deque[int] = deque(range(len(requests)))
    resent = overruns = 0
    start = time.perf_counter()
    while queue or pending:
        while queue and len(pending) < window:
            index = queue.popleft()
            link.write(requests[index])
            pending.append(index)
        frame = replies.next(timeout)
        index = pending.popleft()
        result = None
        if frame is not None:
            try:
                result = protocol.decode_result(frame, ident)
            except ProtocolError:
                result = None
        if result is not None and result.status == Status.OVERRUN:
            overruns += 1
        if result is None or result.status != Status.OK:
            if frame is None:
                # A lost reply desynchronises the in-flight queue: drain it and resend all.
                replies.next(timeout)
                queue.extendleft(reversed([index, *pending]))
                pending.clear()
            else:
                queue.appendleft(index)
            attempts[index] += 1
            resent += 1
            if attempts[index] > retries:
                raise TimeoutError(f"image {index}: no valid reply after {retries} resend(s)")
            continue
        labels[index], scores[index] = result.label, result.scores
        bar.update(1)
    bar.close()
    return labels, scores, resent, overruns, time.perf_counter() - start
