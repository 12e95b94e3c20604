"""The fidelity figures: answer span, pooling over prompts, forced vs answer agreement."""

import numpy as np

from exporter.validate import answer_length, summarise


def one_hot(tokens, vocab=8, scale=5.0):
    x = np.zeros((len(tokens), vocab), dtype=np.float32)
    x[np.arange(len(tokens)), tokens] = scale
    return x


def test_answer_length_stops_at_first_stop_token():
    assert answer_length(np.array([3, 4, 2, 5, 2]), {2}) == 3
    assert answer_length(np.array([3, 4, 5]), {2}) == 3
    assert answer_length(np.array([0, 1]), {0, 2}) == 1


def test_summarise_pools_answer_positions_and_keeps_forced_figure():
    # Prompt A: the answer is 3 tokens (stop id 2 at position 2); the exported program differs only after it.
    ref_a, got_a = one_hot([3, 4, 2, 5, 6, 7]), one_hot([3, 4, 2, 1, 1, 1])
    # Prompt B: no stop within N; one of six positions differs.
    ref_b, got_b = one_hot([5, 5, 5, 5, 5, 5]), one_hot([5, 5, 1, 5, 5, 5])
    got_b[0, 5] += 0.25
    r = summarise([(ref_a, got_a), (ref_b, got_b)], {2}, 6)
    assert r["prompts"] == 2 and r["answer_tokens"] == 3 + 6
    assert r["token_agreement"] == round(8 / 9, 4)  # 3/3 on A + 5/6 on B
    assert r["token_agreement_forced"] == round(8 / 12, 4)  # A's three post-stop positions all differ
    assert r["max_abs_logit_diff"] == 5.0
    # Without stop tokens the two figures coincide.
    r = summarise([(ref_a, got_a)], set(), 6)
    assert r["token_agreement"] == r["token_agreement_forced"] == 0.5


def test_reference_job_matches_in_process_reference_and_a_dead_worker_is_one_error(tiny_llama, llama_adapters):
    """The export's fidelity reference, computed in a spawned process while the program lowers, is the reference
    computed here; a worker that dies fails with one ExportError instead of a hang."""
    import os
    import signal

    import pytest

    from exporter.errors import ExportError
    from exporter.load import load_adapter, load_base
    from exporter.pipeline import SideJobs, reference_for
    from exporter.spec import ExportSpec

    spec = ExportSpec.from_dict({"model": {"base": str(tiny_llama)}, "embedder": {"enabled": False}})
    adapters = {op: load_adapter(op, p) for op, p in llama_adapters.items()}
    work = {op: ([[1, 5, 9, 2], [7, 3]], 5) for op in adapters}
    with SideJobs(spec, adapters, work) as job:
        got = job.reference()
    want = reference_for(load_base(str(tiny_llama)).model, adapters, work)
    assert set(got) == set(want) == set(adapters)
    for op in adapters:
        for (gt, gl), (wt, wl) in zip(got[op], want[op], strict=True):
            assert gt.tolist() == wt.tolist() and gl.shape == (5, wl.shape[1])
            np.testing.assert_allclose(gl, wl, atol=1e-4)
    assert not np.allclose(got["extract"][0][1], got["update"][0][1])  # each op ran with its own adapter
    with SideJobs(spec, adapters, work) as job:
        for proc in job._pool._processes.values():
            os.kill(proc.pid, signal.SIGKILL)
        with pytest.raises(ExportError, match="reference process died"):
            job.reference()
