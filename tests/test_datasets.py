"""Dataset loader: checksums, IDX parsing, local folders and clear errors."""

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bnnhw import datasets
from bnnhw.datasets import DatasetError

DATA = os.environ.get("BNNHW_DATA")


@pytest.mark.needs_data
@pytest.mark.parametrize("name", datasets.DATASETS)
def test_real_files_load(name):
    train = datasets.load(name, "train")
    test = datasets.load(name, "test")
    assert train.images.shape == (60000, 784) and test.images.shape == (10000, 784)
    assert train.images.dtype == np.uint8 and test.labels.max() == 9
    counts = np.bincount(test.labels, minlength=10)
    if name == "mnist":
        assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    else:
        assert counts.tolist() == [1000] * 10


@pytest.mark.needs_data
def test_corrupt_file_names_file_and_checksum(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in datasets.FILES["mnist"]:
        shutil.copy(Path(DATA) / "mnist" / name, folder / name)
    victim = folder / "t10k-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:1000])
    expected = datasets.FILES["mnist"]["t10k-images-idx3-ubyte.gz"]
    with pytest.raises(DatasetError, match=f"{victim}.*corrupt or truncated.*expected {expected}"):
        datasets.load("mnist", "test", data_dir=tmp_path)


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="mnist/t10k-images-idx3-ubyte.gz not found in"):
        datasets.load("mnist", "test", data_dir=tmp_path)


def test_unknown_dataset_and_split():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        datasets.load("cifar")
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        datasets.load("mnist", "dev")


def write_idx(path: Path, magic: int, shape: tuple[int, ...], payload: bytes) -> None:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in shape)
    path.write_bytes(gzip.compress(header + payload))


def test_parse_idx(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, datasets.IMAGE_MAGIC, (2, 2, 3), bytes(range(12)))
    assert datasets.parse_idx(path, datasets.IMAGE_MAGIC).tolist() == [
        [[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]
    with pytest.raises(DatasetError, match="IDX magic number is not 2049"):
        datasets.parse_idx(path, datasets.LABEL_MAGIC)
    write_idx(path, datasets.IMAGE_MAGIC, (2, 2, 3), bytes(range(11)))
    with pytest.raises(DatasetError, match="do not match the IDX shape"):
        datasets.parse_idx(path, datasets.IMAGE_MAGIC)
    path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a valid gzip file"):
        datasets.parse_idx(path, datasets.IMAGE_MAGIC)


def test_download_failure_is_clear_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("BNNHW_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def refuse(url, timeout):
        raise OSError(f"no route to {url}")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", refuse)
    with pytest.raises(DatasetError, match="cannot download mnist/t10k-images-idx3-ubyte.gz"):
        datasets.load("mnist", "test")
    assert not list(tmp_path.rglob("*.gz"))


def test_download_with_wrong_checksum_is_rejected(tmp_path, monkeypatch):
    monkeypatch.delenv("BNNHW_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"tampered"

    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(DatasetError, match="expected 8d422c7b"):
        datasets.locate("mnist", "t10k-images-idx3-ubyte.gz")
    assert not list(tmp_path.rglob("*.gz"))
