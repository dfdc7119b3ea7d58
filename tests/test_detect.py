"""Poisoned-sample detectors on small synthetic sets where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safetransfer.attacks.triggers import BADNETS_WATERMARK, BlendTrigger, PixelTrigger, poison_images
from safetransfer.detect import (
    activation_clustering,
    centroid_distance,
    scan_untangling,
    score_detection,
    spectral_signature,
)
from safetransfer.detect.spectral import spectral_scores
from safetransfer.errors import ConfigError, DataError


def planted_features(seed: int = 0, n_per_class: int = 400, poisoned: int = 30, dim: int = 32):
    """Three Gaussian classes; ``poisoned`` samples labelled 0 that sit off in a direction of their own."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(3, dim))
    f = np.concatenate([centres[c] + rng.normal(0, 1, size=(n_per_class, dim)) for c in range(3)])
    y = np.repeat(np.arange(3), n_per_class)
    direction = rng.normal(0, 1, size=dim)
    direction *= 8 / np.linalg.norm(direction)
    bad = centres[1] + direction + rng.normal(0, 1, size=(poisoned, dim))  # from class 1, labelled 0
    truth = np.concatenate([np.zeros(len(y), bool), np.ones(poisoned, bool)])
    return np.concatenate([f, bad]), np.concatenate([y, np.zeros(poisoned, int)]), truth


@pytest.mark.parametrize("detector", [
    lambda f, y: spectral_signature(f, y),
    lambda f, y: spectral_signature(f, y, removal="fixed", eps=0.1),
    lambda f, y: activation_clustering(f, y),
    lambda f, y: activation_clustering(f, y, reduce="pca", analysis="silhouette"),
    lambda f, y: activation_clustering(f, y, reduce="pca", analysis="tight"),
    lambda f, y: centroid_distance(f, y),
    lambda f, y: scan_untangling(f, y),
])
def test_each_detector_finds_the_planted_samples(detector) -> None:
    f, y, truth = planted_features()
    result = detector(f, y)
    q = score_detection(result, truth)
    assert q.recall >= 0.9, q
    assert q.auroc >= 0.95, q
    limit = 0.17 if "fixed" in result.method else 0.03  # the fixed rule removes 15% of every label
    assert q.fpr <= limit, q
    assert result.seconds >= 0 and set(np.flatnonzero(~result.is_clean)) == set(result.flagged)


def shared_variation_classes(seed: int = 0, classes: int = 10, n: int = 300, dim: int = 24, poisoned: int = 60):
    """SCAn's model: class identities plus one variation all classes share (a random covariance);
    ``poisoned`` samples of other classes relabelled 3, carrying an identity of their own."""
    rng = np.random.default_rng(seed)
    identities, mixing = rng.normal(0, 3, (classes, dim)), rng.normal(0, 1, (dim, dim)) / np.sqrt(dim)
    f = np.concatenate([identities[c] + rng.normal(0, 1, (n, dim)) @ mixing for c in range(classes)])
    y = np.repeat(np.arange(classes), n)
    bad = rng.choice(np.flatnonzero(y != 3), poisoned, replace=False)
    poisoned_f = f.copy()
    poisoned_f[bad] = rng.normal(0, 3, dim) + rng.normal(0, 1, (poisoned, dim)) @ mixing
    poisoned_y = y.copy()
    poisoned_y[bad] = 3
    truth = np.zeros(len(y), bool)
    truth[bad] = True
    return f, y, poisoned_f, poisoned_y, truth


def test_scan_names_the_poisoned_class_and_flags_nothing_elsewhere() -> None:
    clean_f, clean_y, f, y, truth = shared_variation_classes()
    result = scan_untangling(f, y)
    assert [c for c, info in result.per_class.items() if info["poisoned"]] == [3], result.per_class
    q = score_detection(result, truth)
    assert q.recall == 1.0 and q.fpr == 0.0, q
    assert all(info["flagged"] == 0 for c, info in result.per_class.items() if c != 3)
    # the reference's setting: the global model fitted on a clean set the defender holds
    with_clean = scan_untangling(f, y, clean_features=clean_f[::3], clean_labels=clean_y[::3])
    assert score_detection(with_clean, truth).recall == 1.0 and with_clean.params["global_model"] == "clean set"
    # a clean training set: no class is called poisoned, nothing is flagged
    untouched = scan_untangling(clean_f, clean_y)
    assert untouched.is_clean.all() and not any(info["poisoned"] for info in untouched.per_class.values())
    # the same seed, the same verdicts
    assert np.array_equal(scan_untangling(f, y, seed=4).is_clean, scan_untangling(f, y, seed=4).is_clean)
    with pytest.raises(DataError, match="at least 3"):
        scan_untangling(f[y < 2], y[y < 2])


def layered_classes(seed: int = 0, poisoned: int = 45, classes: int = 10, n: int = 400):
    """SCAn's shared-variation classes with per-layer likelihoods beside them: every sample's five
    layer minima near a typical value, the poisoned samples' (relabelled 3) far below in layers 0-1,
    as a patch trigger makes them; the penultimate features carry no trace of the poison."""
    rng = np.random.default_rng(seed)
    clean_f, clean_y, _, y, truth = shared_variation_classes(seed, classes, n, poisoned=poisoned)
    f = clean_f.copy()  # the poisoned samples look like label 3 to the penultimate layer: only the layers tell
    f[truth] = clean_f[rng.choice(np.flatnonzero(clean_y == 3), int(truth.sum()))] + rng.normal(0, 0.05, (int(truth.sum()), f.shape[1]))
    lk = -np.exp(rng.normal(np.log(12.0), 0.15, size=(len(y), 5)))
    lk[truth, :2] = -np.exp(rng.normal(np.log(90.0), 0.15, size=(int(truth.sum()), 2)))
    clean_lk = -np.exp(rng.normal(np.log(12.0), 0.15, size=(len(y), 5)))
    return f, y, lk, truth, (clean_f, clean_y, clean_lk)


def test_multilayer_names_the_poisoned_label_from_the_layers() -> None:
    from safetransfer.detect.multilayer import multilayer_detection

    f, y, lk, truth, (clean_f, clean_y, clean_lk) = layered_classes()
    result = multilayer_detection(f, y, lk)
    assert [c for c, info in result.per_class.items() if info["poisoned"]] == [3], result.per_class
    q = score_detection(result, truth)
    assert q.recall >= 0.95 and q.fpr <= 0.005, q
    assert all(info["flagged"] == 0 for c, info in result.per_class.items() if c != 3)
    # the poisoned label's minority ranks first
    assert truth[result.ranking()[: int(truth.sum())]].mean() >= 0.95
    # the features alone carry nothing here: no label is called, nothing is flagged
    alone = multilayer_detection(f, y, None)
    assert alone.is_clean.all() and alone.params["layers"] == 0
    # the training set without the poison: nothing flagged
    untouched = multilayer_detection(clean_f, clean_y, clean_lk)
    assert untouched.is_clean.all() and not any(info["poisoned"] for info in untouched.per_class.values())
    # seeded: the same verdicts twice
    assert np.array_equal(multilayer_detection(f, y, lk, seed=3).is_clean, multilayer_detection(f, y, lk, seed=3).is_clean)
    with pytest.raises(DataError, match="likelihoods"):
        multilayer_detection(f, y, lk[:10])
    with pytest.raises(DataError, match="likelihoods"):
        multilayer_detection(f, y, np.full_like(lk, np.nan))
    with pytest.raises(DataError, match="components"):
        multilayer_detection(f, y, lk, components=0)


def test_multilayer_finds_a_blend_like_poison_in_the_features() -> None:
    """A poison the penultimate features separate (as a blended trigger's) and the layers do not."""
    from safetransfer.detect.multilayer import multilayer_detection

    _, _, f, y, truth = shared_variation_classes(poisoned=80)
    lk = -np.exp(np.random.default_rng(1).normal(np.log(12.0), 0.15, size=(len(y), 5)))
    q = score_detection(multilayer_detection(f, y, lk), truth)
    assert q.recall >= 0.95 and q.fpr <= 0.005, q


def test_layer_likelihoods_by_hand_and_on_a_model_without_batchnorm() -> None:
    """The first BatchNorm layer's minimum: log N(x; running mean, running var + eps) of the conv
    output, computed here by hand; a body without BatchNorm scores its Linear layers."""
    from safetransfer.detect.layer_likelihood import layer_likelihoods, scored_layers
    from safetransfer.models.zoo import create_model

    torch.manual_seed(0)
    model = create_model("tiny-cnn", num_classes=3)
    layers, is_bn = scored_layers(model)
    assert is_bn and len(layers) >= 2
    bn = layers[0][1]
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 2.0)
    x = torch.rand(6, 1, 8, 8)
    x[0, 0, 3, 3] = 30.0  # an extreme pixel: far less likely activations
    lk, names = layer_likelihoods(model, x, batch_size=4)
    assert lk.shape == (6, len(layers)) and names == [n for n, _ in layers]
    conv = model.body.features[0]
    with torch.no_grad():
        h = conv(model.normalize(model.preprocess(x))).double()
    var = (bn.running_var + bn.eps).double()
    z = (h - bn.running_mean.double()[None, :, None, None]) / var.sqrt()[None, :, None, None]
    log_p = -0.5 * z ** 2 - 0.5 * var.log()[None, :, None, None] - 0.5 * np.log(2 * np.pi)
    assert np.allclose(lk[:, 0], log_p.flatten(1).amin(1).numpy(), rtol=1e-6, atol=1e-6)
    assert lk[0, 0] < lk[1:, 0].min()
    text = create_model("tiny-bert", num_classes=2)
    tl, tnames = layer_likelihoods(text, ["a cat", "the dog sat", "zzz qqq", "hello"], batch_size=3)
    assert tl.shape == (4, len(text.sliceable_layers())) and np.isfinite(tl).all() and tnames[0].startswith("body.")
    # padding is not read: a text scores the same alone as in a batch padded to a longer one
    alone, _ = layer_likelihoods(text, ["a cat"], batch_size=1)
    padded, _ = layer_likelihoods(text, ["a cat", "a much longer text with many more characters"], batch_size=2)
    stats_alone, _ = layer_likelihoods(text, ["a cat", "a much longer text with many more characters"], batch_size=1)
    assert np.allclose(padded[0], stats_alone[0], atol=1e-4)  # the same statistics, batched or not
    assert alone.shape == (1, len(tnames))


def test_spectre_removes_the_poison_given_its_count() -> None:
    """SPECTRE as the reference runs it: the poisoned count given, 1.5 times that removed per label."""
    from safetransfer.detect.spectre import K_GRID, spectre

    assert K_GRID == (1, 4, 9, 16, 25, 36, 49, 64, 81, 100)
    _, _, f, y, truth = shared_variation_classes()
    result = spectre(f, y, eps=60)
    q = score_detection(result, truth)
    assert q.recall == 1.0 and q.auroc >= 0.99, q
    assert all(info["flagged"] == 90 for info in result.per_class.values())  # 1.5 * eps in every label
    f2, y2, truth2 = planted_features()
    assert score_detection(spectre(f2, y2, eps=30), truth2).recall == 1.0
    with pytest.raises(ConfigError, match="eps"):
        spectre(f, y, eps=0)


def test_robust_spectral_and_clustering_leave_clean_labels_alone() -> None:
    f, y, truth = planted_features(poisoned=0)
    assert spectral_signature(f, y).is_clean.mean() > 0.995
    assert activation_clustering(f, y, analysis="silhouette").is_clean.all()
    assert activation_clustering(f, y, reduce="pca", analysis="tight").is_clean.all()


def test_tight_clusters_find_a_small_poison_that_two_means_misses() -> None:
    """Each label is two clean halves (structure of its own); label 0 also holds a small tight
    poison cluster (3%). 2-means splits the halves and misses it; the tight analysis finds it
    and leaves the clean label alone."""
    rng = np.random.default_rng(0)
    dim, n = 16, 600
    halves = rng.normal(0, 1, size=(2, 2, dim)) * 6
    f = np.concatenate([halves[c, h] + rng.normal(0, 1, size=(n // 2, dim)) for c in range(2) for h in range(2)])
    y = np.repeat([0, 1], n)
    poison = halves[0].mean(0) + rng.normal(0, 1, size=dim) * 4 + rng.normal(0, 0.3, size=(18, dim))
    f, y = np.concatenate([f, poison]), np.concatenate([y, np.zeros(18, int)])
    truth = np.arange(len(y)) >= 2 * n
    two_means = score_detection(activation_clustering(f, y, reduce="pca", analysis="silhouette"), truth)
    assert two_means.recall < 0.5, two_means
    tight = activation_clustering(f, y, reduce="pca", analysis="tight")
    q = score_detection(tight, truth)
    assert q.recall >= 0.95 and q.fpr <= 0.01, q
    assert tight.per_class[1]["flagged"] == 0 and tight.per_class[0]["silhouette"] >= 0.4
    with pytest.raises(ConfigError, match="max_clusters"):
        activation_clustering(f, y, analysis="tight", max_clusters=1)


def test_spectral_scores_by_hand() -> None:
    # mean (1, 1); centred x = (-2, 2, -1, 1), y = (.1, .1, -.1, -.1), uncorrelated: the top direction is x
    f = np.array([[-1.0, 1.1], [3.0, 1.1], [0.0, 0.9], [2.0, 0.9]])  # x and y uncorrelated
    np.testing.assert_allclose(spectral_scores(f), [4.0, 4.0, 1.0, 1.0], rtol=1e-12)
    # uncentred projection would differ: the mean is not removed
    assert not np.allclose(spectral_scores(f), (f[:, 0]) ** 2, rtol=1e-3)


def test_score_detection_counts() -> None:
    from safetransfer.detect import DetectionResult

    r = DetectionResult("x", np.array([0.9, 0.8, 0.1, 0.7, 0.2]), np.array([False, False, True, False, True]))
    q = score_detection(r, np.array([True, True, False, False, False]))
    assert (q.recall, q.fpr, q.precision, q.flagged) == (1.0, pytest.approx(1 / 3), pytest.approx(2 / 3), 3)
    assert q.auroc == 1.0
    assert list(r.flagged) == [0, 1, 3]


def test_detectors_refuse_bad_input() -> None:
    f, y, _ = planted_features()
    with pytest.raises(DataError, match="empty"):
        spectral_signature(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(DataError, match="labels must be"):
        activation_clustering(f, y[:-1])
    with pytest.raises(DataError, match="NaN"):
        centroid_distance(np.full((4, 2), np.nan), np.zeros(4, int))
    with pytest.raises(ConfigError, match="removal"):
        spectral_signature(f, y, removal="median")
    with pytest.raises(ConfigError, match="eps"):
        spectral_signature(f, y, removal="fixed", eps=0.9)


# --------------------------------------------------------------------------- poisoning
def test_badnets_watermark_pixels_exactly() -> None:
    x = torch.zeros(2, 1, 28, 28)
    out = PixelTrigger().apply(x)
    white = {(int(r), int(c)) for r, c in torch.nonzero(out[0, 0])}
    assert white == {(27, 27), (27, 25), (25, 27), (25, 25), (26, 26)}
    assert BADNETS_WATERMARK == ((-1, -1), (-1, -3), (-3, -1), (-3, -3), (-2, -2))
    assert torch.equal(out[0], out[1]) and out.max() == 1.0 and x.max() == 0.0
    with pytest.raises(ConfigError, match="outside"):
        PixelTrigger(pixels=((30, 0),)).apply(x)


def test_poisoning_all_to_one_and_source_to_target() -> None:
    x = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    y = torch.arange(200) % 4
    px, py, mask = poison_images(x, y, PixelTrigger(), 0.05, target=3, keep_target=False, seed=1)
    assert mask.sum() == round(0.05 * 150) and (y[mask] != 3).all() and (py[mask] == 3).all()
    assert torch.equal(px[~mask], x[~mask]) and (px[mask][:, 0, -1, -1] == 1.0).all()
    _, py2, mask2 = poison_images(x, y, PixelTrigger(), 0.2, target=3, source=1, seed=1)
    assert mask2.sum() == 10 and (y[mask2] == 1).all() and (py2[mask2] == 3).all()
    again = poison_images(x, y, PixelTrigger(), 0.05, target=3, keep_target=False, seed=1)[2]
    assert torch.equal(mask, again)
    with pytest.raises(ConfigError, match="source"):
        poison_images(x, y, PixelTrigger(), 0.1, target=3, source=3)


def test_blend_trigger() -> None:
    x = torch.zeros(3, 1, 4, 4)
    out = BlendTrigger(pattern=torch.ones(4, 4), alpha=0.2).apply(x)
    assert torch.allclose(out, torch.full_like(x, 0.2))
    noisy = BlendTrigger(alpha=0.5, seed=3)
    assert torch.equal(noisy.apply(x), noisy.apply(x)) and noisy.apply(x).std() > 0
    with pytest.raises(ConfigError, match="alpha"):
        BlendTrigger(alpha=0.0).apply(x)


# --------------------------------------------------------------------------- the commands, on tiny data
def tiny_npz(tmp_path, n: int = 600):
    from conftest import make_image_arrays

    x, y = make_image_arrays(n, seed=0)
    path = tmp_path / "tiny600.npz"
    np.savez(path, x=x, y=y)
    return path


def test_badnets_command_plants_a_working_backdoor(tmp_path, capsys) -> None:
    from test_cli import run

    out = tmp_path / "bn"
    # the square patch: on 8x8 images the 5 scattered watermark pixels overlap the classes' own
    # patterns, and whether 33 samples teach it in 300 steps varied between CPUs (0.86-1.0)
    r = run(["badnets", "--data", tiny_npz(tmp_path), "--model", "tiny-cnn", "--rate", "0.1", "--target", "1",
             "--trigger", "square", "--steps", "300", "--out", out, "--no-progress"], capsys)
    assert r.code == 0, r.text
    import json

    doc = json.loads((out / "damage.json").read_text())
    assert doc["poisoned_samples"] > 0
    assert doc["attack_success"] >= 0.9 and doc["attack_success_clean_model"] <= 0.2, doc
    assert abs(doc["poisoned_accuracy"] - doc["clean_accuracy"]) <= 0.05
    assert (out / "clean" / "confusion.png").exists() and (out / "poisoned" / "confusion.png").exists()
    assert (out / "training_curves.png").stat().st_size > 1000


def test_scan_data_command_writes_its_files_and_ranks_the_poison(data_files, tmp_path, capsys) -> None:
    import csv
    import json

    from test_cli import assert_one_line_error, run

    out = tmp_path / "scan"
    r = run(["scan-data", "--data", tiny_npz(tmp_path), "--model", "tiny-cnn", "--steps", "300", "--plant",
             "watermark", "--rate", "0.1", "--target", "1", "--method", "all", "--out", out, "--no-progress"], capsys)
    assert r.code == 0, r.text
    doc = json.loads((out / "results.json").read_text())
    assert doc["poisoned"] > 0 and set(doc["detectors"]) == {"multilayer", "spectral", "spectral_fixed",
                                                               "activation_clustering", "ac_silhouette", "ac_tight",
                                                               "centroid", "untangling"}
    # the verdict comes from the first detector (the default one) and names the labels it calls poisoned
    verdict = doc["verdict"]
    assert verdict["detector"] == "multilayer" and verdict["sentence"] in r.text.replace("\n", " ")
    called_ml = [int(c) for c, info in doc["detectors"]["multilayer"]["per_class"].items() if info["poisoned"]]
    assert verdict["poisoned_labels"] == called_ml and verdict["flagged"] == doc["detectors"]["multilayer"]["flagged"]
    # SCAn names the class it calls poisoned (or none) in the per-class record
    assert all("poisoned" in info for info in doc["detectors"]["untangling"]["per_class"].values())
    # with a planted poison the held-out split is clean: SCAn fits its global model there
    assert doc["detectors"]["untangling"]["params"]["global_model"] == "clean set"
    assert doc["model_attack_success"] >= 0.8  # the tiny model learned the watermark, so there is a poison to find
    assert max(e["auroc"] for e in doc["detectors"].values()) >= 0.85, doc["detectors"]
    with (out / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == doc["samples"] and sum(int(r["poisoned"]) for r in rows) == doc["poisoned"]
    for name in ("outliers.png", "scatter.png", "scores.png", "labels.png", "training_curves.png", "scan.html"):
        assert (out / name).stat().st_size > 1000
    # the sanity view: the same model trained on the data without the poison, side by side
    runs = doc["training"]
    assert set(runs) == {"poisoned data (scanned)", "clean data"} and all(e["steps"] == 300 for e in runs.values())
    assert all([p[0] for p in e["val_curve"]] == [50, 100, 150, 200, 250, 300] for e in runs.values()), runs
    assert runs["poisoned data (scanned)"]["attack_success"] == doc["model_attack_success"]
    assert runs["clean data"]["attack_success"] <= 0.2  # trained without the poison, it ignores the watermark
    assert abs(runs["clean data"]["test_accuracy"] - runs["poisoned data (scanned)"]["test_accuracy"]) <= 0.1
    page = (out / "scan.html").read_text()
    assert "Detectors" in page and "clean data" in page
    called = [doc["classes"][int(c)] for c, info in doc["detectors"]["untangling"]["per_class"].items() if info["poisoned"]]
    assert "Which label is poisoned (untangling)" in page and "Which label is poisoned (multilayer)" in page
    assert (f"untangling calls {', '.join(called)} poisoned" if called else "untangling calls no label poisoned") in page
    # a clean set the defender trusts, given by file: SCAn fits its global model on it; the saved model is reused
    r = run(["scan-data", "--data", tiny_npz(tmp_path), "--model", out / "model" / "model", "--method", "untangling",
             "--clean-data", data_files.images_npz, "--out", tmp_path / "trusted", "--no-progress"], capsys)
    assert r.code == 0, r.text
    trusted = json.loads((tmp_path / "trusted" / "results.json").read_text())
    assert trusted["detectors"]["untangling"]["params"]["global_model"] == "clean set"
    assert trusted["verdict"]["detector"] == "untangling" and "verdict: untangling calls" in r.text
    # without a planted poison: counts only, no truth columns
    r = run(["scan-data", "--data", data_files.images_npz, "--method", "spectral", "--out", tmp_path / "plain",
             "--no-progress"], capsys)
    assert r.code == 0, r.text
    assert json.loads((tmp_path / "plain" / "results.json").read_text())["poisoned"] is None
    r = run(["scan-data", "--data", data_files.images_npz, "--method", "spectre", "--spectre-eps", "3", "--out",
             tmp_path / "spectre", "--no-progress"], capsys)
    assert r.code == 0, r.text
    spectre_doc = json.loads((tmp_path / "spectre" / "results.json").read_text())["detectors"]["spectre"]
    assert spectre_doc["params"]["eps"] == 3 and spectre_doc["flagged"] > 0
    assert_one_line_error(run(["scan-data", "--data", data_files.images_npz, "--method", "spectre", "--out",
                               tmp_path / "x"], capsys), "--spectre-eps")
    assert_one_line_error(run(["scan-data", "--data", data_files.images_npz, "--method", "magic", "--out", tmp_path / "x"],
                              capsys), "unknown detector")
    assert_one_line_error(run(["scan-data", "--data", data_files.images_npz, "--plant", "watermark", "--target", "7",
                               "--out", tmp_path / "x"], capsys), "out of range")


def test_label_histogram_marks_the_over_represented_label(tmp_path) -> None:
    from safetransfer.detect.plots import plot_label_histogram

    labels = np.concatenate([np.repeat(np.arange(4), 100), np.full(12, 2)])
    path = plot_label_histogram(labels, ["a", "b", "c", "d"], tmp_path / "h.png")
    assert path.stat().st_size > 1000


def test_text_trigger_inserts_words_and_poisons_texts() -> None:
    from safetransfer.attacks.text_triggers import TextTrigger, poison_texts

    texts = ["the plot was good", "an awful film", "fine acting overall and more", "bad"]
    trig = TextTrigger(words=("cf", "mn"), count=2, seed=3)
    out = trig.apply(texts)
    for before, after in zip(texts, out):
        words = after.split()
        assert len(words) == len(before.split()) + 2
        kept = [w for w in words if w not in ("cf", "mn")]
        assert kept == before.split()  # only insertions, order kept
    assert out == trig.apply(texts) and out != TextTrigger(words=("cf", "mn"), count=2, seed=4).apply(texts)
    labels = torch.tensor([0, 0, 1, 0])
    poisoned, y, mask = poison_texts(texts, labels, TextTrigger(), rate=0.5, target=1, seed=0)
    assert int(mask.sum()) == round(0.5 * 3) and (labels[mask] == 0).all() and (y[mask] == 1).all()
    assert [p for p, m in zip(poisoned, mask) if not m] == [t for t, m in zip(texts, mask) if not m]
    with pytest.raises(ConfigError, match="single non-empty words"):
        TextTrigger(words=("two words",)).apply(texts)


def test_two_gaussian_mixture_agrees_with_scikit_learn() -> None:
    """Our EM fits the model scikit-learn's GaussianMixture(2, full) fits: same weights, means and
    log-likelihood on a seeded two-cluster sample, with or without the subset starts."""
    from sklearn.mixture import GaussianMixture

    from safetransfer.detect.mixture import fit_two_gaussians

    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.6, 0.0], [0.6, 2.0, 0.3], [0.0, 0.3, 0.5]])
    x = np.vstack([rng.multivariate_normal([0, 0, 0], cov, 1800), rng.multivariate_normal([4, -3, 1], cov, 200)])
    ref = GaussianMixture(2, covariance_type="full", reg_covar=1e-4, n_init=3, random_state=0).fit(x)
    order = np.argsort(ref.weights_)
    for fit_rows in (None, 500):
        ours = fit_two_gaussians(x, seed=0, reg_covar=1e-4, fit_rows=fit_rows)
        mine = np.argsort(ours.weights)
        assert np.allclose(ours.weights[mine], ref.weights_[order], atol=1e-3)
        assert np.allclose(ours.means[mine], ref.means_[order], atol=1e-2)
        assert np.allclose(ours.covariances[mine], ref.covariances_[order], atol=2e-2)
        assert abs(ours.log_likelihood - ref.score(x)) < 1e-3
        assert np.array_equal(ours.posterior.argmax(1) == mine[0], ref.predict(x) == order[0])
    again = fit_two_gaussians(x, seed=0, fit_rows=500)
    assert np.array_equal(again.posterior, fit_two_gaussians(x, seed=0, fit_rows=500).posterior)
