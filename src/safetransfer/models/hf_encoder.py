"""Hugging Face encoders other than BERT as text bodies: RoBERTa, XLM-RoBERTa, DistilBERT.

A user's teacher is often one of these (a local folder with ``config.json``, ``model.safetensors``
and the tokenizer files). :class:`HFEncoderBody` builds the ``transformers`` base model of the
folder's family from the *checked* architecture fields of its config (every size bounded before
anything is allocated, the same bounds as :func:`~safetransfer.models.text.check_bert_config`;
``trust_remote_code`` is never used: only the families listed in :data:`FAMILIES` are built, by
their class in ``transformers``).

Features: the masked mean of the last hidden states over real tokens (what sentence-transformers
models are trained with), or the first token's state (``pooling="cls"``, what a
sequence-classification head reads in these families) where the folder's
``1_Pooling/config.json`` says ``pooling_mode_cls_token``. A sequence-classification folder
(``RobertaForSequenceClassification``, ...) gives its body; its head is dropped and a new one
made for the user's labels. BERT folders keep their own path (``models.text.BertBody``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from safetransfer.errors import ConfigError
from safetransfer.models.text import (
    BERT_BOUNDS,
    MAX_BERT_PARAMETERS,
    bert_parameters,
    is_number,
    masked_mean,
)
from safetransfer.validation import bounded_int

__all__ = ["EncoderFamily", "FAMILIES", "POOLINGS", "HFEncoderBody", "check_encoder_config", "usable_positions"]

POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class EncoderFamily:
    """How one ``model_type`` of ``transformers`` is built, read and bounded."""

    model_type: str
    config_class: str  # the class in ``transformers`` (never resolved from the user's file)
    model_class: str
    prefix: str  # the body's tensor-name prefix inside a task model's checkpoint ("roberta.")
    sizes: Mapping[str, str]  # the BERT size name -> this family's config field
    rates: tuple[str, ...]  # dropout fields, numbers in [0, 1)
    extra: tuple[str, ...]  # other fields read (activation, flags, token ids)
    pooling_layer: bool  # the base model has a pooler to leave out
    position_offset: int  # positions a text cannot use (RoBERTa counts from padding_idx + 1)


_BERT_SIZES = {k: k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                              "intermediate_size", "max_position_embeddings", "type_vocab_size")}
_ROBERTA_RATES = ("hidden_dropout_prob", "attention_probs_dropout_prob")
_ROBERTA_EXTRA = ("hidden_act", "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id")

FAMILIES: dict[str, EncoderFamily] = {
    f.model_type: f
    for f in (
        EncoderFamily("roberta", "RobertaConfig", "RobertaModel", "roberta.", _BERT_SIZES, _ROBERTA_RATES,
                      _ROBERTA_EXTRA, pooling_layer=True, position_offset=2),
        EncoderFamily("xlm-roberta", "XLMRobertaConfig", "XLMRobertaModel", "roberta.", _BERT_SIZES, _ROBERTA_RATES,
                      _ROBERTA_EXTRA, pooling_layer=True, position_offset=2),
        EncoderFamily("distilbert", "DistilBertConfig", "DistilBertModel", "distilbert.",
                      {"vocab_size": "vocab_size", "hidden_size": "dim", "num_hidden_layers": "n_layers",
                       "num_attention_heads": "n_heads", "intermediate_size": "hidden_dim",
                       "max_position_embeddings": "max_position_embeddings"},
                      ("dropout", "attention_dropout", "qa_dropout", "seq_classif_dropout"),
                      ("activation", "sinusoidal_pos_embds", "pad_token_id"), pooling_layer=False, position_offset=0),
    )
}
"""The non-BERT families built; a folder of any other ``model_type`` is refused with this list."""


def family_fields(family: EncoderFamily) -> tuple[str, ...]:
    return ("model_type", *family.sizes.values(), *family.rates, *family.extra)


def _family_of(cfg: Any, source: str) -> EncoderFamily:
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{source}: the encoder config must be a JSON object, got {type(cfg).__name__}.")
    model_type = cfg.get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(f"{source}: model_type {model_type!r:.40} is not an encoder this tool builds; "
                          f"known: bert, {', '.join(FAMILIES)}.")
    return FAMILIES[model_type]


def _defaults(family: EncoderFamily) -> dict[str, Any]:
    import transformers

    return getattr(transformers, family.config_class)().to_dict()


def check_encoder_config(cfg: Any, source: str) -> dict[str, Any]:
    """``cfg`` (``model_type`` and the family's architecture fields) once every field is known and
    of a sane size; raises :class:`ConfigError` naming ``source`` and the field otherwise.

    Sizes are whole numbers within the BERT bounds, the hidden size a multiple of the head count,
    token ids inside the vocabulary, rates in [0, 1), and the model at most
    :data:`~safetransfer.models.text.MAX_BERT_PARAMETERS` parameters: all before anything is allocated.
    """
    family = _family_of(cfg, source)
    known = family_fields(family)
    unknown = sorted(str(k) for k in cfg if k not in known)
    if unknown:
        raise ConfigError(f"{source}: unknown {family.model_type} config field(s) {unknown[:5]}; known: {', '.join(known)}.")
    defaults = _defaults(family)
    sizes: dict[str, int] = {}
    for bert_name, field_name in family.sizes.items():
        low, high = BERT_BOUNDS[bert_name]
        value = cfg.get(field_name, defaults.get(field_name))
        sizes[bert_name] = bounded_int(value, field_name, low, high, source)
    sizes.setdefault("type_vocab_size", 0)
    if sizes["hidden_size"] % sizes["num_attention_heads"]:
        raise ConfigError(f"{source}: the hidden size {sizes['hidden_size']} is not a multiple of the head count "
                          f"{sizes['num_attention_heads']}.")
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if cfg.get(key) is not None:
            bounded_int(cfg[key], key, 0, sizes["vocab_size"] - 1, source)
    for key in family.rates:
        if key in cfg and not (is_number(cfg[key]) and 0.0 <= cfg[key] < 1.0):
            raise ConfigError(f"{source}: '{key}' must be a number in [0, 1), got {cfg[key]!r:.40}.")
    if "layer_norm_eps" in cfg and not (is_number(cfg["layer_norm_eps"]) and 0.0 < cfg["layer_norm_eps"] < 1.0):
        raise ConfigError(f"{source}: 'layer_norm_eps' must be a small positive number, got {cfg['layer_norm_eps']!r:.40}.")
    for key in ("hidden_act", "activation"):
        if key in cfg and not (isinstance(cfg[key], str) and len(cfg[key]) <= 40):
            raise ConfigError(f"{source}: '{key}' must be an activation's name, such as \"gelu\".")
    if "sinusoidal_pos_embds" in cfg and not isinstance(cfg["sinusoidal_pos_embds"], bool):
        raise ConfigError(f"{source}: 'sinusoidal_pos_embds' must be true or false.")
    if usable_positions(cfg) < 1:
        raise ConfigError(f"{source}: the model has no usable positions.")
    total = bert_parameters(sizes)
    if total > MAX_BERT_PARAMETERS:
        raise ConfigError(f"{source}: this encoder would have {total:,} parameters, more than the "
                          f"{MAX_BERT_PARAMETERS:,} this tool builds; the config is corrupt or not meant for it.")
    return dict(cfg)


def usable_positions(cfg: Mapping[str, Any]) -> int:
    """Tokens a text may have in this encoder (its position table less the family's offset)."""
    family = FAMILIES[cfg["model_type"]]
    field_name = family.sizes["max_position_embeddings"]
    positions = cfg.get(field_name, _defaults(family).get(field_name, 512))
    return int(positions) - family.position_offset


class HFEncoderBody(nn.Module):
    """A ``transformers`` encoder of a :data:`FAMILIES` family; features ``[B, hidden]`` pooled
    over real tokens (``"mean"``) or the first token (``"cls"``)."""

    def __init__(self, encoder_config: Mapping[str, Any], pooling: str = "mean") -> None:
        super().__init__()
        import transformers

        checked = check_encoder_config(encoder_config, "encoder config")
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r:.40}.")
        family = FAMILIES[checked["model_type"]]
        config = getattr(transformers, family.config_class)(
            **{k: v for k, v in checked.items() if k != "model_type"})
        model_class = getattr(transformers, family.model_class)
        self.encoder = model_class(config, add_pooling_layer=False) if family.pooling_layer else model_class(config)
        self.model_type = family.model_type
        self.pooling = pooling
        self._accepted = frozenset(inspect.signature(self.encoder.forward).parameters)

    @property
    def transformer(self) -> nn.Module:
        """The ``transformers`` model (what ``get_input_embeddings`` is asked of)."""
        return self.encoder

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**{k: v for k, v in inputs.items() if k in self._accepted}).last_hidden_state
        return hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, inputs["attention_mask"])
