"""memlora-train: distillation data (split, determinism, the UPDATE / DELETE procedure), label masking, a tiny
training run that lowers the loss and resumes to the same weights, and the committed adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "locomo_dev.json"
needs_data = pytest.mark.skipif(not DATA.is_file(), reason=f"LoCoMo data not found at {DATA}")


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory) -> Path:
    """Two LoCoMo conversations cut to their first three sessions (and a few questions about those sessions)."""
    if not DATA.is_file():
        pytest.skip(f"LoCoMo data not found at {DATA}")
    raw = json.loads(DATA.read_text())[:2]
    for s in raw:
        c = s["conversation"]
        for k in [k for k in c if k.startswith("session_")]:
            n = int(k.split("_")[1])
            if n > 3:
                del c[k]
        s["observation"] = {k: v for k, v in s["observation"].items() if int(k.split("_")[1]) <= 3}
        s["qa"] = [q for q in s["qa"] if q.get("evidence") and all(str(e).startswith(("D1:", "D2:", "D3:"))
                                                                     for e in q["evidence"])][:4]
    p = tmp_path_factory.mktemp("mini") / "mini_locomo.json"
    p.write_text(json.dumps(raw))
    return p


@pytest.fixture(scope="module")
def embedder():
    from exporter.train.data import default_embedder

    return default_embedder()


# ------------------------------------------------------------------------------------------------ data
@needs_data
def test_split_is_by_conversation_and_deterministic():
    from exporter.train import data as D
    from runtimes.memory import locomo

    tr, va = D.build("extract", "train", DATA), D.build("extract", "val", DATA)
    ids_tr = {e.meta["sample_id"] for e in tr}
    ids_va = {e.meta["sample_id"] for e in va}
    all_ids = [c.sample_id for c in locomo.load(DATA)]
    assert ids_tr.isdisjoint(ids_va) and ids_tr | ids_va == set(all_ids)
    assert sorted(ids_va) == sorted(all_ids[-locomo.VAL_COUNT:])  # the split runtimes.memory.locomo defines
    again = D.build("extract", "train", DATA)
    assert [e.to_dict() for e in again] == [e.to_dict() for e in tr]
    # targets are compact JSON with the facts of the window's own turns
    e = next(x for x in tr if x.meta["kind"] == "facts")
    assert e.target.startswith('{"facts": ["') and "\n" not in e.target
    assert json.loads(e.target)["facts"]
    assert e.messages[1]["content"].startswith("Session date: ")


def test_clause_head_and_negation_rules():
    from exporter.train.data import clause_head, negate

    assert clause_head("Melanie painted a lake sunrise last year which holds special meaning to her.") == \
        "Melanie painted a lake sunrise last year."
    assert clause_head("Jon likes dancing.") is None
    sp = ("Caroline", "Melanie")
    assert negate("Melanie plays the violin every evening.", sp) == "Melanie no longer play the violin every evening."
    assert negate("Caroline is currently learning the piano.", sp) == "Caroline is no longer learning the piano."
    assert negate("Caroline is a counselor.", sp) is None  # only activities ("is <verb>ing") are negated
    assert negate("Gina plays chess.", sp) is None  # subject must be a speaker


def test_generate_split_never_splits_a_conversation(mini_data, embedder):
    from exporter.train import data as D

    tr = D.build("generate", "train", mini_data, embedder=embedder)
    va = D.build("generate", "val", mini_data, embedder=embedder)
    assert tr and va
    assert {e.meta["sample_id"] for e in tr}.isdisjoint({e.meta["sample_id"] for e in va})
    for e in tr + va:  # the pipeline's own generate prompt: dated memories, the question, the gold answer
        assert e.messages[1]["content"].startswith("Memories:\n[") and e.meta["question"] in e.messages[1]["content"]
        assert e.target and e.meta["category"] in (1, 2, 3, 4)


def test_update_procedure(mini_data, embedder):
    from exporter.train import data as D
    from runtimes.memory import locomo
    from runtimes.memory.parse import parse_update

    convs = locomo.load(mini_data)
    rates = D.Rates(update=0.6, delete=0.6, repeat=0.6)
    a = D.update_examples(convs, embedder, seed=3, rates=rates)
    b = D.update_examples(convs, embedder, seed=3, rates=rates)
    c = D.update_examples(convs, embedder, seed=4, rates=rates)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]  # seeded: reproducible
    assert [e.target for e in a] != [e.target for e in c]
    kinds = {k for e in a for k in e.meta["kinds"]}
    assert {"ADD", "UPDATE", "DELETE", "REPEAT"} <= kinds
    for e in a:
        user = e.messages[1]["content"]
        memories, facts = user.split("\nNew facts:\n")
        shown = {} if memories.endswith("(none)") else dict(
            ln.split(": ", 1) for ln in memories.removeprefix("Stored memories:\n").splitlines())
        new_facts = [ln[2:] for ln in facts.splitlines()]
        events = parse_update(e.target)
        assert len(events) == len(new_facts) == len(e.meta["kinds"])
        assert list(json.loads(e.target)["memory"][0])[:3] == ["id", "text", "event"]
        next_id = len(shown)
        for fact, ev, kind in zip(new_facts, events, e.meta["kinds"]):
            if ev["event"] == "ADD":
                assert ev["id"] == str(next_id) and ev["text"] == fact
                next_id += 1
                continue
            assert ev["id"] in shown  # UPDATE / DELETE / NONE name a memory the prompt shows
            if kind == "UPDATE":  # a more detailed version of the shown memory
                assert ev["old_memory"] == shown[ev["id"]] and ev["text"] == fact
                assert fact.startswith(ev["old_memory"][:-1])
            elif kind == "DELETE":  # the new fact contradicts the shown memory
                speakers = next(c.speakers for c in convs if c.sample_id == e.meta["sample_id"])
                assert ev["text"] == shown[ev["id"]] and fact == D.negate(shown[ev["id"]], speakers)
            else:  # REPEAT / natural NONE: already known
                assert ev["event"] == "NONE" and ev["text"] == shown[ev["id"]]
        assert len(shown) <= 10


# ------------------------------------------------------------------------------------------------ tokenization
def test_label_masking_matches_inference_encoding(smollm2_dir):
    from transformers import AutoConfig, AutoTokenizer

    from exporter.pipeline import stop_token_ids
    from exporter.train.data import Example
    from exporter.train.trainer import encode, end_of_turn
    from runtimes.memory.prompts import extract_messages

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    eot = end_of_turn(tok, stop_token_ids(tok, AutoConfig.from_pretrained(smollm2_dir)))
    assert tok.convert_ids_to_tokens(eot) == ["<|im_end|>"]
    msgs = extract_messages([{"speaker": "Ann", "text": "I adopted a cat named Tom."}], "1:56 pm on 8 May, 2023")
    ex = Example("extract", msgs, '{"facts": ["Ann adopted a cat named Tom."]}')
    enc = encode(tok, ex, eot)
    prompt = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    n = len(prompt)
    assert enc.ids[:n] == prompt and enc.labels[:n] == [-100] * n  # no loss on the prompt
    assert tok.decode(enc.labels[n:]) == ex.target + "<|im_end|>"  # loss on the answer and its end-of-turn
    assert enc.ids[n:] == enc.labels[n:]


# ------------------------------------------------------------------------------------------------ training
def _lora(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@needs_data
def test_tiny_training_lowers_loss_and_resumes(tiny_llama, tmp_path):
    from exporter.train import data as D
    from exporter.train.trainer import TrainConfig, train

    examples = D.build("extract", "train", DATA)[:6]
    kw = dict(op="extract", base=str(tiny_llama), rank=4, alpha=8.0, lr=2e-2, steps=6, warmup=1, max_len=512,
              val_examples=6, val_decode=0, checkpoint_every=3, threads=1)
    full = train(TrainConfig(out=str(tmp_path / "full"), **kw), train_examples=examples, val_examples=examples,
                 progress=False)
    v = full["validation"]
    # it learned the (training) answers; a tiny random model starts at ln(vocab) = 10.8 and moves slowly
    assert v["val_loss"] < v["base_val_loss"] - 0.1
    out = tmp_path / "full"
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                     "training_config.json", "validation.json"]
    assert all(t.dtype == torch.float16 for t in _lora(out).values())
    assert not Path(str(out) + ".checkpoints").exists()

    # Resumed, with the validation curve on (the loss every 2 steps changes nothing of the training itself).
    cfg = TrainConfig(out=str(tmp_path / "resumed"), val_every=2, **kw)
    first = train(cfg, train_examples=examples, val_examples=examples, progress=False, stop_after=3)
    assert first["stopped_at"] == 3 and not (tmp_path / "resumed").exists()
    ckpts = sorted(cfg.checkpoint_dir.glob("step-*"))
    assert [p.name for p in ckpts] == ["step-000003"]
    assert not list(cfg.checkpoint_dir.rglob("*.bin")) and not list(cfg.checkpoint_dir.rglob("*.pt"))
    second = train(cfg, train_examples=examples, val_examples=examples, progress=False)
    assert [h["loss"] for h in second["history"]] == pytest.approx([h["loss"] for h in full["history"]], rel=1e-4)
    curve = {h["step"]: h["val_loss"] for h in second["history"] if "val_loss" in h}
    assert sorted(curve) == [2, 4] and all(0 < v < 12 for v in curve.values())
    a, b = _lora(out), _lora(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


@needs_data
def test_one_adapter_for_all_ops(tiny_llama, mini_data, embedder, tmp_path):
    """--op all: one adapter trained on the three ops' examples together, scored on each op's own items."""
    from exporter.train import data as D
    from exporter.train.trainer import TrainConfig, train

    ex = {op: D.build(op, "train", mini_data, embedder=embedder)[:2] for op in D.OPS}
    va = {op: D.build(op, "val", mini_data, embedder=embedder)[:2] for op in D.OPS}
    assert all(ex.values()) and all(va.values())
    cfg = TrainConfig(op="all", out=str(tmp_path / "all"), base=str(tiny_llama), rank=4, alpha=8.0, lr=2e-2, steps=3,
                      warmup=1, max_len=768, val_examples=6, val_decode=1, eval_base=False, threads=1)
    s = train(cfg, train_examples=[e for v in ex.values() for e in v], val_examples=[e for v in va.values() for e in v],
              progress=False, embed=embedder.embed)
    dec = s["validation"]["decode"]
    assert sorted(dec) == sorted(D.OPS) and all(d["adapter"]["items"] == 1 for d in dec.values())
    assert "json_valid" in dec["extract"]["adapter"] and "f1" in dec["generate"]["adapter"]
    assert s["prompt_template"] == {"extract": "memlora.extract.v1", "update": "memlora.update.v1",
                                    "generate": "memlora.generate.v1"}
    with pytest.raises(Exception, match="--op must be one of"):
        TrainConfig(op="everything", out=str(tmp_path / "x"))


def test_train_cli_bad_input(tmp_path, capsys):
    from exporter.train.cli import main

    assert main(["--op", "extract", "--data", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")]) == 1
    assert "data file not found" in capsys.readouterr().err
    assert main(["--op", "extract", "--targets", "lm_head", "--out", str(tmp_path / "o")]) == 1
    assert "not LoRA targets" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ committed adapters
def test_committed_adapters_load_onto_smollm2(smollm2_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from exporter.load import embedded_adapters, load_adapter

    paths = embedded_adapters("smollm2-135m")
    assert list(paths) == ["extract", "update", "generate"]
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    cfg = model.config
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        ref = model(ids).logits
    peft = None
    for op, d in paths.items():
        d = Path(d)
        assert sorted(p.name for p in d.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                       "training_config.json", "validation.json"]
        ac = json.loads((d / "adapter_config.json").read_text())
        tc = json.loads((d / "training_config.json").read_text())
        assert ac["peft_type"] == "LORA" and ac["r"] == tc["config"]["rank"]
        assert sorted(ac["target_modules"]) == sorted(tc["config"]["targets"])
        w = _lora(d)
        assert all(t.dtype == torch.float16 for t in w.values())
        a = load_adapter(op, d)  # the exporter's reader: shapes per layer / module
        assert {layer for layer, _ in a.weights} == set(range(cfg.num_hidden_layers))
        for (layer, mod), (A, B) in a.weights.items():
            lin = getattr(model.model.layers[layer].self_attn, mod, None) or getattr(model.model.layers[layer].mlp, mod)
            assert A.shape == (a.rank, lin.in_features) and B.shape == (lin.out_features, a.rank)
        name = f"memlora_{op}"
        peft = PeftModel.from_pretrained(model, str(d), adapter_name=name) if peft is None else peft
        if op != "extract":
            peft.load_adapter(str(d), adapter_name=name)
        peft.set_adapter(name)
        with torch.no_grad():
            out = peft(ids).logits
        assert (out - ref).abs().max() > 1e-3  # the adapter changes the model
        v = json.loads((d / "validation.json").read_text())
        assert v["val_loss"] < v["base_val_loss"]


def test_android_export_defaults_to_embedded_adapters():
    from exporter.cli import build_parser, spec_from_args
    from exporter.load import embedded_adapters

    spec = spec_from_args(build_parser().parse_args(["--target", "android"]))
    assert spec.adapters.paths == embedded_adapters("smollm2-135m") and spec.adapters.strategy == "separate"
    assert spec_from_args(build_parser().parse_args(["--target", "android", "--adapters", "merged"])).adapters.paths
    none = spec_from_args(build_parser().parse_args(["--target", "android", "--adapters", "none"]))
    assert none.adapters.paths == {} and none.adapters.strategy == "none"
    host = spec_from_args(build_parser().parse_args(["--target", "host"]))
    assert host.adapters.paths == {} and host.adapters.strategy == "none"
