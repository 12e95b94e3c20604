"""BM25 over a handful of short texts (the kept turns of one owner), and reciprocal rank fusion with cosine ranks.

Tokens are runs of ASCII letters and digits, lower-cased, of 3 characters or more: the same on the JVM
(`android_demo/core/.../Lexical.java`) to the bit, which a Unicode-aware rule (Python's and Java's `\\w` and
lower-casing differ) would not be. Text in other scripts has no lexical tokens and is ranked by cosine alone.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import numpy as np

K1, B = 1.2, 0.75
RRF_K = 60
"""Reciprocal rank fusion: score = 1 / (RRF_K + cosine rank) + 1 / (RRF_K + BM25 rank), ranks from 1."""
_TOKEN = re.compile(r"[a-z0-9]{3,}")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.translate(_LOWER))


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def bm25(query: str, docs: Sequence[str]) -> np.ndarray:
    """BM25 (k1 1.2, b 0.75, idf log(1 + (N - df + 0.5) / (df + 0.5))) of each doc for the query's tokens."""
    toks = [tokens(d) for d in docs]
    n = len(toks)
    out = np.zeros(n)
    if not n:
        return out
    avg = sum(len(t) for t in toks) / n or 1.0
    df = Counter(w for t in toks for w in set(t))
    q = tokens(query)
    for i, t in enumerate(toks):
        tf = Counter(t)
        s = 0.0
        for w in q:
            f = tf.get(w, 0)
            if f:
                idf = math.log(1.0 + (n - df[w] + 0.5) / (df[w] + 0.5))
                s += idf * f * (K1 + 1.0) / (f + K1 * (1.0 - B + B * len(t) / avg))
        out[i] = s
    return out


def fuse(cosine: np.ndarray, lexical: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(index, fused score) of the k best by reciprocal rank fusion of the two scores, best first; ties (within each
    ranking and in the fusion) in index order."""
    n = len(cosine)
    if not n or k <= 0:
        return []
    rc = np.empty(n)
    rc[np.argsort(-np.asarray(cosine), kind="stable")] = np.arange(1, n + 1)
    rl = np.empty(n)
    rl[np.argsort(-np.asarray(lexical), kind="stable")] = np.arange(1, n + 1)
    fused = [1.0 / (RRF_K + rc[i]) + 1.0 / (RRF_K + rl[i]) for i in range(n)]
    order = sorted(range(n), key=lambda i: -fused[i])  # stable: ties in index order
    return [(i, fused[i]) for i in order[:k]]
