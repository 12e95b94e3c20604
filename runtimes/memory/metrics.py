"""Scores of memlora-eval. Pure Python + numpy.

QA (LoCoMo / Mem0 definitions):
- tokens: `str(x).lower()`, every ASCII punctuation character replaced by a space, split on whitespace;
- F1: over token *sets*: p = |P ∩ R| / |P|, r = |P ∩ R| / |R|, F1 = 2pr / (p + r) (0 when either side is empty);
- BLEU-1: clipped unigram precision times the brevity penalty min(1, exp(1 - |R| / |P|)), with NLTK's smoothing
  method1 for no match (0.1 / |P|), as `sentence_bleu(weights=(1, 0, 0, 0), smoothing_function=method1)` gives on
  these tokens.

Extraction (our definition): a predicted fact matches a gold `observation` fact of the same window when the cosine of
their all-MiniLM-L6-v2 embeddings is >= `threshold` (default 0.6); matching is one-to-one, greedy by decreasing
cosine. Precision = matched predictions / predictions, recall = matched gold facts / gold facts (micro-averaged
over windows by the caller, who sums the counts).
"""

from __future__ import annotations

import math
import string
from collections import Counter
from typing import Any, Sequence

import numpy as np

_PUNCT = str.maketrans({c: " " for c in string.punctuation})
FACT_MATCH_THRESHOLD = 0.6


def tokens(text: Any) -> list[str]:
    return str(text).lower().translate(_PUNCT).split()


def f1(prediction: Any, reference: Any) -> float:
    p, r = set(tokens(prediction)), set(tokens(reference))
    common = len(p & r)
    if not p or not r or not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def bleu1(prediction: Any, reference: Any) -> float:
    p, r = tokens(prediction), tokens(reference)
    if not p or not r:
        return 0.0
    ref_counts = Counter(r)
    matches = sum(min(c, ref_counts[t]) for t, c in Counter(p).items())
    precision = matches / len(p) if matches else 0.1 / len(p)
    bp = 1.0 if len(p) > len(r) else math.exp(1 - len(r) / len(p))
    return bp * precision


def match_facts(pred: np.ndarray, gold: np.ndarray, threshold: float = FACT_MATCH_THRESHOLD) -> list[tuple[int, int, float]]:
    """One-to-one greedy matching of unit-norm embedding rows by cosine >= threshold: [(pred_i, gold_j, cos)]."""
    if len(pred) == 0 or len(gold) == 0:
        return []
    sims = np.asarray(pred, dtype=np.float32) @ np.asarray(gold, dtype=np.float32).T
    pairs = sorted(((float(sims[i, j]), i, j) for i in range(sims.shape[0]) for j in range(sims.shape[1])
                    if sims[i, j] >= threshold), reverse=True)
    used_p, used_g, out = set(), set(), []
    for s, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            out.append((i, j, s))
    return out


def prf(matched: int, n_pred: int, n_gold: int) -> dict[str, float]:
    p = matched / n_pred if n_pred else 0.0
    r = matched / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0
