"""bench/merge_eval.py: runs that each evaluated some conversations pool into what one run over all of them reports
(micro-averaged over questions, windows and calls), and runs with other settings or the same conversation refuse."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from merge_eval import merge  # noqa: E402

CONFIG = {"backend": "reference", "model": "m", "adapters": None, "embedder": "torch", "data": "d.json", "split": "val",
          "window": 6, "update_batch": 4, "top_k": 10, "answer_turns": 5, "turn_ranking": "hybrid",
          "constrained": True, "add_to_empty_store": True, "max_new_tokens": None, "match_threshold": 0.6,
          "max_sessions": None, "max_questions": None}


def run(sample_id, f1s, ok, counts, **config):
    call = {"ms": 10.0, "prompt_tokens": 100, "new_tokens": 20, "stop_reason": "stop_token"}
    return {"config": {**CONFIG, **config}, "details": [{
        "sample_id": sample_id, "sessions": 2, "windows": len(ok), "questions": len(f1s), "seconds": 5.0,
        "memorise_seconds": 4.0, "memories": 3, "extraction_counts": dict(zip(("pred", "gold", "matched"), counts)),
        "calls": [{**call, "op": "extract", "ok": o} for o in ok],
        "qa": [{"category": c, "f1": f, "bleu1": f / 2} for c, f in f1s]}]}


def test_merge_pools_per_question_and_refuses_mixed_runs():
    a = run("c1", [(4, 1.0), (4, 0.0), (2, 0.5)], [True, True, False], (10, 8, 6))
    b = run("c2", [(4, 1.0)], [True], (5, 12, 3))
    rep = merge([a, b])
    assert rep["qa"]["overall"]["n"] == 4 and rep["qa"]["overall"]["f1"] == pytest.approx(2.5 / 4)  # not (0.5+1)/2
    assert rep["qa"]["4"]["f1"] == pytest.approx(2 / 3) and rep["qa"]["2"]["n"] == 1
    assert rep["json_validity"]["extract"]["valid"] == 3 and rep["json_validity"]["extract"]["calls"] == 4
    e = rep["extraction"]
    assert (e["pred"], e["gold"], e["matched"]) == (15, 20, 9) and e["precision"] == pytest.approx(9 / 15)
    assert [c["sample_id"] for c in rep["conversations"]] == ["c1", "c2"] and rep["config"]["model"] == "m"
    with pytest.raises(SystemExit, match="differ in .*answer_turns"):
        merge([a, run("c2", [(4, 1.0)], [True], (5, 12, 3), answer_turns=0)])
    with pytest.raises(SystemExit, match="more than one run"):
        merge([a, a])
