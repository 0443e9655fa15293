"""MNIST and Fashion-MNIST from their original gzipped IDX files, checked by sha256.

Where the files are looked for, in order:

1. ``data_dir`` (the ``--data-dir`` flag), then the ``BNNHW_DATA`` environment variable: a folder
   holding either the four files or a ``<dataset>/`` subfolder with them (``mnist``,
   ``fashion-mnist``). Nothing is downloaded into such a folder.
2. The cache, ``$XDG_CACHE_HOME/bnnhw/<dataset>`` (default ``~/.cache/bnnhw``); missing files are
   downloaded there from the canonical mirrors, checked, then renamed into place.

Every file is checked against its sha256 before it is parsed; a corrupt or truncated file gives a
:class:`DatasetError` naming the file and the expected checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .model import write_atomic


class DatasetError(RuntimeError):
    """A dataset file that is missing, corrupt or malformed."""


FILES = {
    "mnist": {
        "train-images-idx3-ubyte.gz":
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz":
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz":
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz":
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz":
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz":
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz":
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz":
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}

DATASETS = tuple(FILES)
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


@dataclass(frozen=True)
class Split:
    """Images ``(N, 784)`` uint8 (row-major 28x28) and labels ``(N,)`` uint8 in 0..9."""

    images: np.ndarray
    labels: np.ndarray


def check_name(dataset: str) -> str:
    """Return ``dataset`` if known, else raise naming the value and the choices."""
    if dataset not in FILES:
        raise DatasetError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return dataset


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bnnhw`` (``~/.cache/bnnhw`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bnnhw"


def _download(dataset: str, name: str, target: Path) -> None:
    errors = []
    for mirror in MIRRORS[dataset]:
        try:
            with urllib.request.urlopen(mirror + name, timeout=30) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as exc:
            errors.append(f"{mirror}: {exc}")
            continue
        actual = hashlib.sha256(data).hexdigest()
        if actual != FILES[dataset][name]:
            errors.append(f"{mirror}: sha256 {actual}, expected {FILES[dataset][name]}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)
        return
    raise DatasetError(
        f"cannot download {dataset}/{name}; set BNNHW_DATA or --data-dir to a folder holding "
        f"it. Tried: " + "; ".join(errors)
    )


def locate(dataset: str, name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of a verified dataset file, downloading into the cache if it is nowhere local."""
    check_name(dataset)
    folder = data_dir or os.environ.get("BNNHW_DATA")
    if folder:
        folder = Path(folder)
        for candidate in (folder / dataset / name, folder / name):
            if candidate.is_file():
                return verify(candidate, FILES[dataset][name])
        raise DatasetError(
            f"{dataset}/{name} not found in {folder} (looked in {folder / dataset} and {folder})"
        )
    target = cache_dir() / dataset / name
    if not target.is_file():
        _download(dataset, name, target)
    return verify(target, FILES[dataset][name])


def verify(path: Path, expected: str) -> Path:
    """Check a file's sha256; raise naming the file and the expected checksum."""
    actual = sha256_of(path)
    if actual != expected:
        raise DatasetError(
            f"{path} is corrupt or truncated: sha256 {actual}, expected {expected}"
        )
    return path


def parse_idx(path: Path, magic: int) -> np.ndarray:
    """Decode a gzipped IDX file (big-endian header, uint8 payload)."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a valid gzip file ({exc})") from None
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DatasetError(f"{path}: IDX magic number is not {magic}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    if len(raw) != header + int(np.prod(shape)):
        raise DatasetError(f"{path}: {len(raw)} bytes do not match the IDX shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load(dataset: str, split: str = "test",
         data_dir: str | os.PathLike | None = None) -> Split:
    """Load ``split`` (``"train"`` or ``"test"``) of ``dataset`` as flat uint8 images and labels."""
    check_name(dataset)
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DatasetError(f"unknown split {split!r}; choose 'train' or 'test'")
    images = parse_idx(locate(dataset, f"{prefix}-images-idx3-ubyte.gz", data_dir), IMAGE_MAGIC)
    labels = parse_idx(locate(dataset, f"{prefix}-labels-idx1-ubyte.gz", data_dir), LABEL_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{dataset} {split}: {images.shape[0]} images but {labels.shape[0]} labels"
        )
    return Split(images.reshape(images.shape[0], -1), labels)


MAX_USER_IMAGES = 100_000
"""Most images :func:`load_images` reads from one file or folder."""


def load_images(path: str | os.PathLike, pixels: int) -> np.ndarray:
    """A user's own images as uint8 ``(N, pixels)``, flattened row-major like the data sets.

    Parameters
    ----------
    path : path
        An ``.npy`` file of uint8 images ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, pixels)``
        (read with ``allow_pickle=False``), or a folder of 8-bit grayscale ``.png`` files
        (taken in file-name order; RGB files must have equal channels).
    pixels : int
        Pixels per image the model takes (``H * W``).

    Raises
    ------
    DatasetError
        Naming the file and the problem: missing, not an array of uint8, a size other than
        ``pixels`` per image, no images, more than :data:`MAX_USER_IMAGES`, a colour image.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.png"))
        if not files:
            raise DatasetError(f"{path}: no .png files in this folder")
        if len(files) > MAX_USER_IMAGES:
            raise DatasetError(f"{path}: {len(files)} images, more than {MAX_USER_IMAGES}")
        return np.stack([_png_pixels(f, pixels) for f in files])
    if not path.is_file():
        raise DatasetError(f"{path}: no such image file or folder")
    try:
        images = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{path}: not an .npy array of images ({str(exc).split('. ')[0]})"
                           ) from None
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = getattr(images, "dtype", type(images).__name__)
        raise DatasetError(f"{path}: images must be uint8 (0..255), got {kind}")
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    if images.ndim not in (2, 3) or images.shape[0] < 1 \
            or int(np.prod(images.shape[1:])) != pixels:
        raise DatasetError(f"{path}: images of shape {images.shape} do not give N >= 1 images "
                           f"of {pixels} pixels (need (N, H, W), (N, H, W, 1) or (N, {pixels}))")
    if images.shape[0] > MAX_USER_IMAGES:
        raise DatasetError(f"{path}: {images.shape[0]} images, more than {MAX_USER_IMAGES}")
    return np.ascontiguousarray(images.reshape(images.shape[0], pixels))


def _png_pixels(path: Path, pixels: int) -> np.ndarray:
    # matplotlib is a dependency already; its PNG reader gives floats k / 255 for 8-bit files.
    from matplotlib import image

    try:
        data = image.imread(path)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: not a readable PNG ({exc})") from None
    if data.dtype != np.uint8:
        data = np.rint(np.asarray(data, dtype=np.float64) * 255).astype(np.uint8)
    if data.ndim == 3:
        colour = data[..., :3]
        if (colour != colour[..., :1]).any():
            raise DatasetError(f"{path}: a colour image; give 8-bit grayscale")
        data = colour[..., 0]
    if data.size != pixels:
        raise DatasetError(f"{path}: {data.shape[1]}x{data.shape[0]} = {data.size} pixels, the "
                           f"model takes {pixels}")
    return data.reshape(pixels)
