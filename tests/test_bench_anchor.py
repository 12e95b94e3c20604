"""bench/anchor_llamacpp.py's PEFT -> GGUF LoRA conversion, checked against the embedded GGUF itself: a LoRA B that
writes q or k rows must be in the GGUF's permuted row order, which is the order of its own q / k weights."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.real


def test_gguf_lora_rows_follow_the_ggufs_own_q_k_order(tmp_path):
    import gguf
    from gguf.quants import dequantize

    sys.path.insert(0, str(ROOT / "bench"))
    from anchor_llamacpp import _permute, default_gguf, gguf_heads, peft_to_gguf_lora

    from exporter.load import EMBEDDED, embedded_adapters, load_adapter, load_base

    path = default_gguf()
    n_head, n_kv = gguf_heads(path)
    assert (n_head, n_kv) == (9, 3)
    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    hf = load_base("smollm2-135m").model.state_dict()
    for mod, gname, heads in (("q_proj", "attn_q", n_head), ("k_proj", "attn_k", n_kv), ("v_proj", "attn_v", None)):
        t = tensors[f"blk.3.{gname}.weight"]
        stored = dequantize(t.data, t.tensor_type).reshape(hf[f"model.layers.3.self_attn.{mod}.weight"].shape)
        w = hf[f"model.layers.3.self_attn.{mod}.weight"].numpy()
        mapped = _permute(w, heads) if heads else w
        np.testing.assert_allclose(mapped, stored, atol=1e-6)  # the permutation the LoRA B rows get
        if heads:
            assert not np.allclose(w, stored, atol=1e-3)  # and it matters
    src = embedded_adapters("smollm2-135m")["update"]
    a = load_adapter("update", src)
    out = peft_to_gguf_lora(src, tmp_path / "update.gguf", n_head, n_kv)
    r = gguf.GGUFReader(str(out))
    lora = {t.name: np.array(t.data) for t in r.tensors}
    assert len(lora) == 2 * len(a.weights)
    field = r.fields["adapter.lora.alpha"]
    assert float(field.parts[field.data[0]][0]) == pytest.approx(a.scale * a.rank)
    la, lb = a.weights[(3, "q_proj")]
    np.testing.assert_allclose(lora["blk.3.attn_q.weight.lora_a"], la.float().numpy())
    np.testing.assert_allclose(lora["blk.3.attn_q.weight.lora_b"], _permute(lb.float().numpy(), n_head))
    np.testing.assert_allclose(lora["blk.3.ffn_down.weight.lora_b"], a.weights[(3, "down_proj")][1].float().numpy())
    assert EMBEDDED["smollm2-135m"].gguf() == path
