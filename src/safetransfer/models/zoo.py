"""The model zoo: architectures by name, each with the defaults it trains well with.

``create_model(name, num_classes, ...)`` builds a :class:`TransferModel`; ``pretrained=True``
loads the real weights from the offline asset (ImageNet EfficientNet-Lite0, all-MiniLM-L6-v2);
``pretrained=False`` gives the same architecture with seeded random weights. The zoo is a
plain dict of builders: no names are evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from safetransfer import assets
from safetransfer.errors import (
    CheckpointError,
    ConfigError,
    SafetransferError,
    unknown_name,
)
from safetransfer.models.hf_encoder import (
    FAMILIES,
    POOLINGS,
    HFEncoderBody,
    check_encoder_config,
    family_fields,
    usable_positions,
)
from safetransfer.models.serialization import (
    read_state_dict,
    safe_torch_load,
    safetensors_shapes,
    shape_mismatches,
)
from safetransfer.models.text import (
    BertBody,
    bert_config_dict,
    char_tokenizer,
    check_bert_config,
    is_number,
    load_tokenizer,
    tiny_bert_config,
)
from safetransfer.models.vision import (
    EFFICIENTNET_FEATURES,
    EFFICIENTNET_MEAN,
    EFFICIENTNET_STD,
    EfficientNetBody,
    SmallCNN,
)
from safetransfer.models.wrapper import Modality, ModelConfig, TransferModel
from safetransfer.safe_paths import MAX_CONFIG_BYTES, read_text_bounded, regular_file
from safetransfer.validation import MAX_CLASSES, bounded_int


@dataclass(frozen=True)
class ArchSpec:
    """One architecture of the zoo."""

    name: str
    modality: Modality
    description: str
    make_config: Callable[..., ModelConfig]  # (num_classes, image_size, in_channels, max_length) -> config
    build: Callable[[ModelConfig, bool, Any], TransferModel]  # (config, pretrained, tokenizer) -> model
    asset: str | None = None  # the asset holding its pretrained weights
    train_defaults: dict[str, Any] = field(default_factory=dict)
    native_resolution: bool = False  # image models: default input size = the data's own


# ---- EfficientNet-Lite0 ---------------------------------------------------------------------
def _effnet_config(num_classes: int, image_size: int | None, in_channels: int | None, max_length: int | None) -> ModelConfig:
    return ModelConfig(
        arch="efficientnet-lite0", num_classes=num_classes, modality="image", image_size=image_size or 32,
        in_channels=3, mean=[EFFICIENTNET_MEAN], std=[EFFICIENTNET_STD], head_dropout=0.2,
        options={"bn_momentum": 0.1},
    )


def _effnet_build(config: ModelConfig, pretrained: bool, tokenizer: Any = None) -> TransferModel:
    body = EfficientNetBody(config.image_size, bn_momentum=config.options.get("bn_momentum", 0.1))
    if pretrained:
        body.load_imagenet(assets.require("efficientnet-lite0-weights"))
    return TransferModel(body, EFFICIENTNET_FEATURES, config)


# ---- small CNNs -------------------------------------------------------------------------------
def _cnn_config(arch: str, widths: tuple[int, int, int], hidden: int, default_size: int) -> Callable[..., ModelConfig]:
    def make(num_classes: int, image_size: int | None, in_channels: int | None, max_length: int | None) -> ModelConfig:
        return ModelConfig(
            arch=arch, num_classes=num_classes, modality="image", image_size=image_size or default_size,
            in_channels=in_channels or 1, mean=[0.5], std=[0.5],
            options={"widths": list(widths), "hidden": hidden},
        )

    return make


def _cnn_build(config: ModelConfig, pretrained: bool, tokenizer: Any = None) -> TransferModel:
    """Random init always: the small CNNs have no published weights (``pretrained`` is ignored)."""
    widths = tuple(config.options["widths"])
    body = SmallCNN(config.in_channels, widths, config.options["hidden"])  # type: ignore[arg-type]
    return TransferModel(body, config.options["hidden"], config)


# ---- BERT family ------------------------------------------------------------------------------
def _minilm_config(num_classes: int, image_size: int | None, in_channels: int | None, max_length: int | None) -> ModelConfig:
    folder = assets.require("minilm-l6").parent
    return ModelConfig(
        arch="minilm-l6", num_classes=num_classes, modality="text", max_length=max_length or 64,
        head_dropout=0.1, options={"bert": bert_config_dict(folder / "config.json")},
    )


def _minilm_build(config: ModelConfig, pretrained: bool, tokenizer: Any = None) -> TransferModel:
    body = BertBody(config.options["bert"])
    folder = Path(config.options["source"]) if config.options.get("source") else assets.require("minilm-l6").parent
    if tokenizer is None:
        tokenizer = load_tokenizer(folder)
    if pretrained:
        _load_hf_bert_weights(body, folder / "model.safetensors")
    return TransferModel(body, body.hidden_size, config, tokenizer=tokenizer)


def _load_hf_bert_weights(body: BertBody, weights: Path) -> None:
    """A Hugging Face BERT checkpoint (``bert.``-prefixed or not; the pooler is dropped) into ``body``."""
    state = read_state_dict(weights)
    state = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith(("pooler.", "bert.pooler."))}
    state.pop("embeddings.position_ids", None)
    result = body.bert.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise CheckpointError(f"{weights}: BERT weights are missing tensors: {result.missing_keys[:5]}")


def hf_model_type(path: Path) -> str | None:
    """The ``model_type`` of a Hugging Face model folder (``config.json`` and ``model.safetensors``,
    both regular files; a FIFO or a device is not opened, an oversized config.json not read), or
    None for anything else."""
    import json

    cfg = Path(path) / "config.json"
    if not (Path(path).is_dir() and cfg.exists() and (Path(path) / "model.safetensors").exists()):
        return None
    try:
        regular_file(Path(path) / "model.safetensors", "weights file")
        model_type = json.loads(read_text_bounded(cfg, "config.json", MAX_CONFIG_BYTES)).get("model_type")
    except (SafetransferError, json.JSONDecodeError, RecursionError, AttributeError):
        return None
    return model_type if isinstance(model_type, str) else None


def is_hf_bert_folder(path: Path) -> bool:
    """A Hugging Face BERT folder: ``config.json`` with ``model_type`` bert, and ``model.safetensors``."""
    return hf_model_type(path) == "bert"


def is_hf_encoder_folder(path: Path) -> bool:
    """A Hugging Face folder of an encoder this tool builds: BERT or a :data:`~safetransfer.models.hf_encoder.FAMILIES` family."""
    model_type = hf_model_type(path)
    return model_type == "bert" or model_type in FAMILIES


def hf_teacher(folder: str | Path, num_classes: int, max_length: int | None = None, seed: int = 0,
               class_names: list[str] | None = None) -> TransferModel:
    """A pretrained encoder from a local Hugging Face folder (BERT, RoBERTa, XLM-RoBERTa, DistilBERT;
    a base model or a sequence-classification one, whose head is dropped) with a new
    ``num_classes`` head; its tokenizer from the folder. Any other ``model_type`` is refused."""
    folder = Path(folder)
    model_type = hf_model_type(folder)
    if model_type == "bert":
        return hf_bert_teacher(folder, num_classes, max_length, seed, class_names)
    if model_type not in FAMILIES:
        raise CheckpointError(f"{folder} is not a Hugging Face encoder folder this tool builds (config.json with "
                              f"model_type one of bert, {', '.join(FAMILIES)}; model.safetensors; tokenizer files)"
                              + (f"; its model_type is {model_type!r:.40}" if model_type else "") + ".")
    encoder = hf_encoder_config_dict(folder / "config.json")
    max_length = max_length or min(64, usable_positions(encoder))
    options = {"encoder": encoder, "pooling": _folder_pooling(folder), "source": str(folder.resolve())}
    config = ModelConfig(arch="hf-encoder", num_classes=num_classes, modality="text", max_length=max_length,
                         head_dropout=0.1, options=options)
    config.class_names = class_names
    check_model_config(config, str(folder / "config.json"))
    _check_hf_encoder_shapes(encoder, folder / "model.safetensors")
    return build_from_config(config, pretrained=True, seed=seed)


def hf_encoder_config_dict(path: Path) -> dict[str, Any]:
    """``model_type`` and the family's architecture fields of a Hugging Face ``config.json`` (other
    keys dropped), checked by :func:`~safetransfer.models.hf_encoder.check_encoder_config`."""
    import json

    text = read_text_bounded(path, "config.json", MAX_CONFIG_BYTES, CheckpointError)
    try:
        cfg = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({type(err).__name__}: {err}).") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") not in FAMILIES:
        raise CheckpointError(f"{path} is not the config.json of an encoder this tool builds.")
    fields = family_fields(FAMILIES[cfg["model_type"]])
    return check_encoder_config({k: cfg[k] for k in fields if k in cfg}, str(path))


def _folder_pooling(folder: Path) -> str:
    """``"cls"`` where a sentence-transformers folder's ``1_Pooling/config.json`` says
    ``pooling_mode_cls_token``, else ``"mean"`` (documented in models.hf_encoder)."""
    import json

    path = folder / "1_Pooling" / "config.json"
    if not path.exists():
        return "mean"
    try:
        cfg = json.loads(read_text_bounded(path, "1_Pooling/config.json", MAX_CONFIG_BYTES, CheckpointError))
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path} is not valid JSON.") from None
    return "cls" if isinstance(cfg, dict) and cfg.get("pooling_mode_cls_token") is True else "mean"


def _encoder_state(state: dict[str, Any], family_prefix: str) -> dict[str, Any]:
    """A checkpoint's body tensors under the base model's names: the task model's prefix removed,
    the pooler dropped (heads of other tasks stay and are ignored)."""
    out = {k.removeprefix(family_prefix): v for k, v in state.items()}
    return {k: v for k, v in out.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}


def _check_hf_encoder_shapes(encoder: dict[str, Any], weights: Path) -> None:
    """As :func:`_check_hf_bert_shapes`, for a :data:`FAMILIES` encoder."""
    with torch.device("meta"):
        skeleton = HFEncoderBody(encoder)
    expected = {k: tuple(v.shape) for k, v in skeleton.encoder.state_dict().items()
                if k != "embeddings.position_ids"}
    found = _encoder_state(safetensors_shapes(weights), FAMILIES[encoder["model_type"]].prefix)
    problems = shape_mismatches(expected, {k: v for k, v in found.items() if k in expected})
    if problems:
        raise CheckpointError(f"{weights.parent / 'config.json'} does not describe the weights in {weights}: "
                              f"{problems}. The folder's config.json and model.safetensors must belong together.")


def _hf_encoder_config(num_classes: int, image_size: int | None, in_channels: int | None,
                       max_length: int | None) -> ModelConfig:
    raise ConfigError("hf-encoder is built from a Hugging Face folder: pass the folder itself as the teacher "
                      "(e.g. --teacher ./my-roberta).")


def _hf_encoder_build(config: ModelConfig, pretrained: bool, tokenizer: Any = None) -> TransferModel:
    options = config.options
    body = HFEncoderBody(options["encoder"], options.get("pooling", "mean"))
    folder = Path(options["source"]) if options.get("source") else None
    if tokenizer is None:
        if folder is None:
            raise ConfigError("an hf-encoder model needs its tokenizer: its folder ('options.source') is not recorded.")
        tokenizer = load_tokenizer(folder)
    if pretrained:
        if folder is None:
            raise ConfigError("pretrained hf-encoder weights need the folder ('options.source').")
        weights = folder / "model.safetensors"
        state = _encoder_state(read_state_dict(weights), FAMILIES[body.model_type].prefix)
        result = body.encoder.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise CheckpointError(f"{weights}: the {body.model_type} weights are missing tensors: {result.missing_keys[:5]}")
    return TransferModel(body, body.hidden_size, config, tokenizer=tokenizer)


def hf_bert_teacher(folder: str | Path, num_classes: int, max_length: int | None = None, seed: int = 0,
                    class_names: list[str] | None = None) -> TransferModel:
    """A pretrained BERT from a Hugging Face folder (e.g. a poisoned MiniLM a weight-poisoning attack
    published) with a new ``num_classes`` head: the same model family as ``minilm-l6``."""
    folder = Path(folder)
    if not is_hf_bert_folder(folder):
        raise CheckpointError(f"{folder} is not a Hugging Face BERT folder (config.json with model_type bert, "
                              f"model.safetensors, tokenizer files).")
    bert = bert_config_dict(folder / "config.json")
    max_length = max_length or min(64, bert.get("max_position_embeddings", 512))
    config = ModelConfig(arch="minilm-l6", num_classes=num_classes, modality="text", max_length=max_length,
                         head_dropout=0.1, options={"bert": bert, "source": str(folder.resolve())})
    config.class_names = class_names
    check_model_config(config, str(folder / "config.json"))
    _check_hf_bert_shapes(config.options["bert"], folder / "model.safetensors")
    return build_from_config(config, pretrained=True, seed=seed)


def _check_hf_bert_shapes(bert: dict[str, Any], weights: Path) -> None:
    """The tensor shapes ``bert`` (a checked BERT config) implies against those the safetensors
    header of ``weights`` declares, before the model is allocated: a config.json that asks for a
    bigger model than its weights hold is refused (:class:`CheckpointError` naming both files)."""
    with torch.device("meta"):
        skeleton = BertBody(bert)
    expected = {k: tuple(v.shape) for k, v in skeleton.bert.state_dict().items() if k != "embeddings.position_ids"}
    found = {k.removeprefix("bert."): v for k, v in safetensors_shapes(weights).items()
             if not k.startswith(("pooler.", "bert.pooler."))}
    found = {k: v for k, v in found.items() if k in expected}  # heads of other tasks are not ours to judge
    problems = shape_mismatches(expected, found)
    if problems:
        raise CheckpointError(f"{weights.parent / 'config.json'} does not describe the weights in {weights}: "
                              f"{problems}. The folder's config.json and model.safetensors must belong together.")


def _tiny_bert_config(num_classes: int, image_size: int | None, in_channels: int | None, max_length: int | None) -> ModelConfig:
    vocab = len(char_tokenizer())
    return ModelConfig(
        arch="tiny-bert", num_classes=num_classes, modality="text", max_length=max_length or 128,
        options={"bert": tiny_bert_config(vocab), "tokenizer": "char"},
    )


def _tiny_bert_build(config: ModelConfig, pretrained: bool, tokenizer: Any = None) -> TransferModel:
    body = BertBody(config.options["bert"])
    return TransferModel(body, body.hidden_size, config, tokenizer=tokenizer or char_tokenizer())


MODELS: dict[str, ArchSpec] = {
    s.name: s
    for s in (
        ArchSpec(
            "efficientnet-lite0", "image",
            "EfficientNet-Lite0, ImageNet-1k pretrained (4.0M body params, 1280 features); 32 px default",
            _effnet_config, _effnet_build, asset="efficientnet-lite0-weights",
            train_defaults={"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "onecycle",
                            "batch_size": 64, "steps": 1500, "weight_decay": 5e-5},
        ),
        ArchSpec(
            "minilm-l6", "text",
            "all-MiniLM-L6-v2, a pretrained 6-layer BERT (hidden 384), mean-pooled; 64 tokens default",
            _minilm_config, _minilm_build, asset="minilm-l6",
            train_defaults={"optimizer": "adamw", "lr": 5e-5, "head_lr_mult": 20.0, "schedule": "linear",
                            "batch_size": 32, "steps": 700, "weight_decay": 0.01, "warmup_fraction": 0.06},
        ),
        ArchSpec(
            "hf-encoder", "text",
            "a Hugging Face encoder folder (RoBERTa, XLM-RoBERTa, DistilBERT); pass the folder as the teacher",
            _hf_encoder_config, _hf_encoder_build,
            train_defaults={"optimizer": "adamw", "lr": 5e-5, "head_lr_mult": 20.0, "schedule": "linear",
                            "batch_size": 32, "steps": 700, "weight_decay": 0.01, "warmup_fraction": 0.06},
        ),
        ArchSpec(
            "small-cnn", "image",
            "a small VGG-style CNN (convs 32-64-128, FC 256), random init; native resolution",
            _cnn_config("small-cnn", (32, 64, 128), 256, 28), _cnn_build, native_resolution=True,
            train_defaults={"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "onecycle",
                            "batch_size": 128, "steps": 1500, "weight_decay": 5e-4},
        ),
        ArchSpec(
            "tiny-cnn", "image", "a tiny CNN (convs 4-8-16, FC 16) for tests",
            _cnn_config("tiny-cnn", (4, 8, 16), 16, 8), _cnn_build, native_resolution=True,
            train_defaults={"optimizer": "adamw", "lr": 0.01, "schedule": "constant", "batch_size": 32, "steps": 100},
        ),
        ArchSpec(
            "tiny-bert", "text", "a tiny 2-layer BERT (hidden 32) with a character tokenizer, for tests",
            _tiny_bert_config, _tiny_bert_build,
            train_defaults={"optimizer": "adamw", "lr": 3e-3, "schedule": "constant", "batch_size": 32, "steps": 100},
        ),
    )
}


def get_arch(name: str) -> ArchSpec:
    if name not in MODELS:
        raise unknown_name("model", name, list(MODELS))
    return MODELS[name]


# Bounds of a model config's size fields (checked before a model is allocated; see
# check_model_config). The zoo's own models use 8 to 224 px, 1 or 3 channels, 64 to 128 tokens.
MAX_IMAGE_SIZE = 4096  # pixels per side
MAX_IN_CHANNELS = 64
MAX_TOKENS = 8192  # max_length of a text model
MAX_CNN_WIDTH = 2048  # channels of a small CNN's conv layers
MAX_CNN_HIDDEN = 16384  # a small CNN's feature width


def check_model_config(config: ModelConfig, source: str) -> ModelConfig:
    """``config`` once every field that sets a size is a whole number within its documented bound
    (:data:`~safetransfer.validation.MAX_CLASSES`, :data:`MAX_IMAGE_SIZE`, :data:`MAX_IN_CHANNELS`,
    :data:`MAX_TOKENS`, :data:`MAX_CNN_WIDTH`, :data:`MAX_CNN_HIDDEN`, the BERT bounds of
    :func:`~safetransfer.models.text.check_bert_config`) and every other field is of its type:
    checked before anything is allocated. Floats such as ``1e8`` and bools are refused.

    Raises :class:`ConfigError` naming ``source`` (the config file) and the field.
    """
    spec = get_arch(config.arch) if isinstance(config.arch, str) else None
    if spec is None:
        raise ConfigError(f"{source}: 'arch' must be a zoo model's name, got {config.arch!r}.")
    if config.modality != spec.modality:
        raise ConfigError(f"{source}: 'modality' of a {config.arch} is {spec.modality!r}, got {config.modality!r}.")
    bounded_int(config.num_classes, "num_classes", 1, MAX_CLASSES, source)
    image = spec.modality == "image"
    bounded_int(config.image_size, "image_size", 8 if image else 0, MAX_IMAGE_SIZE, source)
    bounded_int(config.in_channels, "in_channels", 1 if image else 0, MAX_IN_CHANNELS, source)
    bounded_int(config.max_length, "max_length", 0 if image else 1, MAX_TOKENS, source)
    if not (is_number(config.head_dropout) and 0.0 <= config.head_dropout < 1.0):
        raise ConfigError(f"{source}: 'head_dropout' must be a number in [0, 1), got {config.head_dropout!r}.")
    for name in ("mean", "std"):
        values = getattr(config, name)
        if not isinstance(values, list) or not all(is_number(v) for v in values) or (
                image and len(values) not in (1, config.in_channels)) or (not image and len(values) > MAX_IN_CHANNELS):
            raise ConfigError(f"{source}: '{name}' must be a list of 1 or in_channels numbers, got {values!r:.80}.")
    if image and not all(v > 0 for v in config.std):
        raise ConfigError(f"{source}: 'std' must be positive, got {config.std!r:.80}.")
    names = config.class_names
    if names is not None and not (isinstance(names, list) and len(names) <= MAX_CLASSES
                                  and all(isinstance(n, str) and len(n) <= 1000 for n in names)):
        raise ConfigError(f"{source}: 'class_names' must be a list of at most {MAX_CLASSES:,} short strings.")
    options = config.options
    if not isinstance(options, dict):
        raise ConfigError(f"{source}: 'options' must be a JSON object, got {type(options).__name__}.")
    if "widths" in options:
        widths = options["widths"]
        if not isinstance(widths, list) or len(widths) != 3:
            raise ConfigError(f"{source}: 'options.widths' must be a list of 3 channel counts, got {widths!r:.80}.")
        for i, w in enumerate(widths):
            bounded_int(w, f"options.widths[{i}]", 1, MAX_CNN_WIDTH, source)
    if "hidden" in options:
        bounded_int(options["hidden"], "options.hidden", 1, MAX_CNN_HIDDEN, source)
    if "bn_momentum" in options and not (is_number(options["bn_momentum"]) and 0.0 <= options["bn_momentum"] <= 1.0):
        raise ConfigError(f"{source}: 'options.bn_momentum' must be a number in [0, 1], got {options['bn_momentum']!r}.")
    if "pooling" in options and options["pooling"] not in POOLINGS:
        raise ConfigError(f"{source}: 'options.pooling' must be one of {POOLINGS}, got {options['pooling']!r:.40}.")
    if "encoder" in options:
        encoder = check_encoder_config(options["encoder"], f"{source} (options.encoder)")
        if config.max_length > usable_positions(encoder):
            raise ConfigError(f"{source}: 'max_length' {config.max_length} exceeds the encoder's "
                              f"{usable_positions(encoder)} usable positions.")
    for key in ("source", "tokenizer"):
        if key in options and not isinstance(options[key], str):
            raise ConfigError(f"{source}: 'options.{key}' must be a string, got {type(options[key]).__name__}.")
    if "bert" in options:
        bert = check_bert_config(options["bert"], f"{source} (options.bert)")
        positions = bert.get("max_position_embeddings", 512)
        if config.max_length > positions:
            raise ConfigError(f"{source}: 'max_length' {config.max_length} exceeds the BERT's "
                              f"max_position_embeddings {positions}.")
    return config


def build_from_config(config: ModelConfig, pretrained: bool = False, tokenizer: Any = None, seed: int = 0) -> TransferModel:
    """Build the architecture a config describes (checked first by :func:`check_model_config`);
    random weights are drawn from ``seed``."""
    check_model_config(config, f"model config ({config.arch})")
    spec = get_arch(config.arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.build(config, pretrained, tokenizer)


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = True,
    image_size: int | None = None,
    in_channels: int | None = None,
    max_length: int | None = None,
    class_names: list[str] | None = None,
    seed: int = 0,
) -> TransferModel:
    """A zoo model with a new ``num_classes`` head (seeded), optionally with its pretrained weights."""
    spec = get_arch(name)
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}.")
    if image_size is not None and image_size < 8:
        raise ConfigError(f"image_size must be at least 8 pixels, got {image_size}.")
    config = spec.make_config(num_classes, image_size, in_channels, max_length)
    config.class_names = class_names
    return build_from_config(config, pretrained=pretrained, seed=seed)


IMAGENET_CLASSES = 1000


def imagenet_classifier(image_size: int = 224, pretrained: bool = True, seed: int = 0) -> TransferModel:
    """EfficientNet-Lite0 with its own 1000-class ImageNet classifier as the head (for attacks
    that need the model's original labels, such as adversarial reprogramming). ``pretrained=False``
    gives the same architecture with random weights, head included (seeded)."""
    model = create_model("efficientnet-lite0", IMAGENET_CLASSES, pretrained=pretrained, image_size=image_size,
                         in_channels=3, seed=seed)
    if pretrained:
        state = safe_torch_load(assets.require("efficientnet-lite0-weights"))
        if "_fc.weight" not in state or tuple(state["_fc.weight"].shape) != (IMAGENET_CLASSES, EFFICIENTNET_FEATURES):
            raise CheckpointError("the EfficientNet-Lite0 weights hold no 1000-class ImageNet classifier (_fc).")
        with torch.no_grad():
            model.head.weight.copy_(state["_fc.weight"])
            model.head.bias.copy_(state["_fc.bias"])
    return model


def list_models() -> list[dict[str, Any]]:
    """Name, modality, description and whether the pretrained weights are installed."""
    return [
        {
            "name": s.name,
            "modality": s.modality,
            "description": s.description,
            "pretrained": s.asset is not None,
            "installed": True if s.asset is None else assets.ASSETS[s.asset].installed(),
        }
        for s in MODELS.values()
    ]


def pretrained_weights(name: str, text_only: bool = False) -> Path:
    """The installed pretrained weights of the zoo model ``name`` (``text_only``: a text model's);
    an unknown name, or one without pretrained weights, is an error listing those that have them."""
    spec = MODELS.get(name)
    if spec is None or not spec.asset or (text_only and spec.modality != "text"):
        kind = "pretrained text model (or folder)" if text_only else "file, folder or pretrained zoo model"
        raise unknown_name(kind, name, [n for n, s in MODELS.items() if s.asset and (s.modality == "text" or not text_only)])
    return assets.require(spec.asset)


def weights_location(model: str) -> Path:
    """A weights file or model folder: ``model`` itself when it exists or reads as a path, else
    the zoo model ``model``'s installed pretrained weights."""
    path = Path(model)
    if path.exists() or ("/" in model or "." in path.name):
        return path
    return pretrained_weights(model)


def pretrained_text_folder(model: str) -> Path:
    """The Hugging Face model folder a text attacker or defender starts from: ``model`` itself when
    it is a folder, else the text zoo model ``model``'s installed pretrained folder."""
    path = Path(model)
    if path.is_dir():
        return path
    return pretrained_weights(model, text_only=True).parent
