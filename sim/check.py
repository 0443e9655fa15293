"""Decoding of the accelerator's output words and their comparison with the reference.

An output word carries one image's result: the class in bits ``[0, class_bits)`` and score
``c`` in bits ``[class_bits + c * score_bits, class_bits + (c + 1) * score_bits)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DETAILS = 5
"""Mismatching images described in full (the first ones)."""


def decode(word: int, class_bits: int, score_bits: int, classes: int) -> list[int]:
    """Split an output word into ``[class, score_0, ..., score_{C-1}]``."""
    fields = [word & ((1 << class_bits) - 1)]
    mask = (1 << score_bits) - 1
    for c in range(classes):
        fields.append((word >> (class_bits + c * score_bits)) & mask)
    return fields


def encode(row: list[int], class_bits: int, score_bits: int) -> int:
    """Inverse of :func:`decode` for ``row = [class, score_0, ...]`` that fit their fields."""
    word = row[0]
    for c, score in enumerate(row[1:]):
        word |= score << (class_bits + c * score_bits)
    return word


def compare(words: list[int | None], expected: np.ndarray, layout: dict[str, int]
            ) -> tuple[int, list[dict[str, Any]]]:
    """Count images whose output word differs from the expected class and scores.

    Parameters
    ----------
    words : list of int or None
        Received words in order; ``None`` is a word with X or Z bits. Words past the
        expected count are not compared (they are duplicates, counted elsewhere).
    expected : ndarray of int, shape (N, 1 + C)
        Class then scores per image.
    layout : dict
        ``class_bits``, ``score_bits`` and ``classes`` of the design (see :func:`layout`).

    Returns
    -------
    (int, list of dict)
        The number of mismatching images, and for the first :data:`DETAILS` of them the
        image index, expected and received class and scores, and ``neighbour``: the index
        ``k - 1`` or ``k + 1`` whose expectation the word matches instead (an order fault),
        else None.
    """
    class_bits, score_bits = layout["class_bits"], layout["score_bits"]
    classes = layout["classes"]
    rows = np.asarray(expected).tolist()
    mismatches, details = 0, []
    for k, word in enumerate(words[:len(rows)]):
        got = None if word is None else decode(word, class_bits, score_bits, classes)
        if got == rows[k]:
            continue
        mismatches += 1
        if len(details) < DETAILS:
            neighbour = [j for j in (k - 1, k + 1) if 0 <= j < len(rows) and got == rows[j]]
            details.append({
                "image": k, "expected_class": rows[k][0],
                "got_class": None if got is None else got[0],
                "expected_scores": rows[k][1:], "got_scores": None if got is None else got[1:],
                "neighbour": neighbour[0] if neighbour else None,
            })
    return mismatches, details


def layout(sidecar: dict[str, Any]) -> dict[str, int]:
    """The stream layout and timing the bench needs, from a ``bnnhw_top.json`` sidecar.

    Returns ``pixels_per_word``, ``class_bits``, ``score_bits``, ``classes``, ``latency``
    and ``cycles_per_frame`` (see :func:`bnnhw.export.sidecar`).
    """
    try:
        output = sidecar["output"]
        return {"pixels_per_word": int(sidecar["pixels_per_word"]),
                "class_bits": int(output["class_bits"]), "score_bits": int(output["score_bits"]),
                "classes": int(output["classes"]), "latency": int(sidecar["latency"]),
                "cycles_per_frame": int(sidecar["cycles_per_frame"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"sidecar lacks the stream layout or timing ({exc!r})") from None
