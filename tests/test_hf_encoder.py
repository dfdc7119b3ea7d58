"""Hugging Face encoders other than BERT as teachers: tiny random RoBERTa and DistilBERT folders
made here (no download), loaded, fine-tuned, sliced by ReMoS, saved and reloaded; hostile configs refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safetransfer.errors import CheckpointError, ConfigError
from safetransfer.models.hf_encoder import check_encoder_config
from safetransfer.models.text import char_tokenizer
from safetransfer.models.zoo import hf_teacher, is_hf_encoder_folder


def _folder(tmp_path: Path, model_type: str, task_head: bool = False) -> Path:
    """A tiny random model of ``model_type`` saved as Hugging Face would (safetensors, config.json,
    a tokenizer), optionally with a sequence-classification head."""
    import transformers

    tok = char_tokenizer()
    vocab = len(tok)
    if model_type == "roberta":
        config = transformers.RobertaConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                            intermediate_size=32, max_position_embeddings=66, pad_token_id=0,
                                            bos_token_id=2, eos_token_id=3)
        cls = transformers.RobertaForSequenceClassification if task_head else transformers.RobertaModel
    else:
        config = transformers.DistilBertConfig(vocab_size=vocab, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                               max_position_embeddings=64, pad_token_id=0)
        cls = transformers.DistilBertForSequenceClassification if task_head else transformers.DistilBertModel
    folder = tmp_path / f"{model_type}{'-cls' if task_head else ''}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cls(config).save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_folder_teacher_loads_its_weights_and_features(tmp_path, model_type):
    import transformers
    from safetensors.torch import load_file

    folder = _folder(tmp_path, model_type)
    assert is_hf_encoder_folder(folder)
    model = hf_teacher(folder, 3, seed=0)
    assert model.config.arch == "hf-encoder" and model.num_classes == 3
    saved = load_file(str(folder / "model.safetensors"))
    ours = model.body.transformer.state_dict()
    for name, tensor in saved.items():  # every saved tensor landed under its base-model name
        key = name.removeprefix(f"{model_type}.")
        if key.startswith("pooler."):  # the pooler is left out (features are pooled by us)
            assert key not in ours
            continue
        assert torch.equal(ours[key], tensor), name
    # the features are the masked mean of the reference model's last hidden states
    reference = getattr(transformers, "RobertaModel" if model_type == "roberta" else "DistilBertModel").from_pretrained(
        str(folder), local_files_only=True).eval()
    model.eval()
    batch = model.tokenizer(["good film", "a much longer and sadder text"], padding=True, return_tensors="pt")
    with torch.no_grad():
        feats = model.body(dict(batch))
        hidden = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(feats, (hidden * m).sum(1) / m.sum(1), atol=1e-5)


def test_classification_folder_gives_its_body_and_a_new_head(tmp_path):
    from safetensors.torch import load_file

    folder = _folder(tmp_path, "roberta", task_head=True)
    model = hf_teacher(folder, 4, seed=0)
    saved = load_file(str(folder / "model.safetensors"))
    body = model.body.transformer.state_dict()
    assert torch.equal(body["encoder.layer.1.output.dense.weight"], saved["roberta.encoder.layer.1.output.dense.weight"])
    assert model.head.out_features == 4 and not any(k.startswith("classifier") for k in body)


def test_finetune_remos_save_and_reload(tmp_path, tiny_texts):
    from safetransfer.models.io import load_model, save_model
    from safetransfer.train import TrainConfig
    from safetransfer.transfer import TransferConfig, transfer
    from safetransfer.transfer.stages import stage_names

    folder = _folder(tmp_path, "distilbert")
    teacher = hf_teacher(folder, tiny_texts.num_classes, max_length=32, seed=0)
    assert stage_names(teacher) == ["body.encoder.transformer.layer.0", "body.encoder.transformer.layer.1"]
    train = TrainConfig(steps=3, batch_size=8, lr=1e-3, seed=0)
    result = transfer(teacher, tiny_texts, TransferConfig(method="remos", train=train, ratio=0.1))
    assert result.slice_summary["excluded"] > 0 and any("encoder.transformer.layer.1" in layer["name"] for layer in result.slice_summary["layers"])
    save_model(result.student, tmp_path / "student")
    again = load_model(tmp_path / "student")
    batch = dict(again.tokenizer(["a good film"], return_tensors="pt"))
    with torch.no_grad():
        assert torch.allclose(again.eval()(batch), result.student.eval()(batch), atol=1e-6)


def test_hostile_and_unknown_configs_refused(tmp_path):
    folder = _folder(tmp_path, "roberta")
    cfg = json.loads((folder / "config.json").read_text())
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        check_encoder_config({"model_type": "roberta", "num_hidden_layers": 10**9}, "x")
    with pytest.raises(ConfigError, match="parameters"):
        check_encoder_config({"model_type": "distilbert", "dim": 8192, "n_heads": 16, "n_layers": 128, "hidden_dim": 65536}, "x")
    with pytest.raises(ConfigError, match="not an encoder"):
        check_encoder_config({"model_type": "gpt2"}, "x")
    cfg["hidden_size"] = 32  # the config asks for more than the weights hold: refused before allocation
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not describe the weights"):
        hf_teacher(folder, 2)
    cfg["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(cfg))
    assert not is_hf_encoder_folder(folder)
    with pytest.raises(CheckpointError, match="model_type 'gpt2'|its model_type is 'gpt2'"):
        hf_teacher(folder, 2)
