"""MemLoRA-V's vision op: the real embedded image encoder, the easy-VQA splits, the prompt layout around the visual
tokens, and `memlora-train --op vqa` (a tiny random LM, the real encoder on a few images) with resuming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("easy_vqa")
pytest.importorskip("efficientnet_lite_pytorch")


def test_real_encoder_weights_and_features():
    from PIL import Image

    from exporter.vision.data import load_split
    from exporter.vision.encoder import load_encoder, preprocess, weights_path

    enc = load_encoder()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    got = enc.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())  # every tensor of the package's file is loaded
    assert sum(p.numel() for p in enc.parameters()) > 4_000_000 and not any(p.requires_grad for p in enc.parameters())

    sp = load_split("test", limit_images=24)
    ims = [Image.open(p) for p in sp.image_paths]
    x = preprocess(ims)
    assert x.shape == (24, 3, 224, 224) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    with torch.no_grad():
        f = enc(x)
        again = enc(preprocess(ims[:2]))
    assert f.shape == (24, 1360, 7, 7)
    torch.testing.assert_close(again, f[:2], atol=1e-4, rtol=1e-4)  # deterministic, batch-independent
    # Pretrained, not random: images whose questions say they share a colour are closer in feature space than
    # images of different colours (ImageNet features separate hues; a random net's barely do).
    colour = {}
    for it in sp.items:
        if it.question.startswith("what color is the") or it.question.startswith("what is the color of the"):
            colour[it.image] = it.answer
    g = torch.nn.functional.normalize(f.mean(dim=(2, 3)), dim=1)
    same, diff = [], []
    keys = sorted(colour)
    for i in keys:
        for j in keys:
            if i < j:
                (same if colour[i] == colour[j] else diff).append(float(g[i] @ g[j]))
    assert same and diff and sum(same) / len(same) > sum(diff) / len(diff) + 0.02


def test_vqa_splits_hold_out_whole_images():
    from exporter.vision.data import answers, load_split

    tr, va = load_split("train"), load_split("val")
    assert set(tr.image_paths).isdisjoint(va.image_paths)
    assert len(va.image_paths) == 400 and len(tr.image_paths) == 3600
    assert load_split("val").image_paths == va.image_paths  # seeded, stable
    assert load_split("val", seed=1).image_paths != va.image_paths
    assert {i.answer for i in tr.items} <= set(answers()) and len(answers()) == 13
    assert all(0 <= i.image < len(va.image_paths) for i in va.items)


def test_prompt_parts_put_the_image_in_the_user_turn(smollm2_dir):
    from transformers import AutoTokenizer

    from exporter.vision.model import IMAGE_PLACEHOLDER, prompt_parts, vqa_messages

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    parts = prompt_parts(tok, vqa_messages("what color is the circle?"))
    before, after = tok.decode(parts.before), tok.decode(parts.after)
    assert before.endswith("<|im_start|>user\n") and after.startswith("\nwhat color is the circle?<|im_end|>")
    assert after.endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="exactly one"):
        prompt_parts(tok, [{"role": "user", "content": f"{IMAGE_PLACEHOLDER} {IMAGE_PLACEHOLDER}"}])


def _weights(d: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {**load_file(str(d / "projector.safetensors")), **load_file(str(d / "vqa" / "adapter_model.safetensors"))}


def test_tiny_vqa_training_writes_the_vision_op_and_resumes(tiny_llama, tmp_path):
    import json

    from exporter.vision.train import VQATrainConfig, train_vqa

    kw = dict(base=str(tiny_llama), grid=3, rank=4, alpha=8.0, lr=5e-3, projector_lr=5e-3, align_steps=2, steps=3,
              batch=3, warmup=1, val_items=6, test_items=6, checkpoint_every=2, threads=1)
    cache = tmp_path / "features"
    full = train_vqa(VQATrainConfig(out=str(tmp_path / "full"), **kw), cache_dir=cache, limit_images=6,
                     progress=False)
    out = tmp_path / "full"
    assert sorted(p.name for p in out.iterdir()) == ["projector.json", "projector.safetensors",
                                                     "training_config.json", "validation.json", "vqa"]
    meta = json.loads((out / "projector.json").read_text())
    assert meta["visual_tokens"] == 9 and meta["image"]["size"] == 224 and meta["projector"]["dim"] == 64
    v = full["validation"]
    assert 0.0 <= v["test"]["accuracy"] <= 1.0 and v["test"]["items"] == 6
    assert len(list(cache.glob("*.safetensors"))) == 3  # train, val, test features, computed once
    losses = [h["loss"] for h in full["history"]]
    assert all(x == x and x > 0 for x in losses)
    # Alignment first (projector only, the LoRA's rate 0), then joint.
    assert [h["stage"] for h in full["history"]] == ["align"] * 2 + ["joint"] * 3
    assert [h["lr"] == 0 for h in full["history"]] == [True, True, False, False, False]

    cfg = VQATrainConfig(out=str(tmp_path / "resumed"), **kw)
    first = train_vqa(cfg, cache_dir=cache, limit_images=6, progress=False, stop_after=3)  # stopped in stage 2
    assert first["stopped_at"] == 3 and not (tmp_path / "resumed").exists()
    assert [p.name for p in sorted(cfg.checkpoint_dir.glob("step-*"))] == ["step-000002", "step-000003"]
    second = train_vqa(cfg, cache_dir=cache, limit_images=6, progress=False)
    assert [h["loss"] for h in second["history"]] == pytest.approx(losses, rel=1e-3)
    a, b = _weights(out), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=2e-3) for k in a)
    assert not cfg.checkpoint_dir.exists()

    # The output loads back as the vision op (fp16 projector + adapter) and answers.
    from exporter.load import load_base
    from exporter.vision import load_vqa_model
    from exporter.vision.data import load_split
    from exporter.vision.data import features_for

    model = load_vqa_model(out, load_base(str(tiny_llama)))
    sp = load_split("test", limit_images=6)
    preds = model.answer(sp.items[:4], features_for(sp, None, None, cache_dir=cache))
    assert len(preds) == 4 and all(isinstance(p, str) for p in preds)
    saved = _weights(out)
    got = {f"{k}": v for k, v in model.projector.state_dict().items()}
    assert all(torch.equal(got[k], saved[k].float()) for k in got)


def test_bad_vision_dirs_get_one_line(tmp_path):
    from exporter.errors import InputError
    from exporter.vision import read_vision_dir

    with pytest.raises(InputError, match="not a vision op directory"):
        read_vision_dir(tmp_path)
    for name in ("projector.safetensors", "vqa/adapter_config.json", "vqa/adapter_model.safetensors"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "projector.json").write_text('{"projector": {"in_dim": 1280, "dim": -1, "grid": 3}}')
    with pytest.raises(InputError, match="positive ints"):
        read_vision_dir(tmp_path)
    (tmp_path / "projector.json").write_text("[1, 2")
    with pytest.raises(InputError, match="projector.json"):
        read_vision_dir(tmp_path)
    # What an exporter would build the vision program from is checked up front (never a traceback later).
    import json

    good = json.loads((Path(__file__).resolve().parents[1] / "exporter/assets/vision/smollm2-135m/projector.json")
                      .read_text())
    (tmp_path / "projector.json").write_text(json.dumps(good))
    assert read_vision_dir(tmp_path)["visual_tokens"] == 9
    for key, value, says in [("image", {**good["image"], "size": 0}, "image size"),
                             ("image", {**good["image"], "std": [1, 0, 1]}, "std"),
                             ("image", {**good["image"], "mean": [1, 2]}, "mean"),
                             ("image", {**good["image"], "extra": 1}, "image must be"),
                             ("encoder", "clip-vit", "encoder must be"),
                             ("visual_tokens", 49, "visual_tokens"),
                             ("projector", {**good["projector"], "grid": 5}, "grid"),
                             ("projector", {**good["projector"], "dim": True}, "positive ints"),
                             ("answer_after", "", "answer_after"), ("answer_after", 3, "answer_after")]:
        (tmp_path / "projector.json").write_text(json.dumps({**good, key: value}))
        with pytest.raises(InputError, match=says) as e:
            read_vision_dir(tmp_path)
        assert "\n" not in str(e.value)


def test_train_cli_vqa_bad_input(tmp_path, capsys):
    from exporter.train.cli import main

    assert main(["--op", "vqa", "--steps", "0", "--out", str(tmp_path / "o")]) == 1
    assert "steps must be a positive int" in capsys.readouterr().err
    assert main(["--op", "vqa", "--targets", "lm_head", "--out", str(tmp_path / "o")]) == 1
    assert "not LoRA targets" in capsys.readouterr().err
    assert main(["--op", "vqa", "--test-items", "-3", "--out", str(tmp_path / "o")]) == 1
    assert "test_items must be a positive int" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--op", "vqa", "--grid", "5", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def tiny_vision(tmp_path_factory, tiny_llama):
    """A vision op trained for a few steps on the tiny LM (the real encoder on a few easy-VQA images)."""
    from exporter.vision.train import VQATrainConfig, train_vqa

    root = tmp_path_factory.mktemp("tiny_vision")
    cfg = VQATrainConfig(out=str(root / "vision"), base=str(tiny_llama), grid=3, rank=4, alpha=8.0, lr=5e-2,
                         projector_lr=5e-2, align_steps=2, steps=2, batch=4, warmup=1, val_items=2, test_items=2,
                         threads=1)
    train_vqa(cfg, cache_dir=root / "features", limit_images=8, progress=False)
    return Path(cfg.out)


def _export_tiny(out, tiny_llama, llama_adapters, vision, vision_quant=None, fmt="executorch"):
    from exporter.pipeline import run
    from exporter.spec import AdapterSpec, EmbedderSpec, ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec, \
        VisionSpec

    spec = ExportSpec(model=ModelSpec(base=str(tiny_llama), max_seq_len=256),
                      adapters=AdapterSpec(paths={k: str(v) for k, v in llama_adapters.items()}),
                      quant=QuantSpec("fp32"), output=OutputSpec(str(out)), fidelity=FidelitySpec(tokens=8),
                      embedder=EmbedderSpec(enabled=False), vision=VisionSpec(path=vision, quant=vision_quant),
                      format=fmt)
    return run(spec)["manifest"]


@pytest.fixture(scope="module")
def tiny_vision_bundle(tmp_path_factory, tiny_llama, llama_adapters, tiny_vision):
    """The tiny text ops + the tiny vision op in one fp32 bundle."""
    out = tmp_path_factory.mktemp("vision_bundle") / "with"
    _export_tiny(out, tiny_llama, llama_adapters, str(tiny_vision))
    return out


def test_vision_op_exports_over_the_text_foundation_and_matches_the_reference(tmp_path, tiny_llama, llama_adapters,
                                                                              tiny_vision_bundle):
    """vision.pte (vision_encoder / token_embedding / text_decoder) over the text ops' foundation.ptd: the bundle
    runs it (runtimes.vision) and, at fp32, answers as the PyTorch reference does; adding it leaves the foundation
    byte-identical."""
    import json

    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer
    from runtimes.manifest import load_manifest
    from runtimes.vision import VisionRunner

    m = json.loads((tiny_vision_bundle / "manifest.json").read_text())
    v = m["vision"]
    assert v["program"] == "vision.pte" and v["data_files"] == ["foundation.ptd", "vqa.lora.ptd"]
    assert {"vision.pte", "vqa.lora.ptd", "model.pte", "foundation.ptd"} <= set(m["files"])
    assert v["visual_tokens"] == 9 and v["image"]["size"] == 224
    assert "{question}" in v["prompt"]["after"] and v["prompt"]["before"].endswith("user\n")
    assert v["generation"]["answer_after"] == ", so "  # trained to name what it sees, then answer yes / no
    f = v["fidelity"]
    assert f["samples"] == 24 and f["answer_agreement"] == 1.0, f  # fp32: the same answers as PyTorch
    assert v["lowering"]["delegated_ops"]["vision_encoder"]["xnnpack_delegates"] >= 1

    # The vision program adds no copy of the LM: the foundation is the one a bundle without vision has.
    plain = _export_tiny(tmp_path / "without", tiny_llama, llama_adapters, None)
    assert "vision" not in plain
    assert (tiny_vision_bundle / "foundation.ptd").read_bytes() == (tmp_path / "without" / "foundation.ptd").read_bytes()
    ser = FlatTensorSerializer()
    keys = set(ser.deserialize((tiny_vision_bundle / "vqa.lora.ptd").read_bytes()).named_data)
    assert keys == set(ser.deserialize((tiny_vision_bundle / "extract.lora.ptd").read_bytes()).named_data)

    # The runtime answers from the pixels: the image changes what the model sees (visual tokens differ).
    from PIL import Image

    runner = VisionRunner(load_manifest(tiny_vision_bundle))
    a = Image.new("RGB", (64, 64), (255, 0, 0))
    b = Image.new("RGB", (64, 64), (0, 0, 255))
    from runtimes.vision import image_tensor

    va = runner._run("image", image_tensor(a, 224))
    vb = runner._run("image", image_tensor(b, 224))
    assert va.shape == (1, 9, 64) and not torch.allclose(va, vb)
    said = runner.answer(a, "is there a red shape?")
    assert runner.last_text.endswith(said) and ", so " not in said
    assert runner.answer(a, "is there a red shape?", whole=True) == runner.last_text
    json.dumps(m)  # the manifest stays JSON

    # memlora-profile's vision job: fixed decode length, the prompt = both halves + the visual tokens.
    from runtimes.profiler.host import job_vision

    res = job_vision({"bundle": str(tiny_vision_bundle), "new_tokens": 3, "warmup": 0, "repeats": 1, "threads": 1})
    tok = runner.tokenizer
    q = "what color is the shape?"
    n = len(tok.encode(v["prompt"]["before"], add_special_tokens=False).ids) + 9 + \
        len(tok.encode(v["prompt"]["after"].replace("{question}", q), add_special_tokens=False).ids)
    first = res["runs"][0]
    assert len(res["runs"]) == 4 and first["new_tokens"] == 3 and first["prompt_tokens"] == n
    assert first["encode_ms"] > 0 and first["decode_tok_s"] > 0 and res["rss_mb"]["peak"] > 0


def test_int8_image_encoder_is_smaller_and_sees_what_fp32_sees(tmp_path, tiny_llama, llama_adapters, tiny_vision,
                                                              tiny_vision_bundle):
    """--vision-quant int8: the projector and the encoder's INT8_CONVS run XNNPACK's dynamic int8 inside vision.pte;
    the program is smaller by about 3/4 of those weights and its visual tokens stay close to the fp32 program's on
    real images (cosine > 0.95 through this tiny projector, trained two steps at a large rate; a static int8 encoder
    gave 0.58 on the encoder's own features); nothing of the int8 encoder leaks into the shared data files."""
    import json

    from PIL import Image

    from exporter.vision.data import load_split
    from exporter.vision.encoder import INT8_CONVS, load_encoder
    from runtimes.manifest import load_manifest
    from runtimes.vision import VisionRunner, image_tensor

    out = tmp_path / "int8"
    m = _export_tiny(out, tiny_llama, llama_adapters, str(tiny_vision), vision_quant="int8")
    fp32 = json.loads((tiny_vision_bundle / "manifest.json").read_text())
    assert fp32["spec"]["vision"]["quant"] == "fp32" and "(fp32, XNNPACK)" in fp32["vision"]["encoder"]
    assert m["spec"]["vision"]["quant"] == "int8" and "dynamic int8" in m["vision"]["encoder"]
    convs = dict(load_encoder().net.named_modules())
    saved = 3 * sum(convs[c].weight.numel() for c in INT8_CONVS)  # bytes: fp32 -> int8 (+ a scale per channel)
    shrink = (tiny_vision_bundle / "vision.pte").stat().st_size - (out / "vision.pte").stat().st_size
    assert 0.9 * saved < shrink < 1.2 * saved, (shrink, saved)
    for f in ("foundation.ptd", "vqa.lora.ptd"):
        assert (out / f).read_bytes() == (tiny_vision_bundle / f).read_bytes()
    assert m["vision"]["fidelity"]["answer_agreement"] >= 0.9, m["vision"]["fidelity"]

    split = load_split("test")
    a, b = VisionRunner(load_manifest(tiny_vision_bundle)), VisionRunner(load_manifest(out))
    for path in split.image_paths[:4]:
        x = image_tensor(Image.open(path), 224)
        va, vb = a._run("image", x).flatten(), b._run("image", x).flatten()
        assert torch.nn.functional.cosine_similarity(va, vb, dim=0) > 0.95


def test_vision_op_as_onnx_graphs_over_the_foundation_weights(tmp_path, tiny_llama, llama_adapters, tiny_vision,
                                                              tiny_vision_bundle):
    """--format both: the vision op also as ONNX graphs run by plain onnxruntime (runtimes.vision, backend "onnx"):
    the encoder graph, and the embedding lookup and decoder cut from foundation.onnx, both reading
    foundation.onnx.data (no second copy of the LM); at fp32 it answers as the PyTorch reference and as the
    ExecuTorch program do. A decoder graph that points its weights outside the bundle is refused."""
    import json

    import onnx

    from runtimes.manifest import BundleError, load_manifest
    from runtimes.vision import VisionRunner, image_tensor

    out = tmp_path / "both"
    m = _export_tiny(out, tiny_llama, llama_adapters, str(tiny_vision), fmt="both")
    vo = m["vision"]["onnx"]
    assert vo["data_files"] == ["foundation.onnx.data"] and vo["adapter_file"] == "vqa.onnx_adapter"
    assert {vo["encoder"], vo["embed"], vo["decoder"], "vqa.onnx_adapter", "vision.pte"} <= set(m["files"])
    for g in (vo["embed"], vo["decoder"]):  # their weights are references into the foundation's data file
        model = onnx.load(str(out / g), load_external_data=False)
        assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer if t.dims
                   and int(np.prod(t.dims)) > 1024)
        assert (out / g).stat().st_size < (out / "foundation.onnx").stat().st_size + 4096
    assert vo["fidelity"]["answer_agreement"] == 1.0, vo["fidelity"]
    assert m["vision"]["fidelity"]["answer_agreement"] == 1.0

    et, ox = VisionRunner(load_manifest(out)), VisionRunner(load_manifest(out), backend="onnx")
    from exporter.vision.data import load_split

    split = load_split("test")
    for it in split.items[:6]:
        image = split.image_paths[it.image]
        assert ox.answer(image, it.question) == et.answer(image, it.question)
        x = image_tensor(image, 224)
        assert torch.allclose(ox._run("image", x), et._run("image", x), atol=1e-3, rtol=1e-3)
        # five greedy steps past any stop token: the decoder's cache carried across calls as ExecuTorch's is
        assert ox.answer_ids(image, it.question, 5, ignore_stop=True) == et.answer_ids(image, it.question, 5,
                                                                                      ignore_stop=True)
    assert ox.last_stats["new_tokens"] == 5 and ox.last_stats["prompt_tokens"] > 9

    # hostile: the decoder graph keeps its weights in a file outside the bundle
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(out, bad)
    model = onnx.load(str(bad / vo["decoder"]), load_external_data=False)
    t = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    next(kv for kv in t.external_data if kv.key == "location").value = "../../etc/passwd"
    onnx.save(model, str(bad / vo["decoder"]))
    raw = json.loads((bad / "manifest.json").read_text())
    from runtimes.manifest import sha256_file

    dec = bad / vo["decoder"]
    raw["files"][vo["decoder"]] = {"bytes": dec.stat().st_size, "sha256": sha256_file(dec)}
    (bad / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="not a file the bundle lists"):
        VisionRunner(load_manifest(bad), backend="onnx")


def test_onnx_only_bundle_carries_the_vision_op(tmp_path, tiny_llama, llama_adapters, tiny_vision, capsys):
    """--format onnx --vision: the vision op as ONNX graphs alone (no vision.pte, no ExecuTorch method names in its
    section), run by onnxruntime wherever a backend is not named: the runtime, `memlora-run --image` and the
    profiler's vision job; asking for the ExecuTorch program is one line."""
    from runtimes.cli import main as run_main
    from runtimes.manifest import BundleError, load_manifest
    from runtimes.profiler.host import job_vision
    from runtimes.vision import VisionRunner

    out = tmp_path / "onnx"
    m = _export_tiny(out, tiny_llama, llama_adapters, str(tiny_vision), fmt="onnx")
    v = m["vision"]
    assert not {"program", "data_files", "methods", "lowering", "fidelity"} & set(v)
    assert "vision.pte" not in m["files"] and not any(f.endswith(".pte") and f != "embedder.pte" for f in m["files"])
    assert v["onnx"]["fidelity"]["answer_agreement"] == 1.0 and "XNNPACK" not in v["encoder"]
    runner = VisionRunner(load_manifest(out))
    assert runner.backend == "onnx"
    from exporter.vision.data import load_split

    image = str(load_split("test").image_paths[0])
    answer = runner.answer(image, "what shape is in the image?")
    with pytest.raises(BundleError, match="ONNX graphs only"):
        VisionRunner(load_manifest(out), backend="executorch")
    assert run_main([str(out), "--image", image, "--prompt", "what shape is in the image?"]) == 0
    got = capsys.readouterr()
    assert got.out.strip() == answer and "[vision, onnx]" in got.err
    res = job_vision({"bundle": str(out), "backend": "onnx", "new_tokens": 2, "warmup": 0, "repeats": 1,
                      "threads": 1})
    assert res["runs"][0]["new_tokens"] == 2


def test_onnx_int8_encoder_keeps_per_channel_weights_and_the_features(tmp_path):
    """The real encoder + a projector as the ONNX vision encoder graph: int8 per-channel weights on INT8_CONVS and
    the projector (DequantizeLinear per output channel), about a quarter of those bytes, and the visual tokens of
    real easy-VQA images within cosine 0.99 of the fp32 graph's."""
    import onnx
    import onnxruntime as ort

    from exporter.targets.onnx_vision import export_encoder, int8_encoder_graph
    from exporter.vision.data import load_split
    from exporter.vision.encoder import INT8_CONVS, load_encoder
    from exporter.vision.model import Projector, ProjectorConfig
    from exporter.vision.program import VisionEncoder
    from runtimes.vision import image_tensor

    torch.manual_seed(0)
    module = VisionEncoder(load_encoder(), Projector(ProjectorConfig(in_dim=1360, dim=64, grid=3))).eval()
    a, b = export_encoder(module, 224, tmp_path / "a.onnx"), export_encoder(module, 224, tmp_path / "b.onnx")
    n = int8_encoder_graph(b, tuple(f"net.{c}" for c in INT8_CONVS))
    convs = dict(module.vision_encoder.net.named_modules())
    assert n == sum(convs[c].weight.numel() for c in INT8_CONVS) + 1360 * 64 + 64 * 64
    assert 0.9 * 3 * n < a.stat().st_size - b.stat().st_size < 1.1 * 3 * n
    dq = [x for x in onnx.load(str(b)).graph.node if x.op_type == "DequantizeLinear"]
    assert len(dq) == len(INT8_CONVS) + 2 and {x.attribute[0].i for x in dq} == {0, 1}  # conv: axis 0, MatMul: 1
    sa, sb = ort.InferenceSession(str(a)), ort.InferenceSession(str(b))
    split = load_split("test")
    for path in split.image_paths[:4]:
        x = image_tensor(path, 224).numpy()
        va, vb = sa.run(None, {"image": x})[0].ravel(), sb.run(None, {"image": x})[0].ravel()
        assert float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb)) > 0.99
        assert np.allclose(va, module(torch.from_numpy(x)).detach().numpy().ravel(), atol=1e-2, rtol=1e-3)


def test_vision_spec_rules(tmp_path):
    from exporter.errors import SpecError
    from exporter.spec import AdapterSpec, ExportSpec, ModelSpec, VisionSpec

    with pytest.raises(SpecError, match="give the text ops their adapters"):  # a base without adapters
        ExportSpec(model=ModelSpec(base=str(tmp_path)),
                   vision=VisionSpec(path="embedded"))
    with pytest.raises(SpecError, match="separate adapters only"):
        ExportSpec(adapters=AdapterSpec(paths={"extract": "x"}, strategy="merged"), vision=VisionSpec(path="embedded"))
    assert ExportSpec(adapters=AdapterSpec(paths={"extract": "x"}), format="onnx",
                      vision=VisionSpec(path="embedded")).format == "onnx"  # ONNX-only vision bundles
    with pytest.raises(SpecError, match="'vqa'"):
        ExportSpec(adapters=AdapterSpec(paths={"vqa": "x"}), vision=VisionSpec(path="embedded"))
    with pytest.raises(SpecError, match="vision.quant"):
        VisionSpec(path="embedded", quant="int4")
    from exporter.spec import QuantSpec

    ad = AdapterSpec(paths={"extract": "x"})
    assert ExportSpec(adapters=ad, vision=VisionSpec(path="embedded")).vision.quant == "int8"
    assert ExportSpec(adapters=ad, quant=QuantSpec("fp32"), vision=VisionSpec(path="embedded")).vision.quant == "fp32"
    assert ExportSpec(adapters=ad, quant=QuantSpec("fp32"),
                      vision=VisionSpec("embedded", "int8")).vision.quant == "int8"


@pytest.mark.parametrize("field,value", [
    ("program", "../outside.pte"), ("program", "/etc/passwd"), ("program", "unlisted.pte"),
    ("data_files", ["foundation.ptd", "../../x.ptd"]), ("data_files", "foundation.ptd"),
    ("image", {"size": 224, "mean": [1, 2], "std": [1, 1, 1]}), ("image", {"size": -1, "mean": [0, 0, 0], "std": [1, 1, 1]}),
    ("prompt", {"before": "x"}), ("visual_tokens", "9"), ("methods", {"image": "vision_encoder"}),
    ("onnx", {"decoder": "../foundation.onnx"}), ("onnx", {"embed": "unlisted.onnx"}),
    ("onnx", {"adapter_file": "/etc/passwd"}),
    ("onnx", {"data_files": ["../x.data"]}), ("onnx", {"past": {"layers": 0, "kv_heads": 3, "head_dim": 64}}),
    ("onnx", {"graph_id": "7"}), ("onnx", "x")])
def test_hostile_vision_sections_are_refused(tmp_path, field, value):
    """The manifest's vision section is held to the closed world like the ops: every file it names is a plain name the
    bundle lists, and its fields are typed; anything else is one BundleError line."""
    import json

    from runtimes.manifest import BundleError, load_manifest
    from test_manifest_closed_world import VECTORS

    for name, text in VECTORS["base"]["files"].items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    raw = json.loads(json.dumps(VECTORS["base"]["manifest"]))
    some = next(iter(raw["files"]))
    raw["vision"] = {"op": "vqa", "program": some, "data_files": [some],
                     "methods": {"image": "vision_encoder", "embed": "token_embedding", "decode": "text_decoder"},
                     "image": {"size": 224, "mean": [127.5] * 3, "std": [127.5] * 3}, "visual_tokens": 9,
                     "prompt": {"before": "a", "after": "{question}"}}
    raw["vision"]["onnx"] = {"encoder": some, "embed": some, "decoder": some, "data_files": [some],
                             "adapter_file": some, "graph_id": 7, "past": {"layers": 30, "kv_heads": 3, "head_dim": 64}}
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    assert load_manifest(tmp_path, verify=False).vision["op"] == "vqa"  # the well-formed section loads
    if field == "onnx" and isinstance(value, dict):
        value = {**raw["vision"]["onnx"], **value}
    raw["vision"][field] = value
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="vision") as e:
        load_manifest(tmp_path, verify=False)
    assert "\n" not in str(e.value)


def test_yes_no_targets_name_the_attribute_first():
    """Training targets of yes/no questions: what the image shows (from its other questions' answers), then the
    answer; items whose image's attribute nothing tells are left out; readers take the text after ", so "."""
    from exporter.vision.data import ANSWER_AFTER, VQAItem, accuracy, with_attribute_answers
    from runtimes.vision import final_answer

    items = [VQAItem("what color is the shape?", "blue", 0), VQAItem("is there not a red shape?", "yes", 0),
             VQAItem("is there a circle?", "no", 0), VQAItem("does the image contain a triangle?", "yes", 1),
             VQAItem("is no rectangle present?", "yes", 1), VQAItem("is there a green shape?", "no", 1)]
    got = [(it.question, it.answer) for it in with_attribute_answers(items)]
    assert got == [("what color is the shape?", "blue"), ("is there not a red shape?", "blue, so yes"),
                   ("does the image contain a triangle?", "triangle, so yes"),
                   ("is no rectangle present?", "triangle, so yes")]  # image 0's shape and image 1's colour: unknown
    assert final_answer("blue, so yes", ANSWER_AFTER) == "yes" and final_answer("red", ANSWER_AFTER) == "red"
    assert accuracy(["blue, so yes", "green, so no.", "yes"], [VQAItem("q", "yes", 0), VQAItem("q", "no", 0),
                                                                VQAItem("q", "no", 0)]) == 2 / 3


def test_balanced_order_hides_the_answer_from_the_wording():
    """Joint-stage sampling: every (question template, answer) group equally likely, seeded."""
    from collections import Counter

    from exporter.vision.data import VQAItem, balanced_order, question_groups

    items = ([VQAItem("is there a red shape?", "no", 0)] * 90 + [VQAItem("is there a blue shape?", "yes", 1)] * 10
             + [VQAItem("is there not a red shape?", "yes", 2)] * 50)
    vocab = ["red", "blue", "circle", "yes", "no"]
    assert question_groups(items[:1], vocab) == [("is there a _ shape?", "no")]
    order = balanced_order(items, 3000, seed=0, vocabulary=vocab)
    assert order == balanced_order(items, 3000, seed=0, vocabulary=vocab) != balanced_order(items, 3000, 1, vocab)
    got = Counter(question_groups([items[i] for i in order], vocab))
    assert len(got) == 3 and all(900 < n < 1100 for n in got.values())  # uniform over the three groups


def test_embedded_vision_op_reads_colour_and_shape_from_the_pixels():
    """The shipped vision op on the real SmolLM2 (PyTorch reference path), on seeded easy-VQA test questions it never
    trained or was chosen on: colour and shape answers far above chance (12.5 % / 33 %), i.e. from the image."""
    import random

    from PIL import Image

    from exporter.load import load_base
    from exporter.vision import embedded_vision, load_vqa_model
    from exporter.vision.data import VQAItem, accuracy, kind, load_split
    from exporter.vision.encoder import load_encoder, preprocess

    d = embedded_vision("smollm2-135m")
    assert d is not None, "the embedded vision op is missing from exporter/assets/vision"
    split = load_split("test")
    open_items = [it for it in split.items if kind(it) != "yes/no"]
    items = random.Random(7).sample(open_items, 48)
    images = [Image.open(split.image_paths[it.image]) for it in items]
    with torch.no_grad():
        feats = load_encoder()(preprocess(images))
    model = load_vqa_model(d, load_base("smollm2-135m"))
    rows = [VQAItem(it.question, it.answer, k) for k, it in enumerate(items)]
    preds = model.answer(rows, feats)
    colour = [(p, it) for p, it in zip(preds, rows) if kind(it) == "color"]
    shape = [(p, it) for p, it in zip(preds, rows) if kind(it) == "shape"]
    assert accuracy(*zip(*colour)) >= 0.6 and accuracy(*zip(*shape)) >= 0.7, preds
    # Yes/no against the wording's prior ("is there a red shape?" -> yes, "is there not a red shape?" -> no): right
    # only when read from the image (the op before attribute answers got none of these right, docs/vision.md).
    import re

    against = [it for it in split.items if kind(it) == "yes/no"
               and (it.answer == "yes") != bool(re.search(r"\b(not|no)\b", it.question))]
    items = random.Random(8).sample(against, 24)
    with torch.no_grad():
        feats = load_encoder()(preprocess([Image.open(split.image_paths[it.image]) for it in items]))
    rows = [VQAItem(it.question, it.answer, k) for k, it in enumerate(items)]
    preds = model.answer(rows, feats)
    assert accuracy(preds, rows) >= 0.8, list(zip([it.question for it in rows], preds))


def _png_file(path, rgb):
    from PIL import Image

    Image.new("RGB", (64, 64), rgb).save(path)
    return str(path)


def test_shared_images_are_kept_and_answered_from_the_pixels(tiny_vision_bundle, tmp_path):
    """MemLoRA-V in the memory pipeline: an image shared in a turn is kept inside the store (PNG, turn id, date, the
    text it came with), a question about it is answered by the bundle's vision op on the image retrieved by that
    text; other questions go to generate. The caption baseline writes the vision op's caption into the turn and
    keeps no pixels. A store whose image row cannot be decoded is answered from text."""
    import sqlite3

    import numpy as np
    from PIL import Image

    from runtimes.factory import open_bundle
    from runtimes.memory.embed import TorchEmbedder
    from runtimes.memory.pipeline import MemoryPipeline, PipelineConfig
    from runtimes.memory.prompts import format_turns
    from runtimes.memory.store import MemoryStore
    from runtimes.vision import VisionRunner

    llm = open_bundle(tiny_vision_bundle)
    vision = VisionRunner(llm.manifest)
    embedder = TorchEmbedder()
    red, blue = _png_file(tmp_path / "red.png", (220, 20, 20)), _png_file(tmp_path / "blue.png", (20, 20, 220))
    turns = [{"speaker": "Ana", "dia_id": "D1:1", "text": "Here is a photo of the sign for the garage sale.",
              "image": red},
             {"speaker": "Ben", "dia_id": "D1:2", "text": "Nice! I went hiking in the mountains yesterday."},
             {"speaker": "Ben", "dia_id": "D1:3", "text": "Look at this picture of the kite from the beach trip!",
              "image": Image.open(blue)}]
    short = {"extract": 16, "update": 16, "generate": 6}
    store = MemoryStore(tmp_path / "pixels.sqlite")
    pipe = MemoryPipeline(llm, embedder, store, owner="c", vision=vision,
                          config=PipelineConfig(constrained=True, max_new_tokens=short))
    pipe.add_turns(turns, "1:56 pm on 8 May, 2023")
    assert store.image_count("c") == 2 and store.image_count("other") == 0
    kept = [store.get_image(i) for i in (1, 2)]
    assert [(k.turn_id, k.shared_at, k.context) for k in kept] == [
        ("D1:1", "2023-05-08T13:56:00", "Ana: Here is a photo of the sign for the garage sale."),
        ("D1:3", "2023-05-08T13:56:00", "Ben: Look at this picture of the kite from the beach trip!")]
    assert np.array_equal(np.asarray(kept[0].image()), np.asarray(Image.open(red).convert("RGB")))  # lossless
    assert [c.op for c in pipe.calls].count("caption") == 0
    assert "[shares a photo]" in format_turns([{"speaker": "Ana", "text": "Look", "shared_image": True}])

    q = "In the photo of the kite from the beach trip that Ben shared, what color is the shape?"
    a = pipe.answer(q)
    assert a.call.op == "vqa" and a.image[0].turn_id == "D1:3" and a.image[1] > pipe.config.visual_min_score
    assert a.text == vision.answer(Image.open(blue), q).strip()  # the kept pixels are the shared ones
    assert pipe.answer("In the photo of the sign for the garage sale, is there a red shape?").image[0].turn_id == "D1:1"
    assert pipe.answer("Where did Ben go hiking?").call.op == "generate"  # not about a photo

    # A store written by something else: an image row that is not a PNG -> answered from text, not a crash.
    store.close()
    with sqlite3.connect(tmp_path / "pixels.sqlite") as conn:
        conn.execute("UPDATE images SET png = ? WHERE turn_id = 'D1:3'", (b"\x89PNG\r\n\x1a\nbroken",))
    with MemoryStore(tmp_path / "pixels.sqlite") as st:
        assert MemoryPipeline(llm, embedder, st, owner="c", vision=vision,
                              config=PipelineConfig(max_new_tokens=short)).answer(q).call.op == "generate"

    # The caption baseline: the vision op captions at share time; no pixels are kept; questions go to generate.
    with MemoryStore(tmp_path / "caption.sqlite") as st:
        cap = MemoryPipeline(llm, embedder, st, owner="c", vision=vision,
                             config=PipelineConfig(images="caption", constrained=True, max_new_tokens=short))
        cap.add_turns(turns, "8 May 2023")
        captions = [c for c in cap.calls if c.op == "caption"]
        assert len(captions) == 2 and st.image_count() == 0
        assert captions[0].text == vision.answer(Image.open(red), "Describe the image.", max_new_tokens=24)
        assert cap.answer(q).call.op == "generate"
    with pytest.raises(ValueError, match="images must be"):
        MemoryPipeline(llm, embedder, store, config=PipelineConfig(images="both"))


def test_memlora_eval_visual_on_a_bundle(tiny_vision_bundle, tmp_path):
    """`memlora-eval --visual`: the three paths on one conversation, the visual questions answered by the vision
    op only on the pixels path, each from the image its question names; bad --visual input gets one line."""
    import json

    from exporter.reference import eval_main as main

    turns = [{"speaker": "Ana", "dia_id": f"D1:{i}", "text": t} for i, t in enumerate(
        ["I adopted a cat named Miso last week.", "That's lovely! I started learning the cello.",
         "Miso sleeps on my keyboard all day.", "My teacher says I practise too little."], 1)]
    data = tmp_path / "locomo.json"
    data.write_text(json.dumps([{
        "sample_id": "conv-v", "conversation": {"speaker_a": "Ana", "speaker_b": "Ben",
                                                "session_1_date_time": "8 May 2023", "session_1": turns},
        "qa": [{"question": "What is the name of Ana's cat?", "answer": "Miso", "evidence": ["D1:1"], "category": 4}],
    }]))
    out = tmp_path / "eval"
    common = ["--data", str(data), "--split", "all", "--bundle", str(tiny_vision_bundle), "--window", "3",
              "--max-new-tokens", "extract=12,update=12,generate=6"]
    assert main([*common, "--visual", "--visual-shares", "3", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    paths = rep["visual"]["paths"]
    assert list(paths) == ["text", "caption", "pixels"]
    assert paths["text"]["visual"]["all"]["n"] == 0 and paths["text"]["qa"]["overall"]["n"] == 1
    assert paths["caption"]["visual"]["all"]["n"] == 6 and paths["caption"]["visual"]["routed_to_vqa"] == 0
    assert paths["pixels"]["visual"]["routed_to_vqa"] == 6 and paths["pixels"]["visual"]["image_retrieved"] == 6
    assert paths["pixels"]["timing"]["per_op"]["vqa"]["calls"] == 6
    assert paths["caption"]["timing"]["per_op"]["caption"]["calls"] == 3
    vis = rep["details"][0]["visual"]
    assert all(v["op"] == "vqa" and v["image_turn"] == v["dia_id"] for v in vis)
    assert {v["kind"] for v in vis} <= {"color", "shape", "yes/no"} and "| pixels | 6 |" in (out / "report.md").read_text()
    assert (out / "store-conv-v-pixels.sqlite").is_file() and (out / "store-conv-v-caption.sqlite").is_file()
    # gold-caption: the images replaced by perfect captions in the text pipeline; no vision call at all.
    assert main([*common, "--visual", "--visual-shares", "3", "--visual-paths", "gold-caption", "--out",
                 str(tmp_path / "gold")]) == 0
    g = json.loads((tmp_path / "gold" / "report.json").read_text())["visual"]["paths"]["gold-caption"]
    assert g["visual"]["all"]["n"] == 6 and g["visual"]["routed_to_vqa"] == 0
    assert set(g["timing"]["per_op"]) == {"extract", "update", "generate"}
    assert main([*common, "--visual", "--visual-paths", "pixels,bogus", "--out", str(tmp_path / "e2")]) == 1
    assert main([*common[:4], *common[6:], "--visual", "--out", str(tmp_path / "e3")]) == 1  # no --bundle
    assert not (tmp_path / "e2").exists() and not (tmp_path / "e3").exists()
