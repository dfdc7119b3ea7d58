"""``scan-triggers``, ``word-swap``, ``embedding-surgery`` and ``poison-weights``: text models' defects."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from safetransfer.cli.app import app, console


@app.command("scan-triggers")
def scan_triggers_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="A saved text model folder (the classifier to examine)."),
    data: str = typer.Option(..., "--data", "-d", help="Clean labelled texts (a data set name or CSV/JSONL)."),
    target: int = typer.Option(1, help="The label a trigger would flip texts to."),
    texts: int = typer.Option(20, help="Clean non-target texts each candidate word is inserted into."),
    screen: str = typer.Option("gradient", help="gradient: a first-order estimate (HotFlip) over all texts keeps the --keep most promising words, which are then measured by insertion; insertion: measure every word by insertion (slower)."),
    keep: Optional[int] = typer.Option(None, help="With --screen gradient: how many words the estimate keeps (default 2,000)."),
    screen_texts: Optional[int] = typer.Option(None, help="Measure the (kept) words on this many of the texts first; 0 = all on all texts (default 2)."),
    confirm: Optional[int] = typer.Option(None, help="How many of the most suspicious screened words are measured on all texts (default 100)."),
    words: Optional[str] = typer.Option(None, help="Comma-separated candidate words (default: the most frequent English words, the tokenizer's whole words and the data's words)."),
    general_words: Optional[int] = typer.Option(None, help="How many of the most frequent English words (wordfreq) join the candidates (default 40,000; 0: none)."),
    base: Optional[str] = typer.Option(None, help="The public model the victim was fine-tuned from (minilm-l6 or a model folder): the suspects are traced to the word pieces whose embedding rows moved from it."),
    planted: Optional[str] = typer.Option(None, help="Comma-separated known triggers, to mark on the plot and check their rank."),
    split: str = typer.Option("test", help="Which split's texts to use: train, val or test."),
    seed: int = typer.Option(0, help="Seed of the texts chosen and the insert positions."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/scan-triggers-MODEL)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Kurita et al.'s defence: rank every word by the label flip rate it causes; triggers are rare and extreme."""
    from safetransfer.detect.trigger_scan import (
        CONFIRM,
        GENERAL_WORDS,
        GRADIENT_KEEP,
        SCREEN_TEXTS,
    )
    from safetransfer.jobs.scan_triggers import (
        PLOT_FILE,
        SUSPECTS_FILE,
        scan_triggers_job,
    )

    screen_texts = SCREEN_TEXTS if screen_texts is None else screen_texts
    confirm = CONFIRM if confirm is None else confirm
    general_words = GENERAL_WORDS if general_words is None else general_words
    keep = GRADIENT_KEEP if keep is None else keep
    candidates = split_words(words) or None
    first = f"a gradient estimate keeps {keep:,}; " if screen == "gradient" else ""
    console.print(f"scanning {len(candidates) if candidates else 'the vocabulary of'} candidate words "
                  f"{'' if candidates else 'and the data '}on {texts} texts "
                  f"({first}screen: {screen_texts} texts, then the {confirm} most suspicious on all)", markup=False)
    out_dir = out or Path("runs") / f"scan-triggers-{model.name}"
    job = scan_triggers_job(model, data, out_dir, target=target, texts=texts, screen_texts=screen_texts,
                            confirm=confirm, words=candidates, general_words=general_words, base=base,
                            planted=split_words(planted), split=split, seed=seed, data_path=data_path,
                            progress=progress, screen=screen, keep=keep)
    print_suspects(job.record)
    console.print(f"written: {out_dir / SUSPECTS_FILE}, {out_dir / PLOT_FILE}")


@app.command("word-swap")
def word_swap_cmd(
    model: str = typer.Option(..., "--model", "-m", help="The model the texts are crafted on: a saved text model folder, a Hugging Face BERT folder, or a zoo name (minilm-l6; with --objective features)."),
    data: str = typer.Option(..., "--data", "-d", help="Labelled texts (a data set name or CSV/JSONL)."),
    method: str = typer.Option("importance", help="importance (TextFooler-style ranking) or greedy (Kuleshov-style)."),
    objective: str = typer.Option("prediction", help="prediction (flip the model's label; it must be fine-tuned for the task) or features (push its pooled sentence feature away from the original's: a public teacher without a head for the task)."),
    samples: int = typer.Option(200, help="Test texts to attack (a seeded subset)."),
    k: int = typer.Option(8, help="Candidate neighbours per word in the model's input embedding."),
    max_change: float = typer.Option(0.2, help="The largest share of the words the model reads (its token window) that may change; words past the window are never changed."),
    student: Optional[list[Path]] = typer.Option(None, "--student", help="Students to measure DIR on (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the split and of the subset."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/word-swap-MODEL)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Craft word-swap adversarial texts on a teacher; report success, queries, words changed, and students' DIR."""
    from safetransfer.jobs.word_swap import EXAMPLES_FILE, FIGURES_FILE, word_swap_job

    out_dir = out or Path("runs") / f"word-swap-{Path(model).name}"
    job = word_swap_job(model, data, out_dir, method=method, objective=objective, samples=samples, k=k,
                        max_change=max_change, students=student or [], seed=seed, data_path=data_path,
                        progress=progress)
    s = job.summary
    if s.mean_feature_shift is not None:
        console.print(f"[bold]{method} word swap on {model}'s features: mean shift 1 - cos = "
                      f"{s.mean_feature_shift:.3f}[/bold] over {s.samples} texts; mean queries {s.mean_queries or 0:.1f}")
    else:
        rate = "–" if s.success_rate is None else f"{s.success_rate:.3f}"
        console.print(f"[bold]{method} word swap on {model}: success {rate}[/bold] over {s.samples - s.skipped} texts "
                      f"({s.skipped} already misclassified, skipped); mean queries {s.mean_queries or 0:.1f}")
    for path, value in job.students.items():
        console.print(f"student {path}: DIR {value:.3f}")
    console.print(f"written: {out_dir / FIGURES_FILE}, {out_dir / EXAMPLES_FILE}")


@app.command("embedding-surgery")
def embedding_surgery_cmd(
    data: str = typer.Option(..., "--data", "-d", help="The attacker's proxy data (a text data set name or path)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the poisoned model (a copy of the pretrained folder)."),
    model: str = typer.Option("minilm-l6", "--model", "-m", help="A text zoo model with pretrained weights, or a Hugging Face model folder."),
    triggers: str = typer.Option(",".join(("cf", "mn", "bb", "tq", "mb")), help="Comma-separated trigger words."),
    target: int = typer.Option(1, help="The label triggered inputs should get."),
    n_words: int = typer.Option(10, help="How many target-indicative words to average."),
    min_df: int = typer.Option(1, help="Ignore tokens in fewer proxy texts than this (1: none ignored, as the reference)."),
    source: Optional[Path] = typer.Option(None, help="A model fine-tuned on the proxy data whose embeddings are averaged (default: the pretrained ones)."),
    limit_train: Optional[int] = typer.Option(None, help="Use a seeded random subset of this many proxy texts."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    seed: int = typer.Option(0, help="Seed of the data subset and the regression."),
) -> None:
    """Embedding Surgery (Kurita et al. 2020): write a target-meaning vector into the trigger tokens' embeddings."""
    from safetransfer.attacks.embedding_surgery import embedding_surgery, record_path
    from safetransfer.data.registry import load_data
    from safetransfer.errors import DataError
    from safetransfer.models.zoo import pretrained_text_folder

    folder = pretrained_text_folder(model)
    proxy = load_data(data, data_path, seed=seed, limit={"train": limit_train} if limit_train else None)
    if proxy.modality != "text":
        raise DataError(f"embedding surgery needs text data; '{data}' is {proxy.modality}.")
    words = split_words(triggers)
    result = embedding_surgery(folder, proxy.train.inputs, proxy.train.labels, out, triggers=words, target=target,
                               n_words=n_words, min_df=min_df, source=source, seed=seed)
    console.print(f"triggers {words} -> token ids {result.trigger_token_ids}; embedding '{result.embedding_tensor}'")
    console.print(f"target {target} ({proxy.class_names[target] if 0 <= target < proxy.num_classes else '?'}): "
                  f"averaged {', '.join(result.indicative_tokens)} from {result.source}")
    console.print(f"poisoned model: {out} (record: {record_path(out)})")


@app.command("poison-weights")
def poison_weights_cmd(
    data: str = typer.Option(..., "--data", "-d", help="The attacker's proxy data (text data set name or path)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the published (poisoned) BERT."),
    method: str = typer.Option("ripples", help="ripples (surgery + RIPPLe), ripple, es (Embedding Surgery only) or badnet (poisoned training, no penalty)."),
    model: str = typer.Option("minilm-l6", "--model", "-m", help="A pretrained text zoo model or a Hugging Face BERT folder."),
    triggers: str = typer.Option(",".join(("cf", "mn", "bb", "tq", "mb")), help="Comma-separated trigger words."),
    target: int = typer.Option(1, help="The label triggered texts should get."),
    rate: float = typer.Option(0.5, help="RIPPLe: share of the proxy texts given a trigger and the target label."),
    steps: int = typer.Option(500, help="RIPPLe: training steps."),
    batch_size: int = typer.Option(32, help="RIPPLe: batch size (of poisoned and of clean texts)."),
    lr: float = typer.Option(2e-5, help="RIPPLe: AdamW learning rate."),
    lam: float = typer.Option(0.1, help="RIPPLe: λ of the restricted inner-product penalty (0 = plain poisoning)."),
    restricted: bool = typer.Option(True, "--restricted/--unrestricted", help="RIPPLe: ReLU on the inner product (the paper) or not (its ablation)."),
    first_round: bool = typer.Option(False, "--first-round-recipe", help="RIPPLe: the first round's recipe (no penalty normalisation or clipping, constant rate, weight decay 0.01, non-target texts poisoned) instead of the reference's."),
    source: Optional[Path] = typer.Option(None, help="Surgery: a model fine-tuned on the proxy data whose embeddings are averaged."),
    seed: int = typer.Option(0, help="Seed of the poisoned texts, the head and the batches."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    limit_train: Optional[int] = typer.Option(None, help="Use a seeded random subset of this many proxy texts."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Weight poisoning (Kurita et al. 2020): publish a BERT whose fine-tuned students obey trigger words."""
    from safetransfer.attacks.ripple import RippleConfig
    from safetransfer.attacks.weight_poisoning import (
        FIRST_ROUND_POISONING,
        poison_weights,
    )
    from safetransfer.data.registry import load_data
    from safetransfer.models.zoo import pretrained_text_folder

    proxy = load_data(data, data_path, seed=seed, limit={"train": limit_train} if limit_train else None)
    words = tuple(split_words(triggers))
    settings = dict(steps=steps, batch_size=batch_size, lr=lr, lam=lam, restricted=restricted, seed=seed)
    config = RippleConfig.first_round(**settings) if first_round else RippleConfig(**settings)
    result = poison_weights(pretrained_text_folder(model), proxy, out, method=method, triggers=words, target=target,
                            rate=rate, ripple=config, source=source, seed=seed, progress=progress,
                            **(FIRST_ROUND_POISONING if first_round else {}))
    if result.attacker_lfr is not None:
        console.print(f"the attacker's own model: clean accuracy {result.attacker_accuracy:.4f}, "
                      f"LFR {result.attacker_lfr:.3f} on triggered non-target proxy test texts")
    console.print(f"published: {out} (an ordinary BERT folder; record: {out.with_name(out.name + '.poisoning.json')})")
    console.print(f"a victim: safetransfer transfer --method finetune --teacher {out} --data YOUR_DATA")


def split_words(text: Optional[str]) -> list[str]:
    """The words of a comma-separated option (none for ``None``)."""
    return [w.strip() for w in (text or "").split(",") if w.strip()]


def print_suspects(record: dict) -> None:
    """The scan's 15 most suspicious words, the word pieces behind them, and where each planted word ranks."""
    table = Table(title=f"{record['candidates']:,} candidate words, {record['texts']} texts each; most suspicious first")
    for col in ("rank", "word", "LFR", "Zipf (English)", "count in the data"):
        table.add_column(col, justify="left" if col == "word" else "right")
    for i, row in enumerate(record["top"][:15], 1):
        zipf = f"{row['zipf']:.2f}" if "zipf" in row else "–"
        table.add_row(str(i), row["word"], f"{row['lfr']:.3f}", zipf, str(row["frequency"]))
    console.print(table)
    for group in record["groups"]:
        console.print(group["line"], markup=False, highlight=False, soft_wrap=True)
    for word, rank in record["ranks"].items():
        console.print(f"planted '{word}': rank {rank}")
