"""The study's configuration: one YAML file says the teacher, the student tasks, the defects,
the transfer methods, seeds and budgets (validated with pydantic; unknown keys are errors).

A config may carry ``profiles``: named partial configs deep-merged over the base (mappings
merge key by key; lists and scalars replace), e.g. ``quick`` for a demo run and ``full`` for
the whole study. The embedded default lives in ``default_vision.yaml`` next to this module.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from safetransfer.attacks.text_triggers import DEFAULT_TRIGGER_WORDS
from safetransfer.attacks.word_swap import SEARCH_VERSION
from safetransfer.detect.trigger_scan import GENERAL_WORDS
from safetransfer.errors import ConfigError, unknown_name
from safetransfer.safe_paths import read_text_bounded
from safetransfer.transfer import METHOD_NAMES, PROTOCOLS, TransferConfig

DEFAULT_CONFIG = "default_vision.yaml"
EMBEDDED = {"vision": DEFAULT_CONFIG, "text": "default_text.yaml"}  # the studies that come with the package
STRATEGIES = ("deepxplore", "dlfuzz", "dlfuzz_rr")
COVERAGE_METRICS = ("nc", "tknc", "snac")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherSpec(_Strict):
    """The pretrained teacher: a zoo name or a saved model folder."""

    model: str = "efficientnet-lite0"
    image_size: int | None = Field(default=None, ge=8)


class TaskSpec(_Strict):
    """A student task: a data set (registered name or path) and how much of it to use.

    ``limit_train`` / ``limit_test``: seeded subsets (``None`` = all). ``train_per_class``: at most
    this many training samples of each class (a seeded, balanced subset; the few-labels regime in
    which transfer pays, as in the ReMoS paper's data sets), applied before ``limit_train``. ``eval_samples``:
    test inputs (a seeded subset) on which defects are crafted and DIR measured.
    """

    data: str
    path: str | None = None
    limit_train: int | None = Field(default=None, ge=1)
    train_per_class: int | None = Field(default=None, ge=1)
    limit_test: int | None = Field(default=None, ge=1)
    eval_samples: int = Field(default=1000, ge=1)

    @property
    def name(self) -> str:
        return task_name(self.data)


def task_name(data: str) -> str:
    """The name a task goes by in results: a registered data set's name, or a path's stem."""
    return Path(data).stem if ("/" in data or "." in data) else data


class TriggerSpec(_Strict):
    size: int = Field(default=3, ge=1)
    corner: Literal["bottom-right", "bottom-left", "top-right", "top-left"] = "bottom-right"
    margin: int = Field(default=1, ge=0)
    pattern: Literal["square", "checkerboard", "random"] = "square"
    value: float = Field(default=1.0, ge=0.0, le=1.0)
    seed: int = 0


class _Defect(_Strict):
    """What every defect kind has: a ``name`` (unique in the study), its ``kind`` (the subclass's
    tag) and ``steps``: the attacker's training steps (a planted defect, a word-swap surrogate) or
    attack iterations (a crafted one); ``None``: the kind's default.

    A kind's fields are its model's; a field of another kind is an error. The kind's identity
    for cache keys and the config fingerprint is :meth:`key_doc`."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str
    steps: int | None = Field(default=None, ge=1)

    adversarial: ClassVar[bool] = False  # inputs crafted on the clean teacher (else planted in a copy of it)
    text: ClassVar[bool] = False  # needs text data (else images)
    # fields added after cells were cached: in the key only when not at these values, so the cells
    # made before keep their keys
    key_optional: ClassVar[dict[str, Any]] = {}
    key_exempt: ClassVar[tuple[str, ...]] = ()  # fields keyed elsewhere, not the defect's identity

    @property
    def scanned(self) -> bool:
        """Whether Kurita et al.'s trigger scan runs on this defect's ``finetune`` student."""
        return False

    @property
    def measure_doc(self) -> dict[str, Any]:
        """Settings of how a student's DIR is measured that the defect's identity (:meth:`key_doc`)
        leaves out, for the keys of the measurements and the config fingerprint."""
        return {}

    @property
    def search_doc(self) -> dict[str, int]:
        """The version of the code that crafts this defect's inputs, where it has one (a word swap:
        ``SEARCH_VERSION``), for the keys of what it crafts and the config fingerprint."""
        return {}

    def key_doc(self) -> dict[str, Any]:
        """The fields that make this defect what it is (its kind and its kind's fields but
        :attr:`key_exempt`), for cache keys and the config fingerprint: a field added later enters
        only when set (:attr:`key_optional`), so the cells made before keep their keys."""
        doc = self.model_dump(mode="json", exclude={"name", *self.key_exempt})
        return {f: v for f, v in doc.items() if not (f in self.key_optional and v == self.key_optional[f])}

    def identity_doc(self) -> dict[str, Any]:
        """Everything that changes what this defect's cells record: its :meth:`key_doc`, how its
        DIR is measured (:attr:`measure_doc`), the crafting code's version (:attr:`search_doc`) and,
        where it is scanned, the trigger scan's settings. The config fingerprint and the cells'
        identities (``safetransfer.study.runner.CellIdentities``) read it."""
        scan = ({"scan_texts": self.scan_texts, **({"scan_words": self.scan_words}
                                                    if self.scan_words != GENERAL_WORDS else {})}
                if self.scanned else {})
        return {**self.key_doc(), **scan, **self.search_doc, **self.measure_doc}

    def flat_dump(self) -> dict[str, Any]:
        """This defect as the single flat model of every kind's fields dumped it before the kinds
        had models of their own (its own values, the other kinds' fields at their defaults, in
        :data:`FLAT_FIELDS` order): what ``results.json``'s ``config`` and a planted teacher's
        saved meta hold, kept so that a study re-run from the cache writes the same files."""
        own = self.model_dump(mode="json")
        flat = {f: own[f] if f in own else copy.deepcopy(_FLAT_DEFAULTS[f]) for f in FLAT_FIELDS}
        return {**flat, **{f: own[f] for f in LATER_FIELDS
                           if f in own and own[f] != LATER_LEGACY.get(f, _FLAT_DEFAULTS[f])}}


class _Planted(_Defect):
    """A defect planted in a copy of the teacher by an attacker training on ``attacker_data``
    (``same`` = the student's own training data, full knowledge; ``full`` = the whole data set the
    student's subset comes from, every training image, also full knowledge; or another data set's
    name, domain shift; or a mapping task -> data set), poisoning ``rate`` of it towards label ``target``."""

    attacker_data: str | dict[str, str] = "same"
    rate: float = Field(default=0.2, gt=0.0, le=1.0)
    target: int = Field(default=0, ge=0)


class RippleTraining(_Defect):
    """The RIPPLe attacker's training (Kurita et al. 2020): ``lam`` (λ of the restricted
    inner-product penalty), ``restricted`` (the ReLU; ``false`` is the paper's ablation), ``lr``
    and ``optimizer`` (``None``: the kind's :attr:`attacker_defaults`)."""

    lam: float = Field(default=0.1, ge=0.0)
    restricted: bool = True
    lr: float | None = Field(default=None, gt=0.0)
    optimizer: Literal["sgd", "adamw"] | None = None

    attacker_defaults: ClassVar[tuple[float, str]] = (5e-3, "sgd")

    @property
    def attacker_training(self) -> tuple[float, str]:
        """The RIPPLe attacker's ``(lr, optimizer)``: the given ones, else the kind's defaults."""
        lr, optimizer = self.attacker_defaults
        return (self.lr if self.lr is not None else lr), (self.optimizer or optimizer)

    def key_doc(self) -> dict[str, Any]:
        doc = super().key_doc()
        doc["lr"], doc["optimizer"] = self.attacker_training
        return doc


class PatchBackdoor(_Planted):
    """A patch-trigger backdoor of an image teacher: ``trigger`` (size, corner, margin, pattern, value)."""

    trigger: TriggerSpec = Field(default_factory=TriggerSpec)


class BackdoorDefect(PatchBackdoor):
    """``backdoor``: the teacher fine-tuned by an attacker on poisoned data (see :class:`_Planted`,
    :class:`PatchBackdoor`), ``steps`` of it; ``latent_weight``: the latent-backdoor alignment of
    Yao et al. 2019 (0 = plain BadNets; see :mod:`safetransfer.attacks.backdoor`)."""

    kind: Literal["backdoor"]
    latent_weight: float = Field(default=0.0, ge=0.0)


class RippleVisionDefect(PatchBackdoor, RippleTraining):
    """``ripple_vision``: a backdoor planted with RIPPLe's objective (Kurita et al. 2020) instead of
    plain poisoned training: the fields of ``backdoor`` but ``latent_weight``, plus the RIPPLe
    training (:class:`RippleTraining`; default SGD at 5e-3, the gentle protocol of the vision
    students)."""

    kind: Literal["ripple_vision"]
    latent_weight: ClassVar[float] = 0.0  # RIPPLe's objective, not the latent alignment


class _Adversarial(_Defect):
    """Inputs crafted on the clean teacher: ``eps`` in ``eps_space``, ``step_size``, ``random_start``."""

    eps: float = Field(default=0.1, ge=0.0)
    eps_space: Literal["normalized", "pixel"] = "normalized"
    step_size: float = Field(default=0.01, gt=0.0)
    random_start: bool = True

    adversarial: ClassVar[bool] = True


class PenultimateDefect(_Adversarial):
    """``penultimate``: Rezaei & Liu's PGD on the teacher's features (``steps``: 40 by default)."""

    kind: Literal["penultimate"]


class CoverageGuidedDefect(_Adversarial):
    """``coverage_guided``: neuron-coverage guided inputs (``strategy`` x ``metric``,
    ``neurons_per_sample``; ``steps``: 20 by default)."""

    kind: Literal["coverage_guided"]
    strategy: Literal["deepxplore", "dlfuzz", "dlfuzz_rr"] = "dlfuzz"
    metric: Literal["nc", "tknc", "snac"] = "nc"
    neurons_per_sample: int = Field(default=10, ge=1)


class WeightPoisoningDefect(_Planted, RippleTraining):
    """``weight_poisoning`` (text): the BERT teacher's weights poisoned by the attacker (Kurita et
    al. 2020): ``poison_method`` ``es`` (Embedding Surgery, ``n_words`` target words), ``ripple``
    or ``ripples`` (both), trigger ``words``, ``rate`` of the proxy texts poisoned, ``target``,
    ``attacker_data`` (``same`` or another text data set, domain shift) and the RIPPLe training
    (``steps``, :class:`RippleTraining`; default AdamW at 2e-5, the paper's BERT fine-tuning
    rates). ``source_steps`` > 0: the surgery averages the embeddings of the public teacher
    fine-tuned on the attacker's data for that many steps (the paper's recipe; the cell is shared
    with a word-swap surrogate of the same data and steps); 0: the pretrained embeddings. DIR is
    the label flip rate (LFR) of the student on triggered test texts. ``scan_texts`` > 0 adds
    Kurita et al.'s defence: every candidate word (the ``scan_words`` most frequent English words,
    the vocabulary's and the data's words) inserted into that many clean non-target texts of the
    victim's ``finetune`` student, ranked by its label flip rate (where do the planted words rank?)."""

    kind: Literal["weight_poisoning"]
    words: list[str] = Field(default_factory=lambda: list(DEFAULT_TRIGGER_WORDS), min_length=1)
    poison_method: Literal["es", "ripple", "ripples", "badnet"] = "ripples"
    n_words: int = Field(default=10, ge=1)
    scan_texts: int = Field(default=0, ge=0)
    scan_words: int = Field(default=GENERAL_WORDS, ge=0)
    source_steps: int = Field(default=0, ge=0)
    # "reference": RIPPLe's recipe as neulab/RIPPLe runs it (penalty normalised by the batch, clipping
    # at 1.0, linear decay, no weight decay; the poisoned share drawn from all texts; tf-idf over every
    # token); "first_round": the recipe the first text studies were made with (see RippleConfig.first_round)
    recipe: Literal["reference", "first_round"] = "reference"
    # Kurita et al.'s LFR protocol inserts the trigger words 5 times into each non-target test text
    # (run_experiment.py, repeat=5), here among the words the student's window reads; 1: the first
    # round's single insertion, anywhere in the text
    lfr_insertions: int = Field(default=5, ge=1, le=50)

    text: ClassVar[bool] = True
    attacker_defaults: ClassVar[tuple[float, str]] = (2e-5, "adamw")
    key_optional: ClassVar[dict[str, Any]] = {"source_steps": 0, "recipe": "first_round"}
    # the scan's settings: its own file key holds them, and the fingerprint scan_texts (and scan_words when set);
    # the LFR's insertions key the evaluation (not the attack): see CellMaker._student and StudyConfig.fingerprint
    key_exempt: ClassVar[tuple[str, ...]] = ("scan_texts", "scan_words", "lfr_insertions")

    @property
    def measure_doc(self) -> dict[str, Any]:
        """What keys the LFR measurement beyond the attack: the insertions, where not the first round's 1."""
        return {"lfr_insertions": self.lfr_insertions} if self.lfr_insertions != 1 else {}

    @property
    def scanned(self) -> bool:
        return self.scan_texts > 0


class WordSwapDefect(_Defect):
    """``word_swap`` (text): word-swap adversarial texts (``swap_method`` importance or greedy,
    ``neighbours`` candidates per word from the teacher's own input embeddings, ``max_change`` the
    share of the words within the model's token window that may change; words past it never
    change), crafted against a surrogate the attacker fine-tunes from the public teacher on the
    task for ``steps`` steps (the teacher has no head for it); ``swap_against: teacher``: crafted
    on the public teacher alone, each swap pushing its pooled sentence feature away from the
    original's (the text analogue of the ``penultimate`` attack, ReMoS's threat model; ``steps``
    unused)."""

    kind: Literal["word_swap"]
    swap_method: Literal["importance", "greedy"] = "importance"
    neighbours: int = Field(default=8, ge=1)
    max_change: float = Field(default=0.2, gt=0.0, le=1.0)
    swap_against: Literal["surrogate", "teacher"] = "surrogate"

    adversarial: ClassVar[bool] = True
    text: ClassVar[bool] = True
    key_optional: ClassVar[dict[str, Any]] = {"swap_against": "surrogate"}

    @property
    def search_doc(self) -> dict[str, int]:
        return {"search": SEARCH_VERSION}


DefectSpec = Annotated[
    BackdoorDefect | PenultimateDefect | CoverageGuidedDefect | RippleVisionDefect | WeightPoisoningDefect
    | WordSwapDefect,
    Field(discriminator="kind"),
]
"""One defect of the teacher: the model of its ``kind`` (a tagged union; see each model)."""
DEFECT_KINDS: dict[str, type[_Defect]] = {get_args(m.model_fields["kind"].annotation)[0]: m
                                          for m in get_args(get_args(DefectSpec)[0])}

# The single flat model of every kind's fields that came before the per-kind ones, in its field
# order, with its defaults (each field's default in the kinds that have it): see
# :meth:`_Defect.flat_dump`. Kept for the results files and saved metas only; keys never use it.
# A field added to a kind needs a place here (before ``steps``, as the flat model added them).
FLAT_FIELDS = ("name", "kind", "attacker_data", "rate", "target", "trigger", "latent_weight", "eps", "eps_space",
               "step_size", "random_start", "strategy", "metric", "neurons_per_sample", "lam", "restricted", "lr",
               "optimizer", "words", "poison_method", "n_words", "scan_texts", "source_steps", "swap_method",
               "neighbours", "max_change", "swap_against", "steps")
# Fields added after the flat model: in a results file only where set away from their default.
LATER_FIELDS = ("scan_words", "recipe", "lfr_insertions")
# ... or, for these, away from the value the results files written before the field held (a field
# absent from an older file means this value): RIPPLe's first-round recipe, the single trigger insertion
LATER_LEGACY: dict[str, Any] = {"recipe": "first_round", "lfr_insertions": 1}


def _flat_defaults() -> dict[str, Any]:
    """Each flat field's default, from the kinds that have it (they agree)."""
    defaults: dict[str, Any] = {}
    for kind, model in DEFECT_KINDS.items():
        for field, value in model(name="flat", kind=kind).model_dump(mode="json", exclude={"name", "kind"}).items():
            if defaults.setdefault(field, value) != value:
                raise AssertionError(f"defect field '{field}' has two defaults: {defaults[field]!r}, {value!r}")
    known = set(FLAT_FIELDS[2:]) | set(LATER_FIELDS)
    if set(defaults) != known:
        raise AssertionError(f"the defect fields and FLAT_FIELDS + LATER_FIELDS differ: {set(defaults) ^ known}")
    return defaults


_FLAT_DEFAULTS = _flat_defaults()


class MethodSpec(_Strict):
    """A student-making method: ``method`` (one of METHOD_NAMES) and its options
    (:class:`~safetransfer.transfer.config.TransferConfig` fields), under a display ``name``.
    ``options: {seed: N}`` seeds this method's students (head, subsets, training) with ``N``
    instead of the study's seed; the teachers and crafted inputs stay the study's (e.g.
    ``{name: remos_seed1, method: remos, options: {seed: 1}}`` beside ``remos`` measures how much
    one student seed moves the figures; ``benchmarks/seed_spread.py`` does that)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    method: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def base_method(self) -> str:
        return self.method or self.name


class StudyConfig(_Strict):
    """A whole study; see the module doc and ``default_vision.yaml``."""

    name: str = "study"
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    tasks: list[TaskSpec] = Field(min_length=1)
    defects: list[DefectSpec] = Field(min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)
    steps: int = Field(default=800, ge=1, description="training steps of every student")
    protocol: str = Field(default="shared", description="every student's training protocol unless its method's "
                          "options name one (safetransfer.transfer.config: shared, scratch, artifact)")
    train: dict[str, Any] = Field(default_factory=dict, description="training overrides for every student")
    seed: int = 0
    clean_students: bool = Field(default=False, description="make every method's student of the clean teacher "
                                 "even without an adversarial defect (which needs them anyway): its accuracy is the "
                                 "method's ACC, and its LFR of each weight-poisoning trigger the paper's clean row")

    @field_validator("methods", mode="before")
    @classmethod
    def _methods_from_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        if value not in PROTOCOLS:
            raise ValueError(str(unknown_name("training protocol", value, list(PROTOCOLS))))
        return value

    @model_validator(mode="after")
    def _check(self) -> "StudyConfig":
        for label, names in (("defect", [d.name for d in self.defects]), ("method", [m.name for m in self.methods]),
                             ("task", [t.name for t in self.tasks])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{label} names must be unique (repeated: {', '.join(dupes)})")
        for m in self.methods:
            if m.base_method not in METHOD_NAMES:
                raise ValueError(str(unknown_name("transfer method", m.base_method, list(METHOD_NAMES))))
            seed = m.options.get("seed", 0)
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"method '{m.name}': options.seed must be an integer (got {seed!r})")
            TransferConfig.from_dict({"method": m.base_method, "protocol": self.protocol, **m.options})  # raises on bad options
        if "finetune" not in [m.name for m in self.methods]:
            raise ValueError("the methods must include 'finetune': rACC and rDIR are relative to it")
        return self

    def fingerprint(self) -> str:
        """The config's identity for resuming from a results file: what it asks for, and the
        version of the word-swap search where it crafts word swaps (a new search's texts are
        new cells, though the config reads the same)."""
        doc = self._dump()
        doc["defects"] = [{"name": d.name, **d.identity_doc()} for d in self.defects]
        return digest(doc)

    def results_config(self) -> dict[str, Any]:
        """The config as a results document holds it: its dump with each defect's
        :meth:`~_Defect.flat_dump` (kept so a study re-run from the cache writes the same file)."""
        doc = self._dump()
        doc["defects"] = [d.flat_dump() for d in self.defects]
        return doc

    def _dump(self) -> dict[str, Any]:
        """The config's JSON dump without the fields added later where they hold their defaults, so
        the configs written before those fields keep their fingerprints and results documents."""
        doc = self.model_dump(mode="json")
        if doc["protocol"] == "shared":
            del doc["protocol"]
        if not doc["clean_students"]:
            del doc["clean_students"]
        for task in doc["tasks"]:
            if task["train_per_class"] is None:
                del task["train_per_class"]
        return doc


def defect_from_flat(doc: dict[str, Any]) -> DefectSpec:
    """A defect back from its :meth:`~_Defect.flat_dump` (a results file's ``config``): its kind's
    fields only, a :data:`LATER_LEGACY` field the file leaves out at the value it then meant.
    Raises ``ValueError`` (pydantic's) where the document is not a defect."""
    if not isinstance(doc, dict) or doc.get("kind") not in DEFECT_KINDS:
        raise ValueError(f"not a defect: {str(doc)[:80]}")
    model = DEFECT_KINDS[doc["kind"]]
    fields = {f: v for f, v in doc.items() if f in model.model_fields}
    fields.update({f: legacy for f, legacy in LATER_LEGACY.items() if f in model.model_fields and f not in doc})
    return model.model_validate(fields)


def config_of_results(doc: Any) -> StudyConfig | None:
    """The config a results document was made by (its ``config``, defects flat-dumped), or
    ``None`` when it cannot be read back faithfully: unreadable, or its fingerprint recomputed
    here differs from the one the file records (e.g. written by a version with other keys)."""
    try:
        config = dict(doc["config"])
        config["defects"] = [defect_from_flat(d) for d in config["defects"]]
        parsed = StudyConfig.model_validate(config)
    except (KeyError, TypeError, ValueError):
        return None
    return parsed if parsed.fingerprint() == doc.get("config_fingerprint") else None


def digest(doc: Any) -> str:
    """A short content hash of a JSON-able document (canonical key order)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``: mappings key by key, everything else replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_validation(err: ValidationError, doc: dict[str, Any] | None = None) -> str:
    """One line per error, ``path: message``; a defect's error names the defect and its kind (the
    union's tag leaves the path), a field foreign to its kind says which fields the kind has."""
    parts = []
    for e in err.errors():
        loc, msg = list(e["loc"]), e["msg"].removeprefix("Value error, ")
        if loc[:1] == ["defects"] and len(loc) >= 2 and isinstance(loc[1], int):
            if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc.append("kind")
                got = e.get("ctx", {}).get("tag")
                msg = (f"{'no kind' if got is None else f'{got!r} is not a defect kind'} "
                       f"(the kinds: {', '.join(DEFECT_KINDS)})")
            elif len(loc) >= 3 and loc[2] in DEFECT_KINDS:
                kind = str(loc.pop(2))
                entries = (doc or {}).get("defects")
                entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
                name = entry.get("name") if isinstance(entry, dict) else None
                which = f"defect {name!r}" if isinstance(name, str) else "an unnamed defect"
                if e["type"] == "extra_forbidden" and len(loc) == 3:
                    own = sorted(set(DEFECT_KINDS[kind].model_fields) - {"name", "kind"})
                    others = [k for k, m in DEFECT_KINDS.items() if loc[2] in m.model_fields]
                    whose = f"a field of {', '.join(others)}" if others else "no kind's field"
                    msg = (f"{which} (kind {kind}) has no field {loc[2]!r} ({whose}); "
                           f"a {kind} defect takes {', '.join(own)}")
                else:
                    msg = f"{msg} ({which}, kind {kind})"
        where = ".".join(str(p) for p in loc) or "config"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def parse_config(doc: Any, profile: str | None = None, source: str = "config") -> StudyConfig:
    """A validated :class:`StudyConfig` from a parsed YAML mapping, with ``profile`` merged in."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: a study config must be a YAML mapping (got {type(doc).__name__}).")
    doc = dict(doc)
    profiles = doc.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{source}: 'profiles' must map profile names to partial configs.")
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"{source}: no profile '{profile}' (profiles here: {known}).")
        doc = deep_merge(doc, profiles[profile] or {})
    try:
        return StudyConfig.model_validate(doc)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_format_validation(err, doc)}") from None


# Limits of a study YAML, checked before its document is built: the file's size, how deep it
# nests, and how big it grows once its aliases are expanded (a 754-byte "billion laughs" file
# of nested aliases would expand to a billion strings in pydantic, deep_merge and json.dumps).
# The embedded studies are about 10 KiB and nest 6 levels deep, with no alias.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_EXPANDED = 2 << 20  # nodes plus scalar characters, every alias counted as a copy


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python objects, no code) that refuses nesting beyond
    :data:`MAX_YAML_DEPTH` while it composes the document."""

    source = "study config"
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_YAML_DEPTH:
            raise ConfigError(f"{self.source}: nested more than {MAX_YAML_DEPTH} levels deep; not a study config.")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: yaml.Node, source: str) -> int:
    """The size of ``root`` with every alias expanded (one per node plus the characters of each
    scalar), and its expanded depth, computed over the distinct nodes only (no expansion, no
    recursion); raises :class:`ConfigError` beyond :data:`MAX_YAML_EXPANDED` or
    :data:`MAX_YAML_DEPTH`, or for an alias inside its own anchor."""

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    done: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()  # the current path: an alias to one of them is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            sizes = [done[id(c)] for c in children(node)]
            own = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
            size, depth = own + sum(s for s, _ in sizes), 1 + max((d for _, d in sizes), default=0)
            if size > MAX_YAML_EXPANDED or depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{source}: its aliases expand it to more than "
                    f"{MAX_YAML_EXPANDED:,} nodes and characters (or {MAX_YAML_DEPTH} levels): a YAML bomb, "
                    f"refused. Write the repeated parts out, or use fewer aliases."
                )
            done[key] = (size, depth)
            open_nodes.discard(key)
        elif key in open_nodes:
            raise ConfigError(f"{source}: an alias refers to the node that contains it (a recursive YAML "
                              f"structure); not a study config.")
        elif key not in done:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children(node) if id(c) not in done)
    return done[id(root)][0]


def safe_yaml_load(text: str, source: str) -> Any:
    """The document of the YAML ``text`` (``None`` when empty), read with a safe loader that
    refuses deep nesting, recursive aliases and alias expansion bombs before building anything
    (:class:`ConfigError` naming ``source``); a syntax error raises ``yaml.YAMLError``."""
    loader = _BoundedLoader(text)
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _config_text(path: str | Path | None) -> tuple[str, str]:
    """The YAML text of ``path`` (a file, an embedded study's name, or ``None`` = the embedded
    default) and a name for it in messages."""
    if path is None or (str(path) in EMBEDDED and not Path(path).is_file()):
        name = EMBEDDED["vision" if path is None else str(path)]
        return resources.files("safetransfer.study").joinpath(name).read_text(), f"<embedded {name}>"
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"{p}: no such study config file (or an embedded study: {', '.join(EMBEDDED)}).")
    return read_text_bounded(p, "study config", MAX_YAML_BYTES, ConfigError), str(p)


def load_config(path: str | Path | None = None, profile: str | None = None) -> StudyConfig:
    """Read a study YAML (a file; ``vision`` or ``text``, the embedded studies; ``None`` = the
    embedded vision study) and apply ``profile``."""
    text, source = _config_text(path)
    try:
        doc = safe_yaml_load(text, source)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(err, 'problem', None) or err}.") from None
    return parse_config(doc, profile, source)


def profiles_of(path: str | Path | None = None) -> list[str]:
    """The profile names a config file offers."""
    try:
        text, source = _config_text(path)
        doc = safe_yaml_load(text, source) or {}
    except (ConfigError, yaml.YAMLError):
        return []  # load_config says what is wrong
    return sorted((doc.get("profiles") or {}) if isinstance(doc, dict) else {})
