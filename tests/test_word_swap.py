"""Word-swap attacks on a tiny BERT trained here: swaps only, within the cap, and they work."""

from __future__ import annotations

import pytest
import torch

from safetransfer.attacks.word_swap import EmbeddingNeighbours, WordSwapAttack
from safetransfer.errors import ConfigError

FLIP = {"good": ["bad"], "great": ["awful"], "fine": ["poor"], "bad": ["good"], "awful": ["great"], "poor": ["fine"]}


@pytest.fixture(scope="module")
def sentiment_model():
    from safetransfer.models import create_model
    from safetransfer.train import TrainConfig, train

    from conftest import text_dataset

    data = text_dataset(400)
    model = create_model("tiny-bert", 2, pretrained=False, seed=0, max_length=48)
    train(model, data.train, TrainConfig(steps=200, batch_size=32, optimizer="adamw", lr=3e-3, seed=0), progress=False)
    return model.eval(), data


@pytest.mark.parametrize("method", ["importance", "greedy"])
def test_swaps_only_within_the_cap_and_flips(sentiment_model, method: str) -> None:
    model, data = sentiment_model
    attack = WordSwapAttack(model, method=method, max_change=0.25, candidates=lambda w: FLIP.get(w, []))
    results = attack.generate(data.test.inputs[:40], data.test.labels[:40])
    done = [r for r in results if r.status != "skipped"]
    assert done and sum(r.status == "succeeded" for r in done) / len(done) >= 0.8
    for r in results:
        before, after = r.original.split(), r.perturbed.split()
        assert len(before) == len(after)  # a swap never adds or drops a word
        diff = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert diff == r.changed_positions and r.words_changed == len(diff)
        assert len(diff) <= max(1, int(0.25 * len(before)))
        assert all(after[i] in FLIP.get(before[i], []) for i in diff)
        if r.status == "skipped":
            assert r.perturbed == r.original and r.queries == 1
        if r.status == "succeeded":
            assert r.prediction != r.label and r.queries > 1


def test_feature_objective_moves_the_teachers_features_more_than_random_swaps(sentiment_model) -> None:
    from safetransfer.evaluate import predict_features

    model, data = sentiment_model
    texts, labels = data.test.inputs[:40], data.test.labels[:40]
    candidates = {w: ["bad", "poor", "awful", "good", "fine", "great"] for w in FLIP}
    attack = WordSwapAttack(model, max_change=0.25, candidates=lambda w: candidates.get(w, []), objective="features")
    results = attack.generate(texts, labels)
    assert all(r.status != "skipped" for r in results)  # no prediction to be wrong about
    done = [r for r in results if r.status == "succeeded"]
    assert len(done) >= 30

    def shift(before: list[str], after: list[str]) -> torch.Tensor:
        f0, f1 = predict_features(model, before), predict_features(model, after)
        return 1.0 - torch.nn.functional.cosine_similarity(f0, f1, dim=1)

    # the reported shift is 1 - cos of the teacher's pooled features, measured here independently
    measured = shift([r.original for r in done], [r.perturbed for r in done])
    assert torch.allclose(measured, torch.tensor([r.feature_shift for r in done]), atol=1e-4)
    # swaps of the same words, a seeded random candidate each: the search moves the features further
    gen = torch.Generator().manual_seed(0)
    random_texts = []
    for r in done:
        words = r.original.split()
        for i in r.changed_positions:
            options = [c for c in candidates[words[i].lower()] if c != words[i].lower()]
            words[i] = options[int(torch.randint(len(options), (1,), generator=gen))]
        random_texts.append(" ".join(words))
    assert float(measured.mean()) > 1.5 * float(shift([r.original for r in done], random_texts).mean())
    for r in results:  # still swaps only, within the cap
        before, after = r.original.split(), r.perturbed.split()
        diff = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert len(before) == len(after) and diff == r.changed_positions and len(diff) <= max(1, int(0.25 * len(before)))


def test_importance_keeps_only_swaps_that_lower_the_true_label(sentiment_model) -> None:
    """TextFooler's Algorithm 1: a word whose every candidate raises the true label's probability
    stays as it is; a text the search changed is less sure of its label than the original."""
    model, data = sentiment_model
    same = {"good": ["great"], "great": ["good"], "fine": ["great"], "bad": ["awful"], "awful": ["bad"], "poor": ["awful"]}
    attack = WordSwapAttack(model, max_change=0.25, candidates=lambda w: same.get(w, []))
    results = [r for r in attack.generate(data.test.inputs[:40], data.test.labels[:40]) if r.status != "skipped"]
    probs = attack._probs([r.original for r in results] + [r.perturbed for r in results])
    rows = torch.arange(len(results))
    labels = torch.tensor([r.label for r in results])
    before, after = probs[rows, labels], probs[rows + len(results), labels]
    changed = torch.tensor([r.words_changed > 0 for r in results])
    assert changed.any() and (~changed).any()  # some texts have a helpful swap, some none
    assert bool((after[changed] < before[changed]).all())
    assert all(r.perturbed == r.original for r in results if r.words_changed == 0)


def test_stop_words_are_never_swapped(sentiment_model) -> None:
    model, _ = sentiment_model
    attack = WordSwapAttack(model, method="greedy", max_change=1.0, candidates=lambda w: ["zzz"],
                            stop_words=frozenset({"the", "was"}))
    r = attack.attack("the movie was good", 1)
    after = r.perturbed.split()
    assert after[0] == "the" and after[2] == "was"


def test_embedding_neighbours_and_bad_settings(sentiment_model) -> None:
    model, _ = sentiment_model
    with pytest.raises(ConfigError, match="whole-word"):
        EmbeddingNeighbours(model)  # a character tokenizer has no whole words
    with pytest.raises(ConfigError, match="max_change"):
        WordSwapAttack(model, max_change=0.0, candidates=lambda w: [])
    with pytest.raises(ConfigError, match="objective"):
        WordSwapAttack(model, candidates=lambda w: [], objective="loss")


def test_embedding_neighbours_of_a_word_level_bert(tiny_hf_bert) -> None:
    from safetransfer.models.zoo import hf_bert_teacher

    model = hf_bert_teacher(tiny_hf_bert, 2)
    neighbours = EmbeddingNeighbours(model, k=4)
    found = neighbours("good")
    assert len(found) == 4 and "good" not in found and all(w in neighbours.words for w in found)
    emb = torch.nn.functional.normalize(model.body.bert.embeddings.word_embeddings.weight.detach(), dim=1)
    vocab = model.tokenizer.get_vocab()
    sims = {w: float(emb[vocab[w]] @ emb[vocab["good"]]) for w in neighbours.words if w != "good"}
    assert found == sorted(sims, key=sims.get, reverse=True)[:4]  # the k most cosine-similar whole words
    assert neighbours("unknownword") == []


def test_word_swap_command(tiny_hf_bert, data_files, tmp_path, capsys) -> None:
    import json

    from test_cli import assert_one_line_error, run

    # a word-level BERT student made from the tiny HF folder, the crafting teacher itself
    r = run(["transfer", "--method", "finetune", "--teacher", tiny_hf_bert, "--data", data_files.texts_csv,
             "--steps", "60", "--lr", "0.003", "--out", tmp_path / "t", "--no-progress"], capsys)
    assert r.code == 0, r.text
    model = tmp_path / "t" / "model"
    r = run(["word-swap", "--model", model, "--data", data_files.texts_csv, "--samples", "20", "--k", "4",
             "--student", model, "--out", tmp_path / "ws", "--no-progress"], capsys)
    assert r.code == 0, r.text
    doc = json.loads((tmp_path / "ws" / "word_swap.json").read_text())
    examples = json.loads((tmp_path / "ws" / "examples.json").read_text())
    assert len(examples) == 20 and all(len(e["original"].split()) == len(e["perturbed"].split()) for e in examples)
    # the figures are those of the examples written beside them
    attempted = [e for e in examples if e["status"] != "skipped"]
    won = sum(e["status"] == "succeeded" for e in attempted)
    assert doc["samples"] == 20 and doc["skipped"] == 20 - len(attempted)
    assert doc["success_rate"] == pytest.approx(won / len(attempted))
    # the crafting teacher is the student here: its DIR is the share of its right answers the swaps flipped
    right = [e for e in examples if e["original_prediction"] == e["label"]]
    flipped = sum(e["prediction"] != e["label"] for e in right)
    assert doc["students"][str(model)]["dir"] == pytest.approx(flipped / len(right))
    assert_one_line_error(run(["word-swap", "--model", model, "--data", data_files.texts_csv, "--method", "magic",
                               "--out", tmp_path / "x", "--no-progress"], capsys), "method")
    # on the public teacher's features: the HF folder itself, with no head for the task
    r = run(["word-swap", "--model", tiny_hf_bert, "--data", data_files.texts_csv, "--samples", "20", "--k", "4",
             "--objective", "features", "--student", model, "--out", tmp_path / "wf", "--no-progress"], capsys)
    assert r.code == 0, r.text
    doc = json.loads((tmp_path / "wf" / "word_swap.json").read_text())
    assert doc["objective"] == "features" and doc["skipped"] == 0 and doc["mean_feature_shift"] > 0.0
    # the student's DIR from its own predictions on the written texts
    from safetransfer.data.base import Split
    from safetransfer.evaluate import predict_logits
    from safetransfer.metrics import adversarial_dir
    from safetransfer.models import load_model

    examples = json.loads((tmp_path / "wf" / "examples.json").read_text())
    student, labels = load_model(model), torch.tensor([e["label"] for e in examples])
    clean = predict_logits(student, Split([e["original"] for e in examples], labels).inputs).argmax(1)
    crafted = predict_logits(student, [e["perturbed"] for e in examples]).argmax(1)
    assert doc["students"][str(model)]["dir"] == pytest.approx(adversarial_dir(clean, crafted, labels))
    assert_one_line_error(run(["word-swap", "--model", tiny_hf_bert, "--data", data_files.images_npz,
                               "--out", tmp_path / "y", "--no-progress"], capsys), "takes text inputs")


def test_random_word_swaps_change_n_modifiable_words_for_candidates() -> None:
    from safetransfer.attacks.word_swap import random_word_swaps

    text = "the good film was great and the cast was fine but the end was bad"
    words = text.split()
    modifiable = [i for i, w in enumerate(words) if w in FLIP]  # good, great, fine, bad: none a stop word
    seen = set()
    for seed in range(20):
        out = random_word_swaps(text, 2, lambda w: FLIP.get(w, []), generator=torch.Generator().manual_seed(seed))
        after = out.split()
        diff = [i for i, (a, b) in enumerate(zip(words, after)) if a != b]
        assert len(after) == len(words) and len(diff) == 2 and set(diff) <= set(modifiable)
        assert all(after[i] in FLIP[words[i]] for i in diff)
        seen.add(tuple(diff))
        again = random_word_swaps(text, 2, lambda w: FLIP.get(w, []), generator=torch.Generator().manual_seed(seed))
        assert again == out  # seeded
    assert len(seen) > 2  # the positions are drawn, not the first ones
    every = random_word_swaps(text, 10, lambda w: FLIP.get(w, []), generator=torch.Generator().manual_seed(0)).split()
    assert [i for i, (a, b) in enumerate(zip(words, every)) if a != b] == modifiable  # fewer than n: all of them
    # stop words are never swapped, whatever their candidates
    assert random_word_swaps("the the the", 3, lambda w: ["a"]) == "the the the"
    assert random_word_swaps(text, 0, lambda w: FLIP.get(w, [])) == text


def test_only_the_words_the_model_reads_are_swapped_and_counted(sentiment_model) -> None:
    """A text longer than the model's token window: the words past it are never swapped (a swap
    there could not act), and the cap is a share of the words read."""
    from safetransfer.attacks.word_swap import readable_words, swap_options
    from safetransfer.evaluate import predict_logits

    model, _ = sentiment_model
    long = " ".join(["good", "fine", "great"] + ["the", "movie", "was"] * 30 + ["great", "fine"])
    n_long, n_short = readable_words(model, [long, "good film"])
    assert n_short == 2  # a text the window holds: all of it
    ids = model.tokenizer(long, truncation=True, max_length=model.config.max_length)["input_ids"]
    read = model.tokenizer.decode(ids, skip_special_tokens=True).replace(" ##", "").split()
    assert n_long == len(read) - 1  # the last word read may be cut
    assert 3 <= n_long < 20
    words = long.split()
    assert set(swap_options(words, lambda w: FLIP.get(w, []), frozenset(), n_long)) == {0, 1, 2}
    assert set(swap_options(words, lambda w: FLIP.get(w, []), frozenset())) == {0, 1, 2, len(words) - 2, len(words) - 1}
    label = int(predict_logits(model, [long]).argmax(1)[0])
    for max_change in (1.0, 0.1):
        attack = WordSwapAttack(model, method="greedy", max_change=max_change, candidates=lambda w: FLIP.get(w, []))
        result = attack.attack(long, label)
        assert result.words_changed >= 1 and all(i < n_long for i in result.changed_positions)
        assert result.perturbed.split()[-2:] == ["great", "fine"]
        assert result.words_changed <= max(1, int(max_change * n_long))
        assert attack.generate([long], torch.tensor([label]))[0].perturbed == result.perturbed
