"""Text bodies: a BERT encoder with attention-masked mean pooling, and its tokenizers.

all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; sentence-transformers) was trained with mean
pooling of the last hidden states over real tokens, so the features are that mean, not the
``[CLS]`` pooler. ``transformers`` is imported lazily: importing safetransfer stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

TINY_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-:;()&/")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class BertBody(nn.Module):
    """A ``transformers`` BertModel (no pooler) whose features are the masked mean of the last layer."""

    def __init__(self, bert_config: Mapping[str, Any]) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(**{k: v for k, v in bert_config.items() if not k.startswith("_")})
        self.bert = BertModel(cfg, add_pooling_layer=False)

    @property
    def hidden_size(self) -> int:
        return int(self.bert.config.hidden_size)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        mask = inputs["attention_mask"]
        hidden = self.bert(**inputs).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def bert_config_dict(path: Path) -> dict[str, Any]:
    """The architecture fields of a Hugging Face ``config.json``."""
    import json

    cfg = json.loads(Path(path).read_text())
    keep = (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
        "type_vocab_size", "layer_norm_eps", "pad_token_id",
    )
    return {k: cfg[k] for k in keep if k in cfg}


def load_tokenizer(folder: Path) -> Any:
    """A fast tokenizer from a local folder (never the hub)."""
    from transformers import AutoTokenizer

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
