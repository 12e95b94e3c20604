"""BM25 and reciprocal rank fusion for the kept turns (runtimes.memory.lexical), against hand-computed values."""

import math

import numpy as np
import pytest

from runtimes.memory import lexical


def test_tokens_are_ascii_words_of_three_or_more():
    assert lexical.tokens("Caroline's PIZZA, at 9pm in Zürich: 2023!") == ["caroline", "pizza", "9pm", "rich", "2023"]
    assert lexical.tokens("кот ест рыбу") == []  # other scripts: cosine alone ranks them


def test_bm25_matches_the_formula():
    docs = ["Ann: pizza pizza night", "Bob: salad", "Ann: pizza"]
    s = lexical.bm25("pizza?", docs)
    n, avg, df = 3, (4 + 2 + 2) / 3, 2  # tokens: ann pizza pizza night / bob salad / ann pizza
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    want = [idf * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * ln / avg)) if f else 0.0 for f, ln in ((2, 4), (0, 2), (1, 2))]
    assert s == pytest.approx(want, rel=1e-12)
    assert s[1] == 0 and s[0] > s[2] > 0
    assert lexical.bm25("pizza", []).size == 0


def test_fusion_ranks_and_ties():
    cos = np.array([0.9, 0.1, 0.5, 0.5])
    lex = np.array([0.0, 3.0, 0.0, 1.0])
    hits = lexical.fuse(cos, lex, 4)
    # cosine ranks 1, 4, 2, 3; BM25 ranks 3, 1, 4, 2 (equal scores in index order)
    want = {i: 1 / (60 + c) + 1 / (60 + b) for i, (c, b) in enumerate(((1, 3), (4, 1), (2, 4), (3, 2)))}
    assert [i for i, _ in hits] == sorted(want, key=lambda i: -want[i])
    assert [s for _, s in hits] == pytest.approx(sorted(want.values(), reverse=True))
    assert lexical.fuse(cos, lex, 0) == [] and lexical.fuse(np.array([]), np.array([]), 3) == []
