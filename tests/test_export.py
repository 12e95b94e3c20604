"""Exports of tiny random llama / gemma3 models through the real pipeline, run by the real ExecuTorch runtime."""

from pathlib import Path

import numpy as np
import pytest

from exporter.pipeline import run
from exporter.spec import AdapterSpec, EmbedderSpec, ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec
from runtimes.executorch import ExecuTorchRuntime
from runtimes.manifest import load_manifest


def export(base, out, adapters=None, strategy=None, quant="fp32", tokens=16, seq=256):
    spec = ExportSpec(model=ModelSpec(base=str(base), max_seq_len=seq),
                      adapters=AdapterSpec(paths={k: str(v) for k, v in (adapters or {}).items()}, strategy=strategy),
                      quant=QuantSpec(quant), output=OutputSpec(str(out)), fidelity=FidelitySpec(tokens=tokens),
                      embedder=EmbedderSpec(enabled=False))  # the embedder has its own test (test_memory_embed.py)
    return run(spec)["manifest"]


def sizes(m):
    return sum(e["bytes"] for e in m["files"].values())


@pytest.fixture(scope="module")
def separate_fp32(tmp_path_factory, tiny_llama, llama_adapters):
    out = tmp_path_factory.mktemp("b") / "sep_fp32"
    return out, export(tiny_llama, out, llama_adapters, "separate", "fp32")


@pytest.fixture(scope="module")
def merged_fp32(tmp_path_factory, tiny_llama, llama_adapters):
    out = tmp_path_factory.mktemp("b") / "merged_fp32"
    return out, export(tiny_llama, out, llama_adapters, "merged", "fp32")


def test_separate_bundle_layout(separate_fp32):
    # One lowering serves every op: one program, the shared foundation, one small LoRA data file per op.
    out, m = separate_fp32
    ops = ("extract", "update", "generate")
    assert set(m["files"]) == {"model.pte", "foundation.ptd", "tokenizer.json", *(f"{op}.lora.ptd" for op in ops)}
    for op in ops:
        e = m["ops"][op]
        assert e["program"] == "model.pte" and e["data_files"] == ["foundation.ptd", f"{op}.lora.ptd"]
        assert e["prompt_template"] == f"memlora.{op}.v1" and e["stop_token_ids"]
        assert e["adapter"]["rank"] in (4, 8)
        # the adapters' union (every linear of both layers) at the largest rank, 8
        assert e["lowering"]["lora_slots"] == {"modules": 2 * 7, "max_rank": 8}
    assert m["versions"]["executorch"] == "1.5.1" and m["strategy"] == "separate"
    load_manifest(out)  # every checksum verifies
    # The program carries only the graph; the foundation holds the base weights once, each op file its LoRA.
    foundation = m["files"]["foundation.ptd"]["bytes"]
    assert m["files"]["model.pte"]["bytes"] < foundation / 2
    assert all(m["files"][f"{op}.lora.ptd"]["bytes"] < foundation / 50 for op in ops)


def test_separate_foundation_does_not_depend_on_the_adapters(tmp_path, tiny_llama, llama_adapters, separate_fp32):
    # Other adapters (another LoRA layout, another rank) leave foundation.ptd byte for byte as it was.
    from runtimes.manifest import sha256_file

    out, m = separate_fp32
    one = export(tiny_llama, tmp_path / "one", {"extract": llama_adapters["extract"]}, "separate", "fp32", tokens=4)
    assert one["ops"]["extract"]["lowering"]["lora_slots"] == {"modules": 2 * 2, "max_rank": 4}
    assert one["ops"]["extract"]["fidelity"]["token_agreement"] == 1.0
    assert sha256_file(tmp_path / "one" / "foundation.ptd") == sha256_file(out / "foundation.ptd")


def test_lora_slots_pad_with_zeros():
    import torch

    from exporter.adapters import lora_slots, slot_weights
    from exporter.load import Adapter

    a = Adapter("a", Path("a"), 2, 4.0, 2.0, ["q_proj"], {(0, "q_proj"): (torch.ones(2, 3), torch.ones(5, 2))})
    b = Adapter("b", Path("b"), 4, 4.0, 1.0, ["v_proj"], {(1, "v_proj"): (torch.ones(4, 3), torch.ones(5, 4))})
    slots = lora_slots([a, b])
    assert slots == {(0, "q_proj"): 2, (1, "v_proj"): 4}
    names = {"q.a": (0, "q_proj", "a"), "q.b": (0, "q_proj", "b"), "v.a": (1, "v_proj", "a"), "v.b": (1, "v_proj", "b")}
    shapes = {"q.a": (2, 3), "q.b": (5, 2), "v.a": (4, 3), "v.b": (5, 4)}
    w = slot_weights(a, slots, names, shapes)
    assert torch.equal(w["q.b"], torch.full((5, 2), 2.0)) and not w["v.a"].any() and not w["v.b"].any()
    wide = {"q.a": (4, 3), "q.b": (5, 4), **{k: shapes[k] for k in ("v.a", "v.b")}}
    w = slot_weights(a, {(0, "q_proj"): 4, (1, "v_proj"): 4}, names, wide)  # rank 2 in a rank-4 slot
    assert torch.equal(w["q.b"] @ w["q.a"], 2.0 * torch.ones(5, 2) @ torch.ones(2, 3))
    assert not w["q.a"][2:].any() and not w["q.b"][:, 2:].any()


def test_merged_data_files_refuse_a_key_in_two(separate_fp32, tmp_path):
    from runtimes.executorch import merge_data_files
    from runtimes.manifest import BundleError

    out, _ = separate_fp32
    merge_data_files([out / "foundation.ptd", out / "extract.lora.ptd"], tmp_path / "ok.ptd")
    with pytest.raises(BundleError, match="is in two of"):
        merge_data_files([out / "extract.lora.ptd", out / "update.lora.ptd"], tmp_path / "bad.ptd")


def test_fp32_fidelity_matches_peft_reference(separate_fp32, merged_fp32):
    for _, m in (separate_fp32, merged_fp32):
        for op, e in m["ops"].items():
            assert e["fidelity"]["token_agreement"] == 1.0, op
            assert e["fidelity"]["max_abs_logit_diff"] < 1e-4, op


def test_separate_and_merged_agree_and_adapters_differ(separate_fp32, merged_fp32):
    sep = ExecuTorchRuntime.from_bundle(separate_fp32[0])
    mer = ExecuTorchRuntime.from_bundle(merged_fp32[0])
    ids = sep.encode(prompt="Where does Caroline live?")
    logits = {}
    for op in ("extract", "update", "generate"):
        a, b = sep.forward(op, ids, 0), mer.forward(op, ids, 0)
        assert np.abs(a - b).max() < 1e-3
        logits[op] = a
    # Each op really carries its own adapter: the programs disagree with each other.
    assert np.abs(logits["extract"] - logits["update"]).max() > 1e-2
    assert np.abs(logits["extract"] - logits["generate"]).max() > 1e-2


def test_storage_separate_vs_merged(tmp_path, tiny_llama, llama_adapters, separate_fp32):
    # One merged program is the size of the base; three are ~3x. Separate is ~1x base + small LoRA programs.
    _, sep = separate_fp32
    merged = export(tiny_llama, tmp_path / "m", llama_adapters, "merged", "int4", tokens=4)
    sep4 = export(tiny_llama, tmp_path / "s", llama_adapters, "separate", "int4", tokens=4)
    per_op = [merged["files"][f"{op}.pte"]["bytes"] for op in ("extract", "update", "generate")]
    weights_sep = sizes(sep4) - sep4["files"]["tokenizer.json"]["bytes"]
    assert weights_sep < 0.5 * sum(per_op)
    assert weights_sep < 1.5 * max(per_op)
    # int4 linears are delegated to XNNPACK: no quantized matmul is left to the portable CPU kernels.
    for m in (merged, sep4):
        for e in m["ops"].values():
            assert e["lowering"]["delegated_ops"]["cpu_matmuls"] == 0
            assert e["lowering"]["quantized_modules"]["8da4w"] > 0
            assert e["lowering"]["quantized_modules"]["emb8"] == 1
            assert e["lowering"]["quantized_modules"]["8da8w"] == 1  # the LM head stays 8-bit in int4


def test_int8_is_delegated_not_folded(tmp_path, tiny_llama):
    m = export(tiny_llama, tmp_path / "i8", quant="int8", tokens=8)
    assert set(m["files"]) == {"base.pte", "tokenizer.json"}
    lowering = m["ops"]["generate"]["lowering"]
    assert lowering["quantized_modules"]["8da8w"] == 2 * 4 + 1  # per layer qkv, o, gate_up, down (fused) + lm_head
    assert lowering["delegated_ops"]["cpu_matmuls"] == 0
    # int8 weights stay int8 on disk: about a quarter of fp32 for this model's linears + embedding.
    fp32 = export(tiny_llama, tmp_path / "f32", quant="fp32", tokens=8)
    assert m["files"]["base.pte"]["bytes"] < 0.4 * fp32["files"]["base.pte"]["bytes"]


def test_gemma3_separate_exports_and_matches(tmp_path, tiny_gemma3):
    from tests.conftest import make_adapter

    a = make_adapter(tiny_gemma3, tmp_path / "ga", ("q_proj", "down_proj"))
    m = export(tiny_gemma3, tmp_path / "g", {"generate": a}, "separate", "fp32", seq=256)
    assert m["model"]["architecture"] == "gemma3"
    f = m["ops"]["generate"]["fidelity"]
    assert f["token_agreement"] == 1.0 and f["max_abs_logit_diff"] < 1e-4


def test_gemma3_rejects_context_beyond_sliding_window(tmp_path, tiny_gemma3):
    from exporter.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="sliding_window=256"):
        export(tiny_gemma3, tmp_path / "g", seq=512)
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("arch,quant,int4_weights", [("llama", "int4", "asymmetric"), ("gemma3", "int8", "symmetric")])
def test_faster_lowering_is_byte_identical(tmp_path, tiny_llama, tiny_gemma3, llama_adapters, arch, quant,
                                           int4_weights):
    # executorch_xnnpack.faster_lowering + xnnpack_partitioner (decoder partitions skip the XNNPACK passes that find
    # nothing in them, the graph is re-sorted in place, one decomposition re-trace instead of three): the program and
    # both data files come out byte for byte as ExecuTorch's own code writes them.
    from exporter.adapters import lora_slots, with_lora_slots
    from exporter.arch import ArchConfig, build_decoder
    from exporter.fuse import fuse_projections
    from exporter.load import load_adapter, load_base
    from exporter.quant import quantize
    from exporter.targets.executorch_xnnpack import ExecuTorchXnnpack, example_inputs

    base = load_base(str(tiny_llama if arch == "llama" else tiny_gemma3))
    dec = build_decoder(ArchConfig.from_hf(base.config, 256), base.model.state_dict())
    if arch == "llama":
        dec, _ = with_lora_slots(dec, lora_slots([load_adapter(op, p) for op, p in llama_adapters.items()]))
    fuse_projections(dec)
    quantize(dec, QuantSpec(quant, int4_weights=int4_weights))
    files = {}
    for as_shipped in (False, True):
        out = tmp_path / str(as_shipped)
        out.mkdir()
        res = ExecuTorchXnnpack().lower(dec, example_inputs(), separate=arch == "llama", out_dir=out,
                                        program_name="model", as_shipped=as_shipped)
        files[as_shipped] = {p.name: p.read_bytes() for p in out.iterdir()}
        if not as_shipped:  # every partition of the decoder took the short pass list
            assert res["xnnpack_passes"].get("decoder", 0) >= dec.cfg.n_layers * 3
            assert "all" not in res["xnnpack_passes"]
    assert set(files[False]) == set(files[True]) == ({"model.pte", "foundation.ptd", "lora.ptd"} if arch == "llama"
                                                     else {"model.pte"})
    for name, data in files[True].items():
        assert files[False][name] == data, name


def test_decoder_partition_test_sends_other_graphs_to_every_pass():
    import torch

    from exporter.targets.executorch_xnnpack import is_decoder_partition

    class Op:  # an edge op, as XNNPACK's passes see it: by its __name__
        def __init__(self, name):
            self.__name__ = name

        def __call__(self, *args):
            raise NotImplementedError

    def one_op(name, n_inputs=2):
        g = torch.fx.Graph()
        x = g.placeholder("x")
        args = ([x] * n_inputs, 1) if name == "aten.cat.default" else (x,) * n_inputs
        g.output(g.call_function(Op(name), args))
        return g

    assert is_decoder_partition(one_op("aten.linear.default"))
    assert is_decoder_partition(one_op("aten.cat.default", 5))
    for name, n in [("aten.convolution.default", 3), ("aten.relu.default", 1), ("aten.cat.default", 6),
                    ("aten._native_batch_norm_legit_no_training.default", 5)]:
        assert not is_decoder_partition(one_op(name, n)), name
