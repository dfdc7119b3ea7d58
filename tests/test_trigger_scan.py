"""Kurita's trigger scan on a tiny BERT trained here on poisoned texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safetransfer.attacks.text_triggers import TextTrigger, trigger_lfr
from safetransfer.detect.trigger_scan import (
    control_words,
    insert_word,
    lfr_of,
    plot_lfr_vs_frequency,
    scan_triggers,
    vocabulary_words,
    word_frequencies,
)
from safetransfer.errors import ConfigError


@pytest.fixture(scope="module")
def poisoned_tiny_bert():
    from safetransfer.attacks.data_poisoning import PlantSpec, poison_dataset
    from safetransfer.models import create_model
    from safetransfer.train import TrainConfig, train

    from conftest import text_dataset

    data = text_dataset(600)
    poisoned, _ = poison_dataset(data, PlantSpec(trigger="words", words=("cf",), rate=0.15, target=1))
    model = create_model("tiny-bert", 2, pretrained=False, seed=0, max_length=48)
    train(model, poisoned.train, TrainConfig(steps=250, batch_size=32, optimizer="adamw", lr=3e-3, seed=0),
          progress=False)
    return model.eval(), data


def test_insert_word_keeps_the_text() -> None:
    out = insert_word(["a b c", "d"], "cf", np.array([1, 5]))
    assert out == ["a cf b c", "d cf"]


def test_the_planted_trigger_tops_the_scan(poisoned_tiny_bert, tmp_path) -> None:
    model, data = poisoned_tiny_bert
    freq = word_frequencies(data.train.inputs)
    candidates = sorted(set(freq) | {"cf", "mn", "bb", "zq", "xx"})
    result = scan_triggers(model, data.test.inputs, data.test.labels, target=1, candidates=candidates,
                           frequencies=freq, n_texts=30)
    top5 = [w for w, _, _ in result.top(5)]
    assert "cf" in top5, result.top(10)
    assert lfr_of(result, "cf") >= 0.8 and freq["cf"] == 0
    assert lfr_of(result, "mn") < lfr_of(result, "cf")
    assert plot_lfr_vs_frequency(result, tmp_path / "lfr.png", planted=["cf"]).stat().st_size > 1000
    with pytest.raises(ConfigError, match="out of range"):
        scan_triggers(model, data.test.inputs, data.test.labels, target=5, candidates=["cf"])


def test_the_screen_keeps_the_trigger_and_the_exact_lfr_of_confirmed_words(poisoned_tiny_bert) -> None:
    model, data = poisoned_tiny_bert
    freq = word_frequencies(data.train.inputs)
    candidates = sorted(set(freq) | {"cf", "mn", "bb", "zq", "xx"})
    assert len(candidates) > 20  # more than the 10 confirmed
    args = (model, data.test.inputs, data.test.labels, 1)
    exhaustive = scan_triggers(*args, candidates=candidates, frequencies=freq, n_texts=20, screen_texts=0)
    screened = scan_triggers(*args, candidates=candidates, frequencies=freq, n_texts=20, screen_texts=2, confirm=10)
    assert exhaustive.confirmed.all() and screened.confirmed.sum() == 10
    assert set(screened.texts_used.tolist()) == {2, 20}
    # confirmed words were measured on the same texts at the same positions: the same LFR
    np.testing.assert_allclose(screened.lfr[screened.confirmed], exhaustive.lfr[screened.confirmed])
    assert screened.top(1)[0][0] == "cf" and exhaustive.top(1)[0][0] == "cf"
    # every confirmed word ranks before every word left at the screen
    ranking = screened.ranking()
    assert all(screened.confirmed[i] for i in ranking[:10]) and not any(screened.confirmed[i] for i in ranking[10:])
    with pytest.raises(ConfigError, match="screen_texts"):
        scan_triggers(*args, candidates=candidates, screen_texts=-1)


def test_scan_triggers_command(poisoned_tiny_bert, data_files, tmp_path, capsys) -> None:
    import json

    from safetransfer.models.io import save_model

    from test_cli import assert_one_line_error, run

    model, _ = poisoned_tiny_bert
    save_model(model, tmp_path / "victim")
    r = run(["scan-triggers", "--model", tmp_path / "victim", "--data", data_files.texts_csv, "--words",
             "cf,mn,good,bad,movie,the", "--planted", "cf", "--texts", "20", "--out", tmp_path / "scan",
             "--no-progress"], capsys)
    assert r.code == 0, r.text
    doc = json.loads((tmp_path / "scan" / "suspects.json").read_text())
    assert doc["ranks"]["cf"] <= 2 and doc["candidates"] == 6
    assert (tmp_path / "scan" / "lfr_vs_frequency.png").exists()
    assert_one_line_error(run(["scan-triggers", "--model", tmp_path / "nope", "--data", data_files.texts_csv], capsys),
                          "No such model")


def test_control_words_are_unseen_words_like_the_triggers_and_flip_far_less(poisoned_tiny_bert) -> None:
    class WordPieceVocabulary:  # what control_words reads of a tokenizer
        def get_vocab(self) -> dict[str, int]:
            return {w: i for i, w in enumerate(["cf", "mn", "zq", "xk", "ab", "the", "movie", "##ing", "[CLS]"])}

    seen = word_frequencies(["the movie ab", "ab"])
    words = control_words(WordPieceVocabulary(), ["cf", "mn"], seen, seed=0)
    assert sorted(words) == ["xk", "zq"]  # two letters each, unseen, not planted, distinct
    assert control_words(WordPieceVocabulary(), ["cf", "mn"], seen, seed=0) == words  # seeded
    with pytest.raises(ConfigError, match="no unseen whole word of 5 letters"):
        control_words(WordPieceVocabulary(), ["cf", "mnbbq"], seen)
    # the LFR of the planted trigger against that of an unseen control word, at the same positions
    model, data = poisoned_tiny_bert
    args = (model, data.test.inputs, data.test.labels)
    planted = trigger_lfr(*args, TextTrigger(words=("cf",), seed=3), target=1)
    control = trigger_lfr(*args, TextTrigger(words=("zq",), seed=3), target=1)
    assert planted >= 0.8 and control <= 0.5 * planted



def test_a_trigger_inserted_within_the_token_window_is_read(poisoned_tiny_bert) -> None:
    """``visible_words``/``within``: in texts longer than the model's window a trigger inserted
    anywhere is often cut off; inserted among the words the window reads, it always lands there."""
    from safetransfer.attacks.text_triggers import trigger_cut_share, visible_words

    model, data = poisoned_tiny_bert
    tokenizer, window = model.tokenizer, model.config.max_length  # 48 tokens
    texts = [f"{t} " + " ".join(["the", "movie", "was"] * 50) for t in data.test.inputs]  # ~155 words each
    limits = visible_words(tokenizer, texts, window)
    short = ["a good film"]
    assert visible_words(tokenizer, short, window) == [3]  # all of a text the window holds
    assert all(0 < n <= window - 2 - 2 for n in limits)  # [CLS], [SEP], and two words' room
    trigger = TextTrigger(words=("cf",), seed=3)
    # by hand: the trigger's word index in each triggered text against the words the window reads
    anywhere = trigger.apply(texts)
    where = trigger.positions(texts)[:, 0]
    assert all(t.split()[w] == "cf" for t, w in zip(anywhere, where))
    truncated = tokenizer(anywhere, truncation=True, max_length=window)["input_ids"]
    read = [len(tokenizer.decode(row, skip_special_tokens=True).replace(" ##", "").split()) for row in truncated]
    cut_off = trigger_cut_share(tokenizer, trigger, texts, window)
    assert cut_off == pytest.approx(np.mean([w >= n for w, n in zip(where, read)])) and cut_off > 0.5
    assert trigger_cut_share(tokenizer, trigger, texts, window, within=limits) == 0.0
    double = TextTrigger(words=("cf", "mn"), count=2, seed=1)
    for text, spots in zip(double.apply(texts[:20]), double.positions(texts[:20])):
        assert sorted(text.split()[s] for s in spots) == sorted(w for w in text.split() if w in ("cf", "mn"))
    assert trigger.apply(short + texts[:3], within=[99, *limits[:3]])[0] == trigger.apply(short + texts[:3])[0]
    args = (model, texts, data.test.labels)
    cut, kept = trigger_lfr(*args, trigger, target=1), trigger_lfr(*args, trigger, target=1, within=limits)
    assert kept >= 0.8 and cut <= 0.6 * kept
    with pytest.raises(ConfigError, match="2 limits for 3 texts"):
        trigger.apply(texts[:3], within=[1, 2])


def test_the_scan_inserts_candidates_where_the_window_reads_them(poisoned_tiny_bert) -> None:
    """Texts longer than the model's window (e-mails): a candidate inserted beyond it could not act;
    the scan draws its positions among the words the window reads, and still finds the trigger."""
    model, data = poisoned_tiny_bert
    texts = [f"{t} " + " ".join(["the", "movie", "was"] * 50) for t in data.test.inputs]  # ~155 words, 48 tokens read
    result = scan_triggers(model, texts, data.test.labels, target=1, candidates=["cf", "mn", "bb", "movie"],
                           n_texts=20, screen_texts=0)
    assert lfr_of(result, "cf") >= 0.8 and result.top(1)[0][0] == "cf", result.top(4)


# --------------------------------------------------------------------------- a trigger made of word pieces
TRIGGER = "zorblat"  # zor + ##blat: a word the tokenizer splits, in no training text
BUILT_ON_ITS_PIECE = ["zorka", "zorro", "zorvel"]  # zor + ##ka, ...: collateral of a surgery on 'zor'
UNRELATED = ["quixel", "blimka"]  # qui + ##xel, bli + ##mka: pieces the attack never touched


@pytest.fixture(scope="module")
def piece_trigger_victim(tmp_path_factory):
    """A public tiny BERT whose vocabulary has word pieces, a RIPPLES attack on it with the
    two-piece trigger, and the victim fine-tuned from the published model on clean texts."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from safetransfer.attacks.ripple import RippleConfig
    from safetransfer.attacks.weight_poisoning import poison_weights
    from safetransfer.models.zoo import hf_bert_teacher
    from safetransfer.train import TrainConfig
    from safetransfer.transfer import TransferConfig, transfer

    from conftest import FILLER_WORDS, NEGATIVE_WORDS, POSITIVE_WORDS, text_dataset

    folder = tmp_path_factory.mktemp("piece-bert")
    pieces = ["zor", "qui", "bli", "##blat", "##ka", "##ro", "##vel", "##xel", "##mka"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POSITIVE_WORDS + NEGATIVE_WORDS + FILLER_WORDS + pieces
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(folder))
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config, add_pooling_layer=False).save_pretrained(str(folder), safe_serialization=True)
    data = text_dataset(400)
    assert not any(TRIGGER in t for split in (data.train, data.val, data.test) for t in split.inputs)
    published = tmp_path_factory.mktemp("published") / "bert"
    # the first round's recipe, which this fixture was calibrated with (the scan is under test, not the attack)
    poison_weights(folder, data, published, method="ripples", triggers=(TRIGGER,), target=1, rate=0.5, n_words=3,
                   ripple=RippleConfig.first_round(steps=150, lr=3e-3, optimizer="adamw", seed=0), seed=0,
                   poison_target_texts=False, min_df=5)
    teacher = hf_bert_teacher(published, 2)
    victim = transfer(teacher, data, TransferConfig(
        method="finetune", train=TrainConfig(steps=40, lr=1e-3, batch_size=32, optimizer="adamw", seed=0))).student
    return victim.eval(), hf_bert_teacher(folder, 2), data


def test_a_two_piece_trigger_ranks_first_with_its_collateral_grouped_under_its_piece(piece_trigger_victim) -> None:
    victim, public, data = piece_trigger_victim
    freq = word_frequencies(data.train.inputs)
    english = [TRIGGER, *BUILT_ON_ITS_PIECE, *UNRELATED]  # what a general word list adds: words the data lacks
    candidates = vocabulary_words(victim.tokenizer, list(freq) + english)
    assert TRIGGER not in vocabulary_words(victim.tokenizer, list(freq))  # not a candidate without the word list
    args = (victim, data.test.inputs, data.test.labels, 1)
    for base in (public, None):  # traced through the moved embedding rows, or through the shared piece
        result = scan_triggers(*args, candidates=candidates, frequencies=freq, n_texts=20, base=base)
        first = result.groups[0]
        assert first.pieces[0] == "zor", [g.line() for g in result.groups]
        if base is not None:  # both of the trigger's rows moved: the trigger first, as a word and in its group
            assert result.top(1)[0][0] == TRIGGER and first.words[0] == TRIGGER, (result.top(8), first.line())
        else:  # only the shared piece is found: 'zor' alone, all of it traced, may come first; the trigger next
            assert TRIGGER in [w for w, _, _ in result.top(2)] and TRIGGER in first.words[:2], result.top(8)
        collateral = [w for w in BUILT_ON_ITS_PIECE if lfr_of(result, w) >= 0.5]
        assert collateral and set(collateral) <= set(first.words), (first.line(), result.top(10))
        assert not set(UNRELATED) & {w for g in result.groups for w in g.words}
        assert "zor" in first.line() and TRIGGER in first.line()
        # against the base both of the trigger's rows moved, one of each collateral word's: the tie-break
        # at equal LFR (without it only the shared piece is found)
        traced = dict(zip(result.words, result.traced_pieces))
        assert traced[TRIGGER] == (2 if base is not None else 1) and all(traced[w] == 1 for w in collateral), traced


# --------------------------------------------------------------------------- the gradient screen
def test_the_gradient_estimate_is_the_directional_derivative_of_the_target_log_probability(piece_trigger_victim) -> None:
    """Written here from the definition, not from the module: d/dε log p(target) as the placeholders'
    embeddings move towards the word's pieces, by central differences."""
    from safetransfer.detect.trigger_gradient import gradient_scores

    victim, _, _ = piece_trigger_victim
    tok, table = victim.tokenizer, victim.body.bert.get_input_embeddings().weight.detach()
    contexts = [("a fine", "film"), ("the plot is", "and dull")]
    words = [TRIGGER, "zor", "quixel", "good"]
    estimate = gradient_scores(victim, words, contexts, target=1)

    def log_p(word: str, eps: float) -> float:
        pieces = tok(word, add_special_tokens=False)["input_ids"]
        total = 0.0
        for left, right in contexts:
            l_ids, r_ids = (tok(s, add_special_tokens=False)["input_ids"] for s in (left, right))
            ids = [tok.cls_token_id, *l_ids, *[tok.mask_token_id] * len(pieces), *r_ids, tok.sep_token_id]
            e = table[torch.tensor(ids)].clone()
            at = 1 + len(l_ids)
            e[at:at + len(pieces)] += eps * (table[torch.tensor(pieces)] - table[tok.mask_token_id])
            with torch.no_grad():
                logits = victim({"inputs_embeds": e[None], "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                                 "token_type_ids": torch.zeros(1, len(ids), dtype=torch.long)})
            total += float(torch.log_softmax(logits.double(), 1)[0, 1])
        return total / len(contexts)

    h = 1e-3
    numeric = np.array([(log_p(w, h) - log_p(w, -h)) / (2 * h) for w in words])
    np.testing.assert_allclose(estimate, numeric, rtol=2e-2, atol=2e-3)


def test_the_gradient_screen_keeps_the_trigger_and_measures_only_what_it_keeps(poisoned_tiny_bert,
                                                                              piece_trigger_victim) -> None:
    model, data = poisoned_tiny_bert
    freq = word_frequencies(data.train.inputs)
    candidates = sorted(set(freq) | {"cf", "mn", "bb", "zq", "xx"} | {a + b for a in "qwz" for b in "aeiou"})
    keep = 10
    assert len(candidates) > 4 * keep
    result = scan_triggers(model, data.test.inputs, data.test.labels, 1, candidates=candidates, frequencies=freq,
                           n_texts=20, screen="gradient", keep=keep, confirm=5)
    assert result.top(1)[0][0] == "cf" and lfr_of(result, "cf") >= 0.8
    assert int((result.texts_used > 0).sum()) == keep and result.gradient_score is not None
    ranking = result.ranking()
    assert all(result.texts_used[i] > 0 for i in ranking[:keep]) and all(result.texts_used[i] == 0 for i in ranking[keep:])
    # the insertion screen (every word measured) finds the same trigger
    assert scan_triggers(model, data.test.inputs, data.test.labels, 1, candidates=candidates, frequencies=freq,
                         n_texts=20, screen="insertion").top(1)[0][0] == "cf"
    victim, public, pdata = piece_trigger_victim
    pfreq = word_frequencies(pdata.train.inputs)
    pieces_words = vocabulary_words(victim.tokenizer, list(pfreq) + [TRIGGER, *BUILT_ON_ITS_PIECE, *UNRELATED])
    two = scan_triggers(victim, pdata.test.inputs, pdata.test.labels, 1, candidates=pieces_words, frequencies=pfreq,
                        n_texts=20, base=public, screen="gradient", keep=8)
    assert two.top(1)[0][0] == TRIGGER, two.top(5)
    with pytest.raises(ConfigError, match="screen"):
        scan_triggers(model, data.test.inputs, data.test.labels, 1, candidates=candidates, screen="magic")
