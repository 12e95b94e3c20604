"""A user's own Hugging Face VLM directory (the LLaVA layout: a CLIP or SigLIP tower, the multimodal projector, a Llama
LM) as MemLoRA-V's model: tiny random-config VLMs through load -> export (ExecuTorch and ONNX) -> runtime, held to
transformers' own LlavaForConditionalGeneration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY


def make_vlm(out: Path, tokenizer_dir: Path, tower: str = "clip") -> Path:
    """A tiny random LlavaForConditionalGeneration saved as a user's directory would be: config, safetensors, the
    SmolLM2 tokenizer with an `<image>` token, and (CLIP) the image processor's config."""
    from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, SiglipVisionConfig)

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    text = LlamaConfig(**{**TINY["llama"], "vocab_size": len(tok)})
    vc = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8)
    if tower == "clip":  # llava-1.5's choice: the second-to-last layer, CLS dropped
        cfg = LlavaConfig(vision_config=CLIPVisionConfig(**vc), text_config=text, vision_feature_layer=-2,
                          vision_feature_select_strategy="default", image_token_id=tok.convert_tokens_to_ids("<image>"))
    else:
        cfg = LlavaConfig(vision_config=SiglipVisionConfig(**vc), text_config=text, vision_feature_layer=-1,
                          vision_feature_select_strategy="full", image_token_id=tok.convert_tokens_to_ids("<image>"))
    vlm = LlavaForConditionalGeneration(cfg)
    with torch.no_grad():  # non-trivial norms so every weight matters
        for name, p in vlm.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    vlm.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    if tower == "clip":
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory, smollm2_dir) -> Path:
    return make_vlm(tmp_path_factory.mktemp("tiny_vlm") / "clip", smollm2_dir)


def _export(out, base, adapters, vision="embedded", quant="fp32", fmt="both"):
    from exporter.pipeline import run
    from exporter.spec import AdapterSpec, EmbedderSpec, ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec, \
        VisionSpec

    spec = ExportSpec(model=ModelSpec(base=str(base), max_seq_len=256),
                      adapters=AdapterSpec(paths={k: str(v) for k, v in adapters.items()}), quant=QuantSpec(quant),
                      output=OutputSpec(str(out)), fidelity=FidelitySpec(tokens=8),
                      embedder=EmbedderSpec(enabled=False), vision=VisionSpec(path=vision), format=fmt)
    return run(spec)["manifest"]


def test_tower_projector_and_language_model_are_the_vlms(tmp_path, smollm2_dir):
    """What the export takes from the directory computes what transformers computes from it: the visual tokens of
    `get_image_features` (CLIP at the second-to-last layer without CLS, SigLIP's last layer whole) and the language
    model's logits; the image normalisation comes from the processor config, else the tower's defaults."""
    from exporter.load import load_base
    from exporter.vision.hf_vlm import vision_parts

    for tower, mean in (("clip", 0.48145466 * 255), ("siglip", 127.5)):
        d = make_vlm(tmp_path / tower, smollm2_dir, tower)
        enc, projector, meta, vlm = vision_parts(d)
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            ours = projector(enc(x))
            theirs = torch.stack(list(vlm.get_image_features(pixel_values=x).pooler_output))
        assert ours.shape == (2, 16, 64) and torch.equal(ours, theirs)
        assert len(enc.encoder.layers) == (1 if tower == "clip" else 2)  # layers after the feature layer are cut
        assert meta["visual_tokens"] == 16 and meta["image"]["size"] == 32
        assert meta["image"]["mean"][0] == pytest.approx(mean)
        base = load_base(str(d))
        ids = torch.tensor([[1, 2, 3, 400, 5000, 17]])
        with torch.no_grad():
            assert torch.equal(base.model(ids).logits, vlm(input_ids=ids).logits)
        assert type(base.model).__name__ == "LlamaForCausalLM" and "LLaVA" in base.source


@pytest.fixture(scope="module")
def vlm_bundle(tmp_path_factory, tiny_vlm, llama_adapters) -> Path:
    out = tmp_path_factory.mktemp("vlm_bundle") / "b"
    _export(out, tiny_vlm, llama_adapters)
    return out


def test_vlm_directory_exports_and_runs_as_transformers_does(vlm_bundle, tiny_vlm):
    """`--base VLM --vision`: the text ops run on the VLM's language model (with their adapters), and the vision op is
    the VLM's own tower + projector over the same foundation, with no adapter (zeros in its LoRA slots). At fp32,
    ExecuTorch and onnxruntime give transformers' visual tokens and its logits after the image and the question."""
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer
    from PIL import Image

    from exporter.vision.encoder import ImageSpec, preprocess
    from exporter.vision.hf_vlm import load_vlm
    from exporter.vision.model import prompt_parts, vqa_messages
    from runtimes.manifest import load_manifest
    from runtimes.vision import QUESTION_SLOT, VisionRunner, image_tensor

    m = json.loads((vlm_bundle / "manifest.json").read_text())
    v = m["vision"]
    assert v["adapter"] is None and v["visual_tokens"] == 16 and "clip_vision_model" in v["encoder"]
    assert v["image"]["std"][2] == pytest.approx(0.27577711 * 255)
    for f in (v["fidelity"], v["onnx"]["fidelity"]):
        assert f["samples"] == 24 and f["answer_agreement"] == 1.0
    assert all(e["fidelity"]["meets_target"] for e in m["ops"].values())
    ser = FlatTensorSerializer()
    vqa = ser.deserialize((vlm_bundle / "vqa.lora.ptd").read_bytes())
    assert set(vqa.named_data) == set(ser.deserialize((vlm_bundle / "extract.lora.ptd").read_bytes()).named_data)
    assert not any(any(bytes(b)) for b in vqa.buffers)  # the VLM as trained: every LoRA slot zero

    vlm = load_vlm(tiny_vlm)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_vlm)
    spec = ImageSpec(size=32, mean=tuple(v["image"]["mean"]), std=tuple(v["image"]["std"]))
    question = "what color is the shape?"
    parts = prompt_parts(tok, vqa_messages(question))
    ids = torch.tensor([parts.before + [vlm.config.image_token_id] * 16 + parts.after])
    manifest = load_manifest(vlm_bundle)
    images = [Image.new("RGB", (64, 48), (200, 30, 30)), Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))]
    for backend in ("executorch", "onnx"):
        runner = VisionRunner(manifest, backend=backend)
        seen = []
        for image in images:
            pixels = preprocess(image, spec)
            with torch.no_grad():
                want_visual = vlm.get_image_features(pixel_values=pixels).pooler_output[0]
                want_logits = vlm(input_ids=ids, pixel_values=pixels).logits[0, -1]
            visual = torch.as_tensor(np.asarray(runner._run("image", image_tensor(image, 32))))[0]
            assert torch.allclose(visual, want_visual, atol=1e-4), backend
            seen.append(visual)
            h = [runner._run("embed", torch.tensor([p], dtype=torch.long)) for p in (parts.before, parts.after)]
            runner_logits = None
            pos = 0
            for part in (h[0], visual[None], h[1]):
                runner_logits = runner._run("decode", torch.as_tensor(np.asarray(part)), torch.tensor([pos]))
                pos += part.shape[1]
            got = torch.as_tensor(np.asarray(runner_logits)).reshape(-1)
            assert got.shape == want_logits.shape and torch.allclose(got, want_logits, atol=1e-3), backend
        assert not torch.allclose(seen[0], seen[1])  # the pixels reach the LM
        assert v["prompt"]["after"].replace(QUESTION_SLOT, question) == tok.decode(parts.after)


def test_vlm_directory_int8_vision_encoder(tmp_path, tiny_vlm, llama_adapters, vlm_bundle):
    """--vision-quant int8 on a ViT tower: its linears and the projector's at XNNPACK's dynamic int8, a smaller
    vision.pte whose visual tokens stay with the fp32 program's."""
    from PIL import Image

    from runtimes.manifest import load_manifest
    from runtimes.vision import VisionRunner, image_tensor

    out = tmp_path / "int8"
    m = _export(out, tiny_vlm, llama_adapters, quant="int8", fmt="executorch")
    assert "every linear of the tower" in m["vision"]["encoder"]
    assert (out / "vision.pte").stat().st_size < (vlm_bundle / "vision.pte").stat().st_size
    image = image_tensor(Image.new("RGB", (32, 32), (10, 200, 40)), 32)
    a = VisionRunner(load_manifest(out))._run("image", image).reshape(-1)
    b = VisionRunner(load_manifest(vlm_bundle))._run("image", image).reshape(-1)
    assert float(a @ b / a.norm() / b.norm()) > 0.99


def test_bad_vlm_directories_get_one_line(tmp_path, tiny_vlm, smollm2_dir, llama_adapters):
    """A VLM's vision op without its own LM as the base, and what the exporter does not build, are one line each."""
    import shutil

    from exporter.errors import InputError
    from exporter.vision import load_vision_op
    from exporter.vision.hf_vlm import read_vlm_config

    with pytest.raises(InputError, match="pass --base") as e:
        load_vision_op(str(tiny_vlm), "smollm2-135m")
    assert "\n" not in str(e.value)
    from exporter.pipeline import run
    from exporter.spec import AdapterSpec, ExportSpec, FidelitySpec, ModelSpec, OutputSpec, VisionSpec

    spec = ExportSpec(model=ModelSpec(base=str(tiny_vlm), max_seq_len=64), output=OutputSpec(str(tmp_path / "b")),
                      fidelity=FidelitySpec(tokens=8),
                      adapters=AdapterSpec(paths={k: str(v) for k, v in llama_adapters.items()}),
                      vision=VisionSpec("embedded"))
    with pytest.raises(InputError, match="visual tokens and a question do not fit --max-seq-len 64"):
        run(spec)
    assert not (tmp_path / "b").exists()
    raw = json.loads((tiny_vlm / "config.json").read_text())
    for change, says in [({"vision_feature_layer": 7}, "vision_feature_layer"),
                         ({"vision_feature_layer": [-2, -1]}, "vision_feature_layer"),
                         ({"vision_feature_select_strategy": "cls"}, "select_strategy"),
                         ({"text_config": {**raw["text_config"], "model_type": "qwen2"}}, "not supported"),
                         ({"vision_config": {"model_type": "pixtral", "hidden_size": 32}}, "not supported")]:
        d = tmp_path / "bad"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        (d / "config.json").write_text(json.dumps({**raw, **change}))
        with pytest.raises(InputError, match=says) as e:
            read_vlm_config(d)
        assert "\n" not in str(e.value)
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(raw))
    (d / "pytorch_model.bin").write_bytes(b"x")
    from exporter.load import load_base

    with pytest.raises(InputError, match="safetensors"):
        load_base(str(d))
