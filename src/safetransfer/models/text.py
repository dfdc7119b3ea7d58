"""Text bodies: a BERT encoder with attention-masked mean pooling, and its tokenizers.

all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; sentence-transformers) was trained with mean
pooling of the last hidden states over real tokens, so the features are that mean, not the
``[CLS]`` pooler. ``transformers`` is imported lazily: importing safetransfer stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from safetransfer.errors import CheckpointError, ConfigError
from safetransfer.safe_paths import MAX_CONFIG_BYTES, read_text_bounded, regular_file
from safetransfer.validation import bounded_int

TINY_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-:;()&/")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class BertBody(nn.Module):
    """A ``transformers`` BertModel (no pooler) whose features are the masked mean of the last layer."""

    def __init__(self, bert_config: Mapping[str, Any]) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        checked = check_bert_config(bert_config, "BERT config")
        cfg = BertConfig(**{k: v for k, v in checked.items() if not k.startswith("_")})
        self.bert = BertModel(cfg, add_pooling_layer=False)

    @property
    def transformer(self) -> nn.Module:
        """The ``transformers`` model (what ``get_input_embeddings`` is asked of)."""
        return self.bert

    @property
    def hidden_size(self) -> int:
        return int(self.bert.config.hidden_size)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return masked_mean(self.bert(**inputs).last_hidden_state, inputs["attention_mask"])


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, H]``: the mean of ``hidden [B, T, H]`` over the tokens ``mask [B, T]`` marks real."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def encoder_block_names(body: nn.Module, prefix: str = "") -> list[str]:
    """Qualified names (``prefix`` + the name inside ``body``) of a Hugging Face encoder's
    transformer blocks, in order: the items of its ``...layer`` ``ModuleList``
    (``bert.encoder.layer.i``, ``encoder.transformer.layer.i`` in DistilBERT)."""
    for name, module in body.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layer":
            return [f"{prefix}{name}.{i}" for i in range(len(module))]
    raise ConfigError("this text body has no transformer blocks (a 'layer' ModuleList) to hook.")


# The architecture fields of a BERT config this project reads (every other key of a Hugging Face
# config.json is dropped: ``num_labels`` or ``id2label`` would size tables of their own).
BERT_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "layer_norm_eps", "pad_token_id",
)
# Bounds of the size fields, checked before a BertModel is allocated. Real BERTs lie well inside:
# all-MiniLM-L6-v2 (30,522 x 384, 6 layers, 1,536, 512 positions), BERT-large (1,024 hidden,
# 24 layers, 4,096), multilingual vocabularies (up to 250,002).
MAX_VOCABULARY = 500_000  # tokens of a vocabulary (Gemma's 256,000 fit)
BERT_BOUNDS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, MAX_VOCABULARY), "hidden_size": (1, 8_192), "num_hidden_layers": (1, 128),
    "num_attention_heads": (1, 256), "intermediate_size": (1, 65_536), "max_position_embeddings": (1, 65_536),
    "type_vocab_size": (1, 1_024),
}
BERT_DEFAULTS = {"vocab_size": 30_522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3_072, "max_position_embeddings": 512, "type_vocab_size": 2}  # BertConfig's
# The largest BERT built: 1e9 parameters (4 GB of float32); BERT-large has 0.34e9.
MAX_BERT_PARAMETERS = 1_000_000_000


def bert_parameters(cfg: Mapping[str, int]) -> int:
    """The parameter count of a BertModel without pooler (embeddings, layers, their norms and biases)."""
    h, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    embeddings = (cfg["vocab_size"] + cfg["max_position_embeddings"] + cfg["type_vocab_size"]) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h * i + i + h + 4 * h
    return embeddings + layers * layer


def check_bert_config(cfg: Any, source: str) -> dict[str, Any]:
    """``cfg`` (the architecture fields of a BERT) once every field is known and of a sane size;
    raises :class:`ConfigError` naming ``source`` and the field otherwise.

    Sizes are whole numbers within :data:`BERT_BOUNDS` (``1e8`` or ``true`` are refused), the
    hidden size a multiple of the head count, rates in [0, 1), and the whole model at most
    :data:`MAX_BERT_PARAMETERS`: all before anything is allocated. Keys starting with ``_`` are
    passed through (ignored by :class:`BertBody`).
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{source}: the BERT config must be a JSON object, got {type(cfg).__name__}.")
    unknown = sorted(str(k) for k in cfg if k not in BERT_FIELDS and not str(k).startswith("_"))
    if unknown:
        raise ConfigError(f"{source}: unknown BERT config field(s) {unknown[:5]}; known: {', '.join(BERT_FIELDS)}.")
    for key, (low, high) in BERT_BOUNDS.items():
        if key in cfg:
            bounded_int(cfg[key], key, low, high, source)
    sizes = {**BERT_DEFAULTS, **{k: cfg[k] for k in BERT_BOUNDS if k in cfg}}
    if sizes["hidden_size"] % sizes["num_attention_heads"]:
        raise ConfigError(f"{source}: 'hidden_size' {sizes['hidden_size']} is not a multiple of "
                          f"'num_attention_heads' {sizes['num_attention_heads']}.")
    if "pad_token_id" in cfg and cfg["pad_token_id"] is not None:
        bounded_int(cfg["pad_token_id"], "pad_token_id", 0, sizes["vocab_size"] - 1, source)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if key in cfg and not (is_number(cfg[key]) and 0.0 <= cfg[key] < 1.0):
            raise ConfigError(f"{source}: '{key}' must be a number in [0, 1), got {cfg[key]!r}.")
    if "layer_norm_eps" in cfg and not (is_number(cfg["layer_norm_eps"]) and 0.0 < cfg["layer_norm_eps"] < 1.0):
        raise ConfigError(f"{source}: 'layer_norm_eps' must be a small positive number, got {cfg['layer_norm_eps']!r}.")
    if "hidden_act" in cfg and not (isinstance(cfg["hidden_act"], str) and len(cfg["hidden_act"]) <= 40):
        raise ConfigError(f"{source}: 'hidden_act' must be an activation's name, such as \"gelu\".")
    total = bert_parameters(sizes)
    if total > MAX_BERT_PARAMETERS:
        raise ConfigError(f"{source}: this BERT would have {total:,} parameters, more than the "
                          f"{MAX_BERT_PARAMETERS:,} this tool builds; the config is corrupt or not meant for it.")
    return dict(cfg)


def is_number(value: Any) -> bool:
    """A real number: int or float, not a bool, not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def bert_config_dict(path: Path) -> dict[str, Any]:
    """The architecture fields of a Hugging Face ``config.json`` (a regular file of at most
    :data:`~safetransfer.safe_paths.MAX_CONFIG_BYTES`), checked by :func:`check_bert_config`;
    an unreadable or malformed file raises :class:`CheckpointError`, a bad field :class:`ConfigError`."""
    import json

    text = read_text_bounded(path, "BERT config.json", MAX_CONFIG_BYTES, CheckpointError)
    try:
        cfg = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({type(err).__name__}: {err}).") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} is not a BERT config.json (a JSON object).")
    return check_bert_config({k: cfg[k] for k in BERT_FIELDS if k in cfg}, str(path))


# ---- what a model's window reads of a text (where an inserted word still acts) ----
def words_read(tokenizer, texts: Sequence[str], max_length: int) -> np.ndarray:
    """For each text, how many of its leading (whitespace) words have at least one token within a
    model's window of ``max_length`` tokens (special tokens included): int ``[N]``."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer([t.split() for t in texts], is_split_into_words=True, truncation=True, max_length=max_length)
    return np.array([max((w for w in encoded.word_ids(i) if w is not None), default=-1) + 1
                     for i in range(len(texts))], dtype=np.int64)


def visible_words(tokenizer, texts: Sequence[str], max_length: int, room: int = 2) -> list[int]:
    """For each text, how many of its leading words a trigger may be inserted among and still be
    read through a model's window of ``max_length`` tokens: all of a text the window holds, else
    the words it reads less ``room`` (for the trigger's own tokens and a word cut in two; a word
    swap, which adds no word, keeps ``room=1``). MiniLM
    reads 64 tokens; most Amazon reviews are longer, so a trigger inserted anywhere is often cut off."""
    read = words_read(tokenizer, texts, max_length)
    lengths = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
    return np.where(read < lengths, np.maximum(read - room, 0), lengths).tolist()


def load_tokenizer(folder: Path) -> Any:
    """A fast tokenizer from a local folder (never the hub); a FIFO, device or socket among the
    folder's files (which would hang the reading) raises :class:`CheckpointError`."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if folder.is_dir():
        for entry in folder.iterdir():
            if not entry.is_dir():
                regular_file(entry, "tokenizer file", error=CheckpointError)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def char_tokenizer() -> Any:
    """A self-contained character-level WordPiece tokenizer for the tiny test models."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    vocab_list = SPECIAL_TOKENS + TINY_CHARS + [f"##{c}" for c in TINY_CHARS]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=200))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )


def tiny_bert_config(vocab_size: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 256, "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "pad_token_id": 0,
    }
