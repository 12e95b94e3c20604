"""Prompts as data: the chat format the exporter derives from the model's template renders exactly what the template
renders, readers build prompts by substitution alone and get today's token ids, schema 1 bundles still load."""

from __future__ import annotations

import json
import shutil

import pytest

from exporter.chatformat import check, derive
from exporter.errors import UnsupportedError
from runtimes import prompts
from runtimes.chat import PLAIN, ChatFormat, OpPrompt, PromptError
from runtimes.memory import prompts as mp


def _conversations():
    turns = [{"speaker": "Ann", "text": " I moved to {Oslo}  last week ", "dia_id": "D1:1"},
             {"speaker": "Bo", "text": "Nice!\n", "dia_id": "D1:2", "blip_caption": "a fjord"}]
    mems = [{"id": 7, "text": "Ann lives in Bergen", "updated_at": "2023-05-08T13:56:00"}]
    return [*[prompts.render(t, **f) for t, fs in prompts.FIDELITY_SAMPLES.items() for f in fs],
            mp.extract_messages(turns, "1:56 pm on 8 May, 2023"), mp.update_messages(["Ann moved to Oslo"], mems)[0],
            mp.update_messages([], [])[0], mp.generate_messages("  Where does Ann live?\n", mems),
            [{"role": "user", "content": "Where does Caroline live?"}],
            [{"role": "system", "content": "  padded  "}, {"role": "user", "content": "\n\ttabs\n"}]]


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_smollm2_template_as_framing(tok):
    fmt = derive(tok)
    assert fmt.roles["user"] == ("<|im_start|>user\n", "<|im_end|>\n")
    assert fmt.generation_prompt == "<|im_start|>assistant\n"
    assert fmt.default_system and "SmolLM" in fmt.default_system  # the template's own system text for a lone user
    for msgs in _conversations():
        assert fmt.render(msgs) == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    check(fmt, tok, _conversations())
    assert ChatFormat.from_dict(json.loads(json.dumps(fmt.to_dict()))) == fmt


def test_template_that_changes_content_is_refused(tok):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(tok.name_or_path)
    t.chat_template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}\n{% endfor %}"
                       "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    with pytest.raises(UnsupportedError, match="per-role framing"):
        check(derive(t), t, _conversations())
    t.chat_template = "{{ messages[0].content }}{{ messages[0].content }}"
    with pytest.raises(UnsupportedError, match="exactly once"):
        derive(t)


def test_plain_models_keep_todays_text():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert PLAIN.render(msgs) == "\n".join(m["content"] for m in msgs) + "\n" and PLAIN.add_special_tokens


def test_op_prompt_is_substitution_only():
    for tpl in prompts.TEMPLATES:
        p = OpPrompt.from_dict(prompts.op_prompt(tpl).to_dict())
        f = prompts.SAMPLE_FIELDS[tpl]
        assert p.messages(**f) == prompts.render(tpl, **f)
    p = prompts.op_prompt("memlora.generate.v1")
    assert p.messages(memories="{x}", question="{memories}")[1]["content"] == "Memories:\n{x}\nQuestion: {memories}"
    with pytest.raises(PromptError, match="question"):
        p.messages(memories="m")
    for bad in ({"id": "x", "system": "s", "user": "a {b} {c}", "fields": ["b"]},
                {"id": "x", "system": "s", "user": "a {b} }", "fields": ["b"]},
                {"id": "x", "system": 3, "user": "", "fields": []}):
        with pytest.raises(PromptError):
            OpPrompt.from_dict(bad)


def test_bundle_prompts_give_todays_token_ids(tmp_path, tiny_llama):
    """A schema 2 bundle (framing + op prompts) encodes every op prompt to the same ids as the Jinja template; the
    same bundle as schema 1 still loads and renders through the template; schema 3 is refused with one line."""
    from exporter.cli import main
    from runtimes.executorch import ExecuTorchRuntime
    from runtimes.manifest import BundleError, load_manifest

    out = tmp_path / "b"
    assert main(["--base", str(tiny_llama), "--adapters", "none", "--quant", "fp32", "--skip-fidelity",
                 "--no-embedder", "--out", str(out)]) == 0
    m = load_manifest(out)
    assert m.raw["schema_version"] == 2 and m.chat_format is not None
    assert m.ops["update"].prompt == prompts.op_prompt("memlora.update.v1")
    rt = ExecuTorchRuntime(m)
    framed = [rt.encode(msgs) for msgs in _conversations()]
    framed.append(rt.encode(prompt="hi"))

    old = tmp_path / "v1"
    shutil.copytree(out, old)
    raw = json.loads((old / "manifest.json").read_text())
    raw["schema_version"] = 1
    del raw["tokenizer"]["chat_format"]
    for op in raw["ops"].values():
        del op["prompt"]
    (old / "manifest.json").write_text(json.dumps(raw))
    m1 = load_manifest(old)
    assert m1.chat_format is None and m1.ops["update"].prompt is None
    rt1 = ExecuTorchRuntime(m1)
    assert [rt1.encode(msgs) for msgs in _conversations()] + [rt1.encode(prompt="hi")] == framed

    raw["schema_version"] = 3
    (old / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema_version 3 is not supported.*update memlora"):
        load_manifest(old)
