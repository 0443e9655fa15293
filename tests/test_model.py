"""Model description and model file: round trip, validation messages, atomic writes."""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.model import DenseLayer, InputQuantizer, Model, ModelError, load_model


def small_model(rng: np.random.Generator, sizes=(16, 8, 6, 3), levels=1) -> Model:
    quantizer = InputQuantizer.thermometer(levels, pixels=sizes[0] // levels)
    layers = []
    for i, (mw, mh) in enumerate(zip(sizes, sizes[1:], strict=False)):
        w = rng.integers(0, 2, (mh, mw))
        t = None if i == len(sizes) - 2 else rng.integers(0, mw + 2, mh)
        layers.append(DenseLayer(w, t))
    return Model(quantizer, tuple(layers), {"name": "test"})


def test_round_trip_keeps_everything(tmp_path):
    model = small_model(np.random.default_rng(1), sizes=(30, 9, 4), levels=3)
    path = model.save(tmp_path / "m.npz")
    loaded = load_model(path)
    assert loaded.sha256() == model.sha256()
    assert loaded.quantizer == model.quantizer
    assert loaded.meta == {"name": "test"}
    for a, b in zip(model.layers, loaded.layers, strict=True):
        np.testing.assert_array_equal(a.weights, b.weights)
        if a.thresholds is None:
            assert b.thresholds is None
        else:
            np.testing.assert_array_equal(a.thresholds, b.thresholds)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5), st.integers(1, 70), st.integers(2, 12), st.integers(0, 2**32 - 1))
def test_round_trip_property(hidden_layers, width, classes, seed):
    rng = np.random.default_rng(seed)
    sizes = (width,) + tuple(int(v) for v in rng.integers(1, 40, hidden_layers - 1)) + (classes,)
    model = small_model(rng, sizes=sizes)
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **model.arrays())
    loaded_arrays = dict(np.load(io.BytesIO(buffer.getvalue()), allow_pickle=False))
    assert set(loaded_arrays) == set(model.arrays())
    assert model.topology == "-".join(str(s) for s in sizes)


def test_quantizer_fixed_threshold_is_sign_with_zero_positive():
    q = InputQuantizer.fixed(90, pixels=4)
    bits = q.quantize(np.array([[89, 90, 91, 0]], dtype=np.uint8))
    assert bits.tolist() == [[0, 1, 1, 0]]  # sign(90 - 90) = +1
    assert InputQuantizer.fixed(127.5).thresholds == (128,)


def test_quantizer_thermometer_bit_order():
    q = InputQuantizer((10, 20), pixels=2)
    assert q.quantize(np.array([[15, 25]], dtype=np.uint8)).tolist() == [[1, 0, 1, 1]]


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [((), "at least one threshold"), ((5, 5), "strictly increasing"),
     ((300,), "integers in [0, 256]")],
)
def test_quantizer_rejects_bad_thresholds(thresholds, message):
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("]", r"\]")):
        InputQuantizer(thresholds)


def test_layers_must_chain():
    rng = np.random.default_rng(0)
    with pytest.raises(ModelError, match="layer 1 expects 7 input bits but receives 8"):
        Model(InputQuantizer((128,), 16),
              (DenseLayer(rng.integers(0, 2, (8, 16)), np.zeros(8, int)),
               DenseLayer(rng.integers(0, 2, (3, 7)))))


def test_threshold_range_is_checked():
    with pytest.raises(ModelError, match=r"\[0, MW \+ 1\] = \[0, 5\]"):
        DenseLayer(np.ones((2, 4), int), np.array([0, 6]))


def test_last_layer_must_be_output():
    with pytest.raises(ModelError, match="must be an output layer"):
        Model(InputQuantizer((128,), 4), (DenseLayer(np.ones((3, 4), int), np.zeros(3, int)),))


def rewrite(path, **changes):
    arrays = dict(np.load(path, allow_pickle=False))
    arrays.update(changes)
    for key, value in list(arrays.items()):
        if value is None:
            del arrays[key]
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": np.array(2)}, "unsupported model file version 2"),
        ({"format": np.array("other")}, "format is"),
        ({"layer0.thresholds": None}, "missing array 'layer0.thresholds'"),
        ({"layer0.thresholds": np.zeros(8, np.int64)}, "has dtype int64, expected int32"),
        ({"layer0.thresholds": np.zeros(7, np.int32)}, r"has shape \(7,\), expected \(8,\)"),
        ({"layer0.thresholds": np.full(8, 99, np.int32)}, r"thresholds must lie in"),
        ({"header": np.array("{not json")}, "header is not valid JSON"),
        ({"input_thresholds": np.array([200, 100], np.int16)}, "expected"),
    ],
)
def test_loader_names_the_problem(tmp_path, changes, message):
    path = small_model(np.random.default_rng(2)).save(tmp_path / "m.npz")
    rewrite(path, **changes)
    with pytest.raises(ModelError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_loader_rejects_weight_bits_past_mw(tmp_path):
    model = small_model(np.random.default_rng(3), sizes=(12, 5, 2))
    path = model.save(tmp_path / "m.npz")
    packed = np.load(path)["layer0.weights"].copy()
    packed[0, 1] |= 0x80
    rewrite(path, **{"layer0.weights": packed})
    with pytest.raises(ModelError, match="weight bits set past MW=12"):
        load_model(path)


def test_loader_rejects_pickled_objects(tmp_path):
    path = small_model(np.random.default_rng(4)).save(tmp_path / "m.npz")
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["header"] = np.array([{"evil": 1}], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(ModelError, match="array 'header' holds Python objects") as info:
        load_model(path)
    assert "allow_pickle" not in str(info.value) and "unsafe" not in str(info.value)


def _zip_member(path, name, data, compress=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "a", compression=compress) as archive:
        archive.writestr(name, data)


def test_npy_file_named_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "m.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(ModelError, match=r"zip \(\.npz\) archive, this is a single \.npy array"):
        load_model(path)


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e400"])
@pytest.mark.parametrize("field", ["pixels", "in_features", "kernel"])
def test_non_finite_header_numbers_are_refused(tmp_path, value, field):
    from bnnhw.model import ConvLayer, PixelInput

    rng = np.random.default_rng(9)
    model = Model(PixelInput(16), (ConvLayer(rng.integers(0, 2, (2, 4)), np.zeros(2, np.int32),
                                             2, (4, 4, 1), pixels8=True),
                                   DenseLayer(rng.integers(0, 2, (3, 18)))))
    path = model.save(tmp_path / "m.npz")
    text = str(np.load(path)["header"])
    header = json.loads(text)
    target = header["input"] if field == "pixels" else header["layers"][0]
    target[field] = 12345
    rewrite(path, header=np.array(json.dumps(header).replace("12345", value)))
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_unknown_and_oversized_members_are_refused_before_decompression(tmp_path):
    model = small_model(np.random.default_rng(10))
    path = model.save(tmp_path / "m.npz")
    # A 64 MiB member of zeros compresses to about 64 KiB: refused by name, never inflated.
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(path.read_bytes())
    _zip_member(bomb, "extra.npy", b"\0" * (64 << 20))
    with pytest.raises(ModelError, match="unexpected member 'extra.npy'"):
        load_model(bomb)
    # A known name whose declared size exceeds what the header allows.
    big = tmp_path / "big.npz"
    arrays = dict(np.load(path, allow_pickle=False))
    del arrays["layer0.thresholds"]
    np.savez(big, **arrays)
    _zip_member(big, "layer0.thresholds.npy", b"\0" * (16 << 20))
    with pytest.raises(ModelError, match=r"member 'layer0.thresholds' declares 16777216 bytes"):
        load_model(big)


def test_npy_header_declaring_a_huge_shape_is_refused_before_allocation(tmp_path):
    path = small_model(np.random.default_rng(11)).save(tmp_path / "m.npz")
    arrays = dict(np.load(path, allow_pickle=False))
    del arrays["layer0.thresholds"]
    np.savez(path, **arrays)
    # A 100 GB int32 array declared in the .npy header, with no data behind it.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<i4", "fortran_order": False, "shape": (25_000_000_000,)})
    _zip_member(path, "layer0.thresholds.npy", header.getvalue())
    with pytest.raises(ModelError, match=r"has shape \(25000000000,\), expected \(8,\)"):
        load_model(path)


def test_corrupt_member_is_a_clear_error(tmp_path):
    path = small_model(np.random.default_rng(12)).save(tmp_path / "m.npz")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("layer0.weights.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="member 'layer0.weights' is corrupt"):
        load_model(path)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = small_model(np.random.default_rng(5)).save(tmp_path / "m.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a readable model archive"):
        load_model(path)
    with pytest.raises(ModelError, match="no such model file"):
        load_model(tmp_path / "missing.npz")


def test_header_layer_kind_is_checked(tmp_path):
    path = small_model(np.random.default_rng(6)).save(tmp_path / "m.npz")
    header = json.loads(str(np.load(path)["header"]))
    header["layers"][0]["kind"] = "conv9"
    rewrite(path, header=np.array(json.dumps(header)))
    with pytest.raises(ModelError, match="layer 0 has unknown kind 'conv9'"):
        load_model(path)


def test_save_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    model = small_model(np.random.default_rng(7))
    target = tmp_path / "m.npz"
    model.save(target)
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("bnnhw.model.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        small_model(np.random.default_rng(8)).save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    assert zipfile.is_zipfile(target)


def test_hash_recipe_of_the_format_document_recomputes_sha256():
    # docs/model-format.md, "Identity": name, dtype + shape, C-order bytes, arrays by name.
    path = Path(__file__).resolve().parent.parent / "docs" / "models" / "cnv-micro_mnist.npz"
    digest = hashlib.sha256()
    with np.load(path, allow_pickle=False) as archive:
        for name in sorted(archive.files):
            array = archive[name]
            digest.update(name.encode())
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    assert digest.hexdigest() == load_model(path).sha256()
