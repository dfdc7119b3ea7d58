"""General English words and their corpus frequencies, the candidates and the x-axis of the trigger scan.

Kurita, Michel & Neubig (ACL 2020, §6) plot each word's label flip rate against its frequency in
a large general corpus (the RIPPLe repository ships book and Wikipedia word counts for it): a
trigger is a word with an extreme flip rate that is rare in English. A word list taken from the
victim's own data misses a trigger the data never contains, and gives every planted word the
same frequency, 0.

The words and frequencies are wordfreq 3.1.1's English ``large`` list (Speer 2022; Wikipedia,
subtitles, news, books, web text, Twitter and Reddit, to 2021), installed with the package: no
download at run time. Frequencies are on the Zipf scale, ``log10`` of a word's occurrences per
billion words: 7 for "the", 3 for a word seen once per million words, 0 for a word wordfreq
does not know (a nonsense trigger).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from wordfreq import top_n_list, zipf_frequency

from safetransfer.errors import ConfigError

LANGUAGE = "en"
WORDLIST = "large"
WORD = re.compile(r"^[a-z][a-z']*$")
"""A candidate word: lower-case letters (and apostrophes), no digits, no punctuation."""


def general_english_words(n: int) -> list[str]:
    """The ``n`` most frequent words of general English, most frequent first, as candidates
    (those matching :data:`WORD`; a few of the ``n`` are numbers or symbols and are left out)."""
    if n < 0:
        raise ConfigError(f"the number of general English words must be >= 0 (got {n}).")
    return [w for w in top_n_list(LANGUAGE, n, wordlist=WORDLIST) if WORD.match(w)] if n else []


def zipf_frequencies(words: Sequence[str]) -> np.ndarray:
    """Each word's general-English frequency on the Zipf scale (0 for an unknown word)."""
    return np.array([zipf_frequency(w, LANGUAGE, wordlist=WORDLIST) for w in words], dtype=np.float64)
