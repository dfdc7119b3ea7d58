"""Models: the zoo, the common wrapper, safe saving and loading."""

from safetransfer.models.io import load_model, save_model
from safetransfer.models.wrapper import ModelConfig, TransferModel
from safetransfer.models.zoo import MODELS, create_model, list_models

__all__ = ["MODELS", "ModelConfig", "TransferModel", "create_model", "list_models", "load_model", "save_model"]
