"""ONNX exports of tiny random llama / gemma3 models through the real pipeline (ORT GenAI model builder), run by the
real onnxruntime-genai runtime and held against the PyTorch + PEFT reference."""

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from exporter.pipeline import run
from exporter.spec import AdapterSpec, ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec
from runtimes.manifest import load_manifest
from runtimes.onnx import AdapterFileError, OnnxRuntime, check_adapter_params

OPS = ("extract", "update", "generate")


def export(base, out, adapters=None, strategy=None, quant="fp32", tokens=16, seq=256, fmt="onnx", accuracy_level=4,
           **quant_options):
    spec = ExportSpec(model=ModelSpec(base=str(base), max_seq_len=seq),
                      adapters=AdapterSpec(paths={k: str(v) for k, v in (adapters or {}).items()}, strategy=strategy),
                      quant=QuantSpec(quant, accuracy_level=accuracy_level, **quant_options),
                      output=OutputSpec(str(out)),
                      fidelity=FidelitySpec(tokens=tokens), target="host", format=fmt)
    return run(spec)["manifest"]


def graph(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=False)


def weight_bytes(m) -> int:
    return sum(e["bytes"] for f, e in m["files"].items() if f != "tokenizer.json" and not f.endswith(".json"))


def test_spec_format_and_accuracy_level():
    from exporter.errors import SpecError

    assert ExportSpec(format="both").format == "both" and ExportSpec(format="onnx").quant.accuracy_level == 4
    assert ExportSpec.from_dict({"format": "onnx", "quant": {"accuracy_level": 1}}).quant.accuracy_level == 1
    with pytest.raises(SpecError, match=r"format must be one of \['executorch', 'onnx', 'both'\], got 'tflite'"):
        ExportSpec(format="tflite")
    with pytest.raises(SpecError, match=r"quant.accuracy_level must be one of \[1, 4\], got 2"):
        QuantSpec(accuracy_level=2)


@pytest.fixture(scope="module")
def sep_fp32(tmp_path_factory, tiny_llama, llama_adapters):
    out = tmp_path_factory.mktemp("onnx") / "sep_fp32"
    return out, export(tiny_llama, out, llama_adapters, "separate", "fp32")


@pytest.fixture(scope="module")
def sep_int4(tmp_path_factory, tiny_llama, llama_adapters):
    out = tmp_path_factory.mktemp("onnx") / "sep_int4"
    return out, export(tiny_llama, out, llama_adapters, "separate", "int4", tokens=8)


@pytest.fixture(scope="module")
def base_int4(tmp_path_factory, tiny_llama):
    out = tmp_path_factory.mktemp("onnx") / "base_int4"
    return out, export(tiny_llama, out, None, None, "int4", tokens=8)


def test_separate_layout_and_manifest(sep_fp32):
    out, m = sep_fp32
    assert set(m["files"]) == {"foundation.onnx", "foundation.onnx.data", "genai_config.json", "tokenizer.json",
                               *(f"{op}.onnx_adapter" for op in OPS)}
    assert m["format"] == "onnx" and m["strategy"] == "separate" and m["versions"]["onnxruntime-genai"]
    info = m["backends"]["onnx"]
    assert info["lora"]["ranks"] == {"extract": 4, "update": 4, "generate": 8} and set(info["lora"]["modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    for op in OPS:
        e = m["ops"][op]["backends"]["onnx"]
        assert e == {**e, "program": "foundation.onnx", "data_files": ["foundation.onnx.data"],
                     "adapter_file": f"{op}.onnx_adapter"}
        assert m["ops"][op]["program"] == "foundation.onnx"  # ONNX-only bundle: the primary program is the graph
    loaded = load_manifest(out)  # every checksum verifies, every op's files are listed
    assert loaded.ops["update"].backends["onnx"]["adapter_file"] == "update.onnx_adapter"
    # The LoRA weights are graph inputs [in, r] / [r, out] with a symbolic rank and an empty (rank-0) default, so the
    # foundation stores no LoRA bytes; the base linears are initializers only.
    g = graph(out / "foundation.onnx")
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in g.graph.input}
    lora = info["lora_inputs"]
    # One LoRA path per projection the builder emitted: packed QKV, o_proj, fused gate/up, down_proj.
    assert info["lora"]["groups"] == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert set(lora) <= set(inputs) and len(lora) == 2 * 4 * 2
    assert inputs["model.layers.1.mlp.down_proj.lora_A.MatMul.weight"] == [128, "lora_rank_1_down_proj"]
    assert lora["model.layers.1.mlp.down_proj.lora_B.MatMul.weight"] == [None, 64]
    defaults = {i.name: list(i.dims) for i in g.graph.initializer if i.name in lora}
    assert defaults["model.layers.0.attn.qkv_proj.lora_A.MatMul.weight"] == [64, 0]
    assert defaults["model.layers.0.attn.qkv_proj.lora_B.MatMul.weight"] == [0, 64 + 32 + 32]
    assert not any("lora" not in n and n.endswith(".MatMul.weight") for n in inputs)


def test_separate_fp32_matches_peft_per_op(sep_fp32):
    _, m = sep_fp32
    for op in OPS:
        f = m["ops"][op]["fidelity"]
        assert f["token_agreement"] == 1.0 and f["max_abs_logit_diff"] < 1e-4, (op, f)


def test_adapter_switching_fresh_generator_per_op(sep_fp32):
    out, _ = sep_fp32
    rt = OnnxRuntime.from_bundle(out)
    ids = rt.encode(prompt="Where does Caroline live?")
    first = {op: rt.forward(op, ids, 0) for op in OPS}
    # Each op carries its own adapter...
    assert np.abs(first["extract"] - first["update"]).max() > 1e-2
    assert np.abs(first["extract"] - first["generate"]).max() > 1e-2
    # ... and switching back and forth (a fresh generator each time) reproduces the same logits: no state leaks.
    for op in ("generate", "extract", "update", "extract"):
        assert np.abs(rt.forward(op, ids, 0) - first[op]).max() < 1e-5, op
    g = rt.generate("update", prompt="Caroline moved to Denver.", max_new_tokens=6)
    assert len(g.tokens) == 6 and g.stats.adapter_switch_ms > 0 and g.stats.decode_tok_s > 0
    pieces = [p for p in rt.stream("update", prompt="Caroline moved to Denver.", max_new_tokens=6) if isinstance(p, str)]
    assert "".join(pieces) == g.text


def test_int4_graph_and_fidelity(sep_int4, base_int4):
    out, m = sep_int4
    g = graph(out / "foundation.onnx")
    ops = [n for n in g.graph.node]
    nbits = [n for n in ops if n.op_type == "MatMulNBits"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nbits[0].attribute}
    assert attrs["bits"] == 4 and attrs["block_size"] == 32 and attrs["accuracy_level"] == 4
    assert len(nbits) == 2 * 4 + 1  # per layer packed QKV, o, fused gate/up, down; + the LM head
    # The LM head is 8-bit (quant.lm_head_bits) and the tied embedding gathers from that same weight, stored once.
    head = next(n for n in nbits if "logits" in n.output)
    assert {a.name: onnx.helper.get_attribute_value(a) for a in head.attribute}["bits"] == 8
    gbq = [n for n in ops if n.op_type == "GatherBlockQuantized"]
    assert len(gbq) == 1 and gbq[0].input[2] == head.input[2]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in gbq[0].attribute}["bits"] == 8
    assert sum(1 for t in g.graph.initializer if t.name == head.input[1]) == 1
    assert "int8" in m["backends"]["onnx"]["quantization"]["lm_head"]
    # The LoRA path stays float MatMul.
    lora = [n for n in ops if "/lora_" in n.name]
    assert lora and {n.op_type for n in lora} == {"MatMul"}
    for op in OPS:  # random tiny weights: int4 moves logits; bounded, and the program clearly tracks the reference
        f = m["ops"][op]["fidelity"]
        assert f["max_abs_logit_diff"] < 1.5 and f["token_agreement"] >= 0.25, (op, f)
    # With no adapter active the foundation graph is the bare base: zero-default LoRA inputs add nothing.
    rt, base = OnnxRuntime.from_bundle(out), OnnxRuntime.from_bundle(base_int4[0])
    ids = rt.encode(prompt="Where does Caroline live?")
    rt.ensure_loaded("extract")
    gen = rt._models["foundation.onnx"]
    import onnxruntime_genai as og

    p = og.GeneratorParams(gen)
    p.set_search_options(max_length=256)
    bare = og.Generator(gen, p)
    bare.append_tokens(np.asarray(ids, dtype=np.int32))
    assert np.abs(bare.get_logits().reshape(-1) - base.forward("generate", ids, 0)).max() < 1e-3


def test_separate_storage_is_one_base_plus_small_adapters(sep_int4, base_int4):
    _, sep = sep_int4
    _, base = base_int4
    adapters = sum(sep["files"][f"{op}.onnx_adapter"]["bytes"] for op in OPS)
    # The foundation is the base plus the LoRA graph (empty defaults); the adapters hold the LoRA weights.
    foundation = sep["files"]["foundation.onnx.data"]["bytes"] + sep["files"]["foundation.onnx"]["bytes"]
    assert foundation < 1.03 * (base["files"]["base.onnx.data"]["bytes"] + base["files"]["base.onnx"]["bytes"])
    assert adapters < 0.1 * weight_bytes(base)


def test_blockwise_int8_is_q8_0():
    """A Q8_0 weight (llama.cpp: d = max|w| / 127 per block of 32, codes round(w / d)) comes back code for code."""
    from exporter.targets.onnx_graph import blockwise_int8

    rng = np.random.default_rng(0)
    d = rng.uniform(1e-3, 1e-2, (64, 4, 1)).astype(np.float32)
    q = rng.integers(-127, 128, (64, 4, 32))
    q[:, :, 0] = 127 * np.sign(rng.standard_normal((64, 4)))  # each block reaches +-127, as Q8_0 blocks do
    w = (d * q).astype(np.float32).reshape(64, 128)
    codes, scales = blockwise_int8(w, 32)
    assert codes.dtype == np.uint8 and codes.shape == (64, 4, 32) and scales.shape == (64, 4)
    np.testing.assert_array_equal(codes.astype(int) - 128, q)
    np.testing.assert_allclose(((codes.astype(np.float32) - 128) * scales[..., None]).reshape(64, 128), w, rtol=1e-6)
    assert blockwise_int8(np.zeros((2, 32), np.float32), 32)[0].tolist() == [[[128] * 32]] * 2  # zero block: no NaN


@pytest.fixture(scope="module")
def gguf_like_llama(tmp_path_factory, tiny_llama):
    """The tiny llama with its weights on a GGUF grid, like the embedded SmolLM2: every layer linear on Q4_1 (w = d * q
    + m per group of 32, q in 0..15), the tied embedding / LM head on Q8_0 (w = d * q, |q| <= 127)."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("gguf_like") / "llama"
    shutil.copytree(tiny_llama, out)
    path = out / "model.safetensors"
    tensors = load_file(str(path))
    for name, w in tensors.items():
        g = w.float().reshape(w.shape[0], -1, 32) if w.ndim == 2 else None
        if g is None:
            continue
        if ".layers." in name:
            lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
            d = (hi - lo) / 15
            tensors[name] = (torch.round((g - lo) / d) * d + lo).reshape(w.shape).contiguous()
        elif "embed_tokens" in name or "lm_head" in name:
            d = g.abs().amax(-1, keepdim=True) / 127
            tensors[name] = (torch.round(g / d) * d).reshape(w.shape).contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})
    return out


def test_int4_reproduces_a_q4_1_source_exactly(tmp_path, gguf_like_llama):
    """Default int4 (asymmetric codes + group offsets, 8-bit head) with fp32 activations reproduces a Q4_1 / Q8_0
    source to float rounding; the builder's plain symmetric int4 re-rounds it."""
    m = export(gguf_like_llama, tmp_path / "exact", quant="int4", tokens=8, accuracy_level=1)
    f = m["ops"]["generate"]["fidelity"]
    assert f["max_abs_logit_diff"] < 1e-3 and f["token_agreement_forced"] == 1.0, f
    q = m["backends"]["onnx"]["quantization"]
    assert "asymmetric" in q["linear"] and "int8" in q["lm_head"]
    g = graph(tmp_path / "exact" / "base.onnx").graph
    offsets = [n for n in g.node if n.name.endswith("/offset/Add")]
    assert len(offsets) == 2 * 4  # every body projection: packed QKV, o, fused gate/up, down
    sums = {n.input[1] for n in g.node if n.name.endswith("/offset/GroupSum")}
    assert len(sums) == 2  # one 0/1 group-sum matrix per input width (hidden, intermediate), shared by all layers
    m = export(gguf_like_llama, tmp_path / "sym", quant="int4", tokens=8, accuracy_level=1, int4_weights="symmetric",
               lm_head_bits=4)
    sym = m["ops"]["generate"]["fidelity"]
    assert sym["max_abs_logit_diff"] > 100 * f["max_abs_logit_diff"], (sym, f)
    assert not any("/offset/" in n.name for n in graph(tmp_path / "sym" / "base.onnx").graph.node)
    assert "symmetric" in m["backends"]["onnx"]["quantization"]["linear"]


def test_merged_int4_one_graph_per_op(tmp_path, tiny_llama, llama_adapters):
    m = export(tiny_llama, tmp_path / "m", llama_adapters, "merged", "int4", tokens=8, lm_head_bits=4)
    head = next(n for n in graph(tmp_path / "m" / "extract.onnx").graph.node if "logits" in n.output)
    assert {a.name: onnx.helper.get_attribute_value(a) for a in head.attribute}["bits"] == 4  # the builder's head
    assert "int4" in m["backends"]["onnx"]["quantization"]["lm_head"]
    # Merged LoRA deltas are far below one 4-bit step: merged programs keep the symmetric grid (quant.int4_weights_for)
    assert not any("/offset/" in n.name for n in graph(tmp_path / "m" / "extract.onnx").graph.node)
    assert "symmetric" in m["backends"]["onnx"]["quantization"]["linear"]
    assert {f for f in m["files"] if f.endswith(".onnx")} == {f"{op}.onnx" for op in OPS}
    for op in OPS:
        e = m["ops"][op]["backends"]["onnx"]
        assert e["program"] == f"{op}.onnx" and "adapter_file" not in e
        assert m["ops"][op]["fidelity"]["max_abs_logit_diff"] < 1.5
        g = graph(tmp_path / "m" / f"{op}.onnx")
        assert not any("lora" in n.name for n in g.graph.node)  # folded in, quantized with the base weight


def test_int8_variant(tmp_path, tiny_llama):
    INT8_VARIANT = QuantSpec.int8_variant  # the spec's default

    m = export(tiny_llama, tmp_path / "i8", quant="int8", tokens=8)
    g = graph(tmp_path / "i8" / "base.onnx")
    types = {n.op_type for n in g.graph.node}
    if INT8_VARIANT == "matmulnbits":
        nb = [n for n in g.graph.node if n.op_type == "MatMulNBits"]
        assert nb and all(onnx.helper.get_attribute_value(a) == 8 for n in nb for a in n.attribute if a.name == "bits")
    else:
        assert "DynamicQuantizeMatMul" in types or "MatMulInteger" in types
    f = m["ops"]["generate"]["fidelity"]
    assert f["max_abs_logit_diff"] < 0.1 and f["token_agreement"] >= 0.75, f  # int8 stays close even on random weights
    assert m["backends"]["onnx"]["quantization"]["int8_variant"] == INT8_VARIANT


def test_gemma3_separate_within_sliding_window(tmp_path, tiny_gemma3):
    from tests.conftest import make_adapter

    a = make_adapter(tiny_gemma3, tmp_path / "ga", ("q_proj", "down_proj"))
    # max_seq_len 128 < sliding_window 256: the graph's KV cache is sized to the window (GQA needs it).
    m = export(tiny_gemma3, tmp_path / "g", {"generate": a}, "separate", "fp32", seq=128)
    assert m["model"]["architecture"] == "gemma3" and m["model"]["max_seq_len"] == 128
    assert m["backends"]["onnx"]["max_length"] == 256
    f = m["ops"]["generate"]["fidelity"]
    assert f["token_agreement"] == 1.0 and f["max_abs_logit_diff"] < 1e-4, f


def test_both_formats_agree(tmp_path, tiny_llama):
    m = export(tiny_llama, tmp_path / "both", quant="fp32", fmt="both", tokens=12)
    assert {"base.pte", "base.onnx", "base.onnx.data", "genai_config.json"} <= set(m["files"])
    for op in OPS:
        e = m["ops"][op]
        assert e["program"] == "base.pte" and e["backends"]["executorch"]["program"] == "base.pte"
        assert e["backends"]["onnx"]["program"] == "base.onnx"
        x = e["backends"]["onnx"]["vs_executorch"]
        assert x["token_agreement"] == 1.0 and x["max_abs_logit_diff"] < 1e-3, (op, x)
        assert e["backends"]["onnx"]["fidelity"]["max_abs_logit_diff"] < 1e-4
    from runtimes.executorch import ExecuTorchRuntime

    et, ox = ExecuTorchRuntime.from_bundle(tmp_path / "both"), OnnxRuntime.from_bundle(tmp_path / "both")
    a = et.generate("generate", prompt="Hi", max_new_tokens=8)
    b = ox.generate("generate", prompt="Hi", max_new_tokens=8)
    assert a.tokens == b.tokens


def test_adapter_params_checked_against_graph():
    a, b = "model.layers.0.attn.q_proj.lora_A.MatMul.weight", "model.layers.0.attn.q_proj.lora_B.MatMul.weight"
    sig = {a: [64, None], b: [None, 64]}
    ok = {a: np.zeros((64, 8), np.float32), b: np.zeros((8, 64), np.float32)}
    check_adapter_params("x", 7, ok, sig, 7)
    with pytest.raises(AdapterFileError, match="another foundation graph"):
        check_adapter_params("x", 8, ok, sig, 7)
    with pytest.raises(AdapterFileError, match=r"has shape \[32, 8\], the foundation graph's input is \[64, 'r'\]"):
        check_adapter_params("x", 7, {**ok, a: np.zeros((32, 8), np.float32)}, sig, 7)
    with pytest.raises(AdapterFileError, match="different ranks"):
        check_adapter_params("x", 7, {**ok, b: np.zeros((4, 64), np.float32)}, sig, 7)
    with pytest.raises(AdapterFileError, match="has no lora_B"):
        check_adapter_params("x", 7, {a: ok[a]}, sig, 7)
    with pytest.raises(AdapterFileError, match="float32"):
        check_adapter_params("x", 7, {**ok, a: ok[a].astype(np.float16)}, sig, 7)
    with pytest.raises(AdapterFileError, match="not LoRA inputs"):
        check_adapter_params("x", 7, {**ok, "model.layers.9.mlp.up_proj.lora_A.MatMul.weight": ok[a]}, sig, 7)
    half = {k: v.astype(np.float16) for k, v in ok.items()}
    check_adapter_params("x", 7, half, sig, 7, "float16")  # a bundle exported with quant.lora_dtype fp16
    with pytest.raises(AdapterFileError, match=f"{a} is float32, the graph expects float16"):
        check_adapter_params("x", 7, ok, sig, 7, "float16")
    # fp16 layout of a packed projection: A [in, n * r], B [r, out]
    packed = {a: half[a], b: half[b][:4]}
    check_adapter_params("x", 7, packed, sig, 7, "float16", {"model.layers.0.attn.q_proj": 2})
    with pytest.raises(AdapterFileError, match="different ranks"):
        check_adapter_params("x", 7, packed, sig, 7, "float16", {"model.layers.0.attn.q_proj": 3})


def test_fp16_lora_small_adapter_files_same_outputs(tmp_path, sep_fp32, tiny_llama, llama_adapters):
    from exporter.errors import SpecError

    out32, m32 = sep_fp32
    m16 = export(tiny_llama, tmp_path / "sep16", llama_adapters, "separate", "fp32", lora_dtype="fp16")
    info = m16["backends"]["onnx"]
    assert info["lora"]["dtype"] == "float16" and "fp16 weights" in info["quantization"]["lora"]
    # Half the bytes per weight, and packed projections (QKV [64 -> 64 + 32 + 32], gate/up [64 -> 128 + 128]) store
    # each module's B rows once ([r, out]) instead of a block-diagonal B; their A keeps a zero block for a module the
    # adapter leaves out. Weights per layer / r, fp16 vs fp32: extract (q, v) 64*3 + 128 vs 64*2 + 2*128; update
    # (q, k, o, down) 64*3 + 128 + 128 + 192 vs 64*2 + 2*128 + 128 + 192; generate (v, gate, up) 64*3 + 128 + 64*2 +
    # 256 vs 64 + 128 + 64*2 + 2*256.
    from runtimes.onnx import read_adapter

    want = {"extract": (320, 384), "update": (640, 704), "generate": (704, 832)}
    for op in OPS:
        f = f"{op}.onnx_adapter"
        n16, n32 = (sum(v.nbytes for v in read_adapter(d / f)[1].values()) for d in (tmp_path / "sep16", out32))
        assert n16 / n32 == pytest.approx(want[op][0] * 2 / (want[op][1] * 4)), op
        assert m16["files"][f]["bytes"] < 0.5 * m32["files"][f]["bytes"], op  # names and headers included
        assert m16["ops"][op]["fidelity"]["token_agreement"] == 1.0
        assert m16["ops"][op]["fidelity"]["max_abs_logit_diff"] < 1e-2
    assert info["lora_blocks"] == {f"model.layers.{i}.{s}": n for i in range(2)
                                   for s, n in (("attn.qkv_proj", 3), ("mlp.gate_up_proj", 2))}
    g = graph(tmp_path / "sep16" / "foundation.onnx").graph
    lora = {i.name: i.type.tensor_type.elem_type for i in g.input if ".lora_" in i.name}
    assert lora and set(lora.values()) == {onnx.TensorProto.FLOAT16}
    casts = [n for n in g.node if n.op_type == "Cast" and n.input[0] in lora]
    assert len(casts) == len(lora)  # each fp16 weight is cast to fp32 once, where it enters the path
    assert info["lora_inputs"]["model.layers.0.attn.qkv_proj.lora_B.MatMul.weight"] == [None, 128]
    assert sum(n.op_type == "Mul" and n.name.endswith("lora_B/Blocks") for n in g.node) == 4
    # Same logits as the fp32 bundle, op by op, through the runtime (which checks each file's dtype at load).
    rt16, rt32 = OnnxRuntime.from_bundle(tmp_path / "sep16"), OnnxRuntime.from_bundle(out32)
    ids = rt16.encode(prompt="Where does Caroline live?")
    for op in OPS:
        assert np.abs(rt16.forward(op, ids, 0) - rt32.forward(op, ids, 0)).max() < 1e-2, op
    # With no adapter active the empty defaults still add exactly nothing (the masks spread a [0, out] B).
    import onnxruntime_genai as og

    p = og.GeneratorParams(rt16._models["foundation.onnx"])
    p.set_search_options(max_length=128)
    bare = og.Generator(rt16._models["foundation.onnx"], p)
    bare.append_tokens(np.asarray(ids, dtype=np.int32))
    rt32.ensure_loaded("extract")
    p32 = og.GeneratorParams(rt32._models["foundation.onnx"])
    p32.set_search_options(max_length=128)
    bare32 = og.Generator(rt32._models["foundation.onnx"], p32)
    bare32.append_tokens(np.asarray(ids, dtype=np.int32))
    assert np.abs(bare.get_logits() - bare32.get_logits()).max() < 1e-5
    for bad in ({"format": "executorch"}, {"adapters": {"paths": {"extract": "a"}, "strategy": "merged"}}):
        with pytest.raises(SpecError, match="lora_dtype fp16 applies to the ONNX adapter files of a separate bundle"):
            ExportSpec.from_dict({"format": "onnx", "quant": {"lora_dtype": "fp16"},
                                  "adapters": {"paths": {"extract": "a"}}, **bad})


# ------------------------------------------------------------------------------------------- bad inputs, via CLIs

def run_cli(capsys, main, prog, args):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"{prog}: error:")]
    assert code == 1 and len(errors) == 1 and err[-1] == errors[0], err
    assert not any("Traceback" in line for line in err)
    return errors[0]


def test_cli_adapter_for_another_base(capsys, tmp_path, tiny_llama, tiny_gemma3):
    from exporter.cli import main
    from tests.conftest import make_adapter

    other = make_adapter(tiny_gemma3, tmp_path / "gemma_adapter", ("q_proj",))
    out = tmp_path / "bundle"
    msg = run_cli(capsys, main, "memlora-export", ["--base", str(tiny_llama), "--format", "onnx", "--target", "host",
                                                  "--adapter", f"extract={other}", "--out", str(out)])
    assert "trained for another base" in msg
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.")]


@pytest.fixture
def bundle_copy(tmp_path, sep_fp32):
    dst = tmp_path / "copy"
    shutil.copytree(sep_fp32[0], dst)
    return dst


@pytest.mark.parametrize("verify", [True, False])
def test_cli_adapter_file_for_another_graph(capsys, bundle_copy, tmp_path, sep_int4, verify):
    from runtimes.cli import main

    shutil.copy(sep_int4[0] / "extract.onnx_adapter", bundle_copy / "extract.onnx_adapter")
    args = [str(bundle_copy), "--op", "extract", "--prompt", "hi", "--max-new-tokens", "2"]
    msg = run_cli(capsys, main, "memlora-run", args + ([] if verify else ["--no-verify"]))
    assert ("sha256 mismatch" in msg) if verify else ("exported for another foundation graph" in msg), msg


@pytest.mark.parametrize("verify", [True, False])
def test_cli_missing_external_data(capsys, bundle_copy, verify):
    from runtimes.cli import main

    (bundle_copy / "foundation.onnx.data").unlink()
    args = [str(bundle_copy), "--op", "update", "--prompt", "hi", "--max-new-tokens", "2"]
    msg = run_cli(capsys, main, "memlora-run", args + ([] if verify else ["--no-verify"]))
    assert "foundation.onnx.data" in msg and "missing" in msg, msg


@pytest.mark.parametrize("verify", [True, False])
def test_cli_truncated_external_data(capsys, bundle_copy, verify):
    from runtimes.cli import main

    data = bundle_copy / "foundation.onnx.data"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    args = [str(bundle_copy), "--op", "update", "--prompt", "hi", "--max-new-tokens", "2"]
    msg = run_cli(capsys, main, "memlora-run", args + ([] if verify else ["--no-verify"]))
    assert "foundation.onnx.data" in msg and "truncated" in msg, msg
