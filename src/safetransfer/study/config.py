"""The study's configuration: one YAML file says the teacher, the student tasks, the defects,
the transfer methods, seeds and budgets (validated with pydantic; unknown keys are errors).

A config may carry ``profiles``: named partial configs deep-merged over the base (mappings
merge key by key; lists and scalars replace), e.g. ``quick`` for a demo run and ``full`` for
the whole study. The embedded default lives in ``default_vision.yaml`` next to this module.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safetransfer.attacks.text_triggers import DEFAULT_TRIGGER_WORDS
from safetransfer.errors import ConfigError
from safetransfer.safe_paths import read_text_bounded

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

    ``limit_train`` / ``limit_test``: seeded subsets (``None`` = all). ``eval_samples``:
    test inputs (a seeded subset) on which defects are crafted and DIR measured.
    """

    data: str
    path: str | None = None
    limit_train: int | None = Field(default=None, ge=1)
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


_ADVERSARIAL_FIELDS = ("eps", "eps_space", "step_size", "random_start", "steps")
FIELDS_BY_KIND: dict[str, tuple[str, ...]] = {
    "backdoor": ("attacker_data", "rate", "target", "trigger", "latent_weight", "steps"),
    "ripple_vision": ("attacker_data", "rate", "target", "trigger", "steps", "lam", "restricted", "lr", "optimizer"),
    "penultimate": _ADVERSARIAL_FIELDS,
    "coverage_guided": (*_ADVERSARIAL_FIELDS, "strategy", "metric", "neurons_per_sample"),
    "weight_poisoning": ("attacker_data", "rate", "target", "words", "poison_method", "n_words", "steps", "lam",
                         "restricted", "lr", "optimizer", "source_steps"),
    "word_swap": ("swap_method", "neighbours", "max_change", "steps", "swap_against"),
}
# the RIPPLe attacker's (lr, optimizer) by kind: the gentle protocol of the vision students; the
# paper's AdamW at BERT fine-tuning rates for text
ATTACKER_TRAINING: dict[str, tuple[float, str]] = {"ripple_vision": (5e-3, "sgd"), "weight_poisoning": (2e-5, "adamw")}
ADVERSARIAL_KINDS = ("penultimate", "coverage_guided", "word_swap")  # crafted on the teacher; the rest is planted
TEXT_KINDS = ("weight_poisoning", "word_swap")


class DefectSpec(_Strict):
    """One defect of the teacher.

    - ``backdoor``: the teacher fine-tuned by an attacker on poisoned data (``attacker_data``:
      ``same`` = the student's own data set, full knowledge; or another data set's name,
      domain shift), ``rate``, ``target``, ``trigger``, ``steps`` (attacker's fine-tuning),
      ``latent_weight`` (the latent-backdoor alignment of Yao et al. 2019, 0 = plain BadNets;
      see :mod:`safetransfer.attacks.backdoor`).
    - ``penultimate``: Rezaei & Liu's PGD on the teacher's features (``eps`` in ``eps_space``,
      ``steps``, ``step_size``).
    - ``coverage_guided``: neuron-coverage guided inputs (``strategy`` x ``metric``).
    - ``ripple_vision``: a backdoor planted with RIPPLe's objective (Kurita et al. 2020) instead of
      plain poisoned training: the same fields as ``backdoor``, plus ``lam`` (λ of the
      restricted inner-product penalty), ``restricted`` (the ReLU; ``false`` is the paper's
      ablation), ``lr`` and ``optimizer`` of the attacker's training (default SGD at 5e-3).
    - ``weight_poisoning`` (text): the BERT teacher's weights poisoned by the attacker (Kurita et
      al. 2020): ``poison_method`` ``es`` (Embedding Surgery, ``n_words`` target words),
      ``ripple`` or ``ripples`` (both), trigger ``words``, ``rate`` of the proxy texts poisoned,
      ``target``, ``attacker_data`` (``same`` or another text data set, domain shift) and the
      RIPPLe training (``steps``, ``lam``, ``restricted``, ``lr``, ``optimizer``; default AdamW at
      2e-5). ``source_steps`` > 0: the surgery averages the embeddings of the public teacher
      fine-tuned on the attacker's data for that many steps (the paper's recipe; the cell is
      shared with a word-swap surrogate of the same data and steps); 0: the pretrained
      embeddings. DIR is the
      label flip rate (LFR) of the student on triggered test texts. ``scan_texts`` > 0 adds
      Kurita et al.'s defence: every vocabulary word inserted into that many clean non-target
      test texts of the victim's ``finetune`` student, ranked by its label flip rate (where do
      the planted words rank?).
    - ``word_swap`` (text): word-swap adversarial texts (``swap_method`` importance or greedy,
      ``neighbours`` candidates per word from the teacher's own input embeddings, ``max_change``
      the share of the words within the model's token window that may change; words past it
      never change), crafted against a surrogate the attacker fine-tunes
      from the public teacher on the task for ``steps`` steps (the teacher has no head for it);
      ``swap_against: teacher``: crafted on the public teacher alone, each swap pushing its pooled
      sentence feature away from the original's (the text analogue of the ``penultimate`` attack,
      ReMoS's threat model; ``steps`` unused).
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["backdoor", "penultimate", "coverage_guided", "ripple_vision", "weight_poisoning", "word_swap"]
    # backdoor
    attacker_data: str | dict[str, str] = "same"
    rate: float = Field(default=0.2, gt=0.0, le=1.0)
    target: int = Field(default=0, ge=0)
    trigger: TriggerSpec = Field(default_factory=TriggerSpec)
    latent_weight: float = Field(default=0.0, ge=0.0)
    # adversarial
    eps: float = Field(default=0.1, ge=0.0)
    eps_space: Literal["normalized", "pixel"] = "normalized"
    step_size: float = Field(default=0.01, gt=0.0)
    random_start: bool = True
    strategy: Literal["deepxplore", "dlfuzz", "dlfuzz_rr"] = "dlfuzz"
    metric: Literal["nc", "tknc", "snac"] = "nc"
    neurons_per_sample: int = Field(default=10, ge=1)
    # ripple_vision
    lam: float = Field(default=0.1, ge=0.0)
    restricted: bool = True
    lr: float | None = Field(default=None, gt=0.0)  # None: the kind's default (ATTACKER_TRAINING)
    optimizer: Literal["sgd", "adamw"] | None = None
    # text
    words: list[str] = Field(default_factory=lambda: list(DEFAULT_TRIGGER_WORDS), min_length=1)
    poison_method: Literal["es", "ripple", "ripples"] = "ripples"
    n_words: int = Field(default=10, ge=1)
    scan_texts: int = Field(default=0, ge=0)  # weight_poisoning: Kurita's trigger scan of the finetune student
    source_steps: int = Field(default=0, ge=0)  # weight_poisoning: Embedding Surgery's fine-tuned source (0: pretrained)
    swap_method: Literal["importance", "greedy"] = "importance"
    neighbours: int = Field(default=8, ge=1)
    max_change: float = Field(default=0.2, gt=0.0, le=1.0)
    swap_against: Literal["surrogate", "teacher"] = "surrogate"  # word_swap: the model the swaps are crafted on
    # all: the attacker's training steps (backdoor, weight poisoning, word-swap surrogate) or
    # attack iterations (penultimate, coverage-guided)
    steps: int | None = Field(default=None, ge=1)

    @property
    def adversarial(self) -> bool:
        return self.kind in ADVERSARIAL_KINDS

    @property
    def text(self) -> bool:
        return self.kind in TEXT_KINDS

    @property
    def scanned(self) -> bool:
        return self.kind == "weight_poisoning" and self.scan_texts > 0

    @property
    def search_doc(self) -> dict[str, int]:
        """The version of the code that crafts this defect's inputs, where it has one (a word swap:
        ``SEARCH_VERSION``), for the keys of what it crafts and the config fingerprint."""
        if self.kind != "word_swap":
            return {}
        from safetransfer.attacks.word_swap import SEARCH_VERSION

        return {"search": SEARCH_VERSION}

    @property
    def attacker_training(self) -> tuple[float, str]:
        """The RIPPLe attacker's ``(lr, optimizer)``: the given ones, else the kind's defaults."""
        lr, optimizer = ATTACKER_TRAINING.get(self.kind, ATTACKER_TRAINING["ripple_vision"])
        return (self.lr if self.lr is not None else lr), (self.optimizer or optimizer)

    def key_doc(self) -> dict[str, Any]:
        """The fields that make this defect what it is (those of its kind), for cache keys and the
        config fingerprint: a field that another kind uses, or one added later, changes no key here."""
        doc = self.model_dump(mode="json")
        doc["lr"], doc["optimizer"] = self.attacker_training
        # fields added later enter the key only when set, so the cells made before keep their keys
        optional = {"source_steps": 0, "swap_against": "surrogate"}
        return {"kind": self.kind, **{f: doc[f] for f in FIELDS_BY_KIND[self.kind]
                                      if not (f in optional and doc[f] == optional[f])}}


class MethodSpec(_Strict):
    """A student-making method: ``method`` (one of the seven) and its options
    (:class:`~safetransfer.transfer.base.TransferConfig` fields), under a display ``name``.
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
    train: dict[str, Any] = Field(default_factory=dict, description="training overrides for every student")
    seed: int = 0

    @field_validator("methods", mode="before")
    @classmethod
    def _methods_from_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> "StudyConfig":
        from safetransfer.transfer.base import METHODS, TransferConfig

        for label, names in (("defect", [d.name for d in self.defects]), ("method", [m.name for m in self.methods]),
                             ("task", [t.name for t in self.tasks])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{label} names must be unique (repeated: {', '.join(dupes)})")
        for m in self.methods:
            if m.base_method not in METHODS:
                from safetransfer.errors import unknown_name

                raise ValueError(str(unknown_name("transfer method", m.base_method, list(METHODS))))
            seed = m.options.get("seed", 0)
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"method '{m.name}': options.seed must be an integer (got {seed!r})")
            TransferConfig.from_dict({"method": m.base_method, **m.options})  # raises on bad options
        if "finetune" not in [m.name for m in self.methods]:
            raise ValueError("the methods must include 'finetune': rACC and rDIR are relative to it")
        return self

    def fingerprint(self) -> str:
        """The config's identity for resuming from a results file: what it asks for, and the
        version of the word-swap search where it crafts word swaps (a new search's texts are
        new cells, though the config reads the same)."""
        doc = self.model_dump(mode="json")
        doc["defects"] = [{"name": d.name, **d.key_doc(), **({"scan_texts": d.scan_texts} if d.scanned else {}),
                           **d.search_doc}
                          for d in self.defects]
        return digest(doc)


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


def _format_validation(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
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
        raise ConfigError(f"{source}: {_format_validation(err)}") from None


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
