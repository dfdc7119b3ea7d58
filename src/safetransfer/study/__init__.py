"""Inheritance studies: a YAML config, a cached and resumable runner, the results document."""

from safetransfer.study.config import StudyConfig, load_config, parse_config
from safetransfer.study.runner import StudyRunner, assemble_results, run_study

__all__ = ["StudyConfig", "StudyRunner", "assemble_results", "load_config", "parse_config", "run_study"]
