"""The memory pipeline end to end on a tiny exported bundle (ExecuTorch runtime + bundled MiniLM embedder) and on the
PyTorch reference; JSON-constrained decoding on both."""

import json

import numpy as np
import pytest

from exporter.pipeline import run
from exporter.spec import ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec
from runtimes.executorch import ExecuTorchRuntime
from runtimes.memory.constrain import JsonConstraint
from runtimes.memory.embed import BundleEmbedder
from runtimes.memory.parse import ParseError, parse_extract, parse_update
from runtimes.memory.pipeline import TURN_SHOWN_CHARS, MemoryPipeline, PipelineConfig
from runtimes.memory.prompts import extract_messages, format_memories, update_messages
from exporter.reference import ReferenceLLM
from runtimes.memory.store import MemoryStore

TURNS = [
    {"speaker": "Caroline", "dia_id": "D1:1", "text": "I went to an LGBTQ support group yesterday and it was so powerful."},
    {"speaker": "Melanie", "dia_id": "D1:2", "text": "That's great! I'm painting a sunrise for my kids this weekend."},
    {"speaker": "Caroline", "dia_id": "D1:3", "text": "I moved to Denver last month.", "blip_caption": "a city skyline"},
]
DATE = "1:56 pm on 8 May, 2023"
SHORT = {"extract": 48, "update": 64, "generate": 12}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_llama):
    out = tmp_path_factory.mktemp("mem") / "b"
    # target android (the default): the bundle carries the retrieval embedder.
    m = run(ExportSpec(model=ModelSpec(base=str(tiny_llama), max_seq_len=512), quant=QuantSpec("fp32"),
                       output=OutputSpec(str(out)), fidelity=FidelitySpec(enabled=False)))["manifest"]
    assert m["embedder"]["program"] in m["files"] and m["embedder"]["tokenizer"] in m["files"]
    return out


@pytest.fixture(scope="module")
def runtime(bundle):
    return ExecuTorchRuntime.from_bundle(bundle)


@pytest.fixture(scope="module")
def reference(tiny_llama):
    return ReferenceLLM(str(tiny_llama))


def validity(llm, constrained, n=3):
    ok = 0
    for i in range(n):
        c = JsonConstraint.for_op("extract", llm.tokenizer, [2]) if constrained else None
        g = llm.generate("extract", messages=extract_messages(TURNS[i:] + TURNS[:i], DATE), max_new_tokens=40,
                         constraint=c)
        try:
            parse_extract(g.text)
            ok += 1
        except ParseError:
            pass
    return ok


def test_constraint_makes_a_random_model_write_valid_json(runtime):
    # The random tiny model never writes the JSON shape by itself; under the mask it always does, within the budget.
    assert validity(runtime, constrained=False) == 0
    assert validity(runtime, constrained=True) == 3


def test_update_constraint_and_budget_closing(runtime):
    msgs, _ = update_messages(["Caroline moved to Denver"], [{"id": 4, "text": "Caroline lives in Boston"}])
    c = JsonConstraint.for_op("update", runtime.tokenizer, runtime.manifest.ops["update"].stop_token_ids)
    g = runtime.generate("update", messages=msgs, max_new_tokens=40, constraint=c)
    events = parse_update(g.text)  # complete, valid JSON although 40 tokens is short
    assert all(e["event"] in ("ADD", "UPDATE", "DELETE", "NONE") and e["id"].isdigit() for e in events)
    assert g.stop_reason == "stop_token" and len(g.tokens) < 40


def test_reference_and_bundle_decode_alike(runtime, reference):
    msgs = extract_messages(TURNS, DATE)
    assert reference.encode(msgs) == runtime.encode(msgs)  # same chat template, same tokens
    for constrained in (False, True):
        cs = [JsonConstraint.for_op("extract", llm.tokenizer, [2]) if constrained else None for llm in (runtime, reference)]
        a = runtime.generate("extract", messages=msgs, max_new_tokens=24, constraint=cs[0])
        b = reference.generate("extract", messages=msgs, max_new_tokens=24, constraint=cs[1])
        assert a.tokens == b.tokens, constrained


def test_reference_switches_adapters_per_op(tiny_llama, llama_adapters, reference):
    ref = ReferenceLLM(str(tiny_llama), {"extract": llama_adapters["extract"], "update": llama_adapters["update"]})
    msgs = extract_messages(TURNS, DATE)
    base = reference.generate("generate", messages=msgs, max_new_tokens=12).tokens
    ext = ref.generate("extract", messages=msgs, max_new_tokens=12).tokens
    upd = ref.generate("update", messages=msgs, max_new_tokens=12).tokens
    assert ref.generate("generate", messages=msgs, max_new_tokens=12).tokens == base  # no adapter: the bare base
    assert ext != base and upd != ext
    assert ref.generate("extract", messages=msgs, max_new_tokens=12).tokens == ext  # switching back is exact


def test_pipeline_end_to_end_on_bundle(bundle, runtime, tmp_path):
    embedder = BundleEmbedder.from_bundle(bundle)
    store = MemoryStore(tmp_path / "m.sqlite")
    seeded = ["Caroline lives in Boston", "Melanie has two kids", "Caroline likes hiking"]
    store.add(seeded, owner="conv-x", embed_fn=embedder.embed, source_turns=["D0:1"], now="2023-05-01T09:00:00")
    pipe = MemoryPipeline(runtime, embedder, store, owner="conv-x",
                          config=PipelineConfig(constrained=True, update_batch=2, max_new_tokens=SHORT))
    res = pipe.add_turns(TURNS, DATE)
    assert res.calls[0].op == "extract" and res.calls[0].ok and res.calls[0].stop_reason == "stop_token"
    assert [c.op for c in res.calls[1:]] == ["update"] * -(-len(res.facts) // 2) and all(c.ok for c in res.calls)
    # An update batch: the prompt shows the stored memories most similar to the facts under temporary ids; the
    # events the (random, constrained) model chose are applied in one transaction and logged.
    facts = ["Caroline moved to Denver last month", "Melanie paints sunrises"]
    shown = pipe.similar(facts)
    assert {m.text for m in shown} == set(seeded)  # 3 stored, top-5 per fact: all of them, best first
    rows_before, hist_before = store.count("conv-x"), len(store.history())
    applied, call = pipe.update(facts, date=DATE, source_turns=["D1:3"])
    assert call.ok and applied is not None
    events = parse_update(call.text)
    assert 1 <= len(events) <= len(shown) + len(facts) and all(int(e["id"]) < len(shown) + len(facts) for e in events)
    assert store.count("conv-x") == rows_before + len(applied.added) - len(applied.deleted)
    assert len(store.history()) == hist_before + applied.changed
    assert applied.changed + applied.unchanged + len(applied.skipped) == len(events)
    for mid in applied.added + applied.updated:
        m = store.get(mid)
        assert m.updated_at == "2023-05-08T13:56:00" and "D1:3" in m.source_turns
    ans = pipe.answer("Where does Caroline live?")
    assert ans.call.op == "generate" and ans.call.ok is None and ans.call.new_tokens > 0
    assert len(ans.memories) == min(store.count("conv-x"), pipe.config.answer_top_k)
    scores = [s for _, s in ans.memories]
    assert scores == sorted(scores, reverse=True)
    q = embedder.embed(["Where does Caroline live?"])[0]
    for m, s in ans.memories:
        assert s == pytest.approx(float(np.dot(store.get(m.id).embedding, q)), abs=1e-5)
    store.close()


def test_memlora_eval_cli_on_bundle(bundle, tmp_path):
    from exporter.reference import eval_main as main

    data = tmp_path / "locomo.json"
    turns = [dict(t, dia_id=f"D1:{i + 1}") for i, t in enumerate(TURNS)]
    data.write_text(json.dumps([{
        "sample_id": "conv-t",
        "conversation": {"speaker_a": "Caroline", "speaker_b": "Melanie", "session_1_date_time": DATE, "session_1": turns},
        "qa": [{"question": "Where did Caroline move?", "answer": "Denver", "evidence": ["D1:3"], "category": 4},
               {"question": "What did Caroline realize?", "adversarial_answer": "x", "evidence": [], "category": 5}],
        "observation": {"session_1_observation": {"Caroline": [["Caroline moved to Denver last month.", "D1:3"]]}},
    }]))
    out = tmp_path / "eval"
    assert main(["--data", str(data), "--split", "all", "--bundle", str(bundle), "--constrained", "--window", "3",
                 "--max-new-tokens", "extract=48,update=64,generate=12", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["embedder"] == "bundle" and rep["json_validity"]["extract"]["rate"] == 1.0
    assert rep["qa"]["4"]["n"] == 1 and rep["qa"]["overall"]["n"] == 1 and rep["extraction"]["gold"] == 1
    assert "| 4 single-hop | 1 |" in (out / "report.md").read_text()
    # What bench/memory_failures.py follows: each window's facts, each answer's evidence and retrieved memories.
    det = rep["details"][0]
    assert [w["dia_ids"] for w in det["windows_extracted"]] == [["D1:1", "D1:2", "D1:3"]]
    qa = det["qa"][0]
    with MemoryStore(out / "store-conv-t.sqlite") as st:
        stored = {m.id for m in st.all("conv-t")}
    assert qa["evidence"] == ["D1:3"] and len(qa["retrieved"]) == min(10, len(stored))
    assert {i for i, _ in qa["retrieved"]} <= stored
    assert main(["--data", str(tmp_path / "missing.json"), "--out", str(out)]) == 1
    assert main(["--data", str(data), "--conversations", "conv-zz", "--out", str(out)]) == 1
    assert main(["--data", str(data), "--split", "all", "--adapters", str(tmp_path), "--out", str(out)]) == 1


def test_eval_progress_in_a_log_file_is_a_line_per_tenth():
    """Not a terminal (a log file, CI): memlora-eval's long loops print a line at every tenth with elapsed time, and
    nothing for the last item (the per-conversation summary line follows); every item is still yielded once."""
    import io

    from runtimes.memory.eval import progress

    log = io.StringIO()
    assert list(progress(list(range(25)), "conv-x memorise", "win", stream=log)) == list(range(25))
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"memlora-eval: conv-x memorise {i}/25" for i in range(3, 25, 3)]
    assert all(line.endswith(" s)") for line in lines)
    log = io.StringIO()
    assert list(progress([1, 2], "q", "q", stream=log)) == [1, 2] and log.getvalue() == "memlora-eval: q 1/2 (0 s)\n"
    assert list(progress([], "q", "q", stream=log)) == []


def test_empty_store_adds_facts_without_an_update_call(tmp_path):
    """Nothing stored yet: the facts are ADDed without asking the model (add_to_empty_store); once memories exist the
    update op decides, and an UPDATE of an id that was never shown changes nothing (what the adapter tends to say on
    an empty store, which with the rule off keeps the store empty)."""
    from types import SimpleNamespace

    from tests.jvm_vectors import _embed_table

    outputs = ['{"facts": ["Caroline lives in Boston", "Melanie has kids"]}',
               '{"facts": ["Caroline moved to Denver"]}',
               '{"memory": [{"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", '
               '"old_memory": "Caroline lives in Boston"}]}']

    class Scripted:  # replays model outputs: tests the orchestration, not a model
        def __init__(self, outs):
            self.outs, self.ops = list(outs), []

        def generate(self, op, **_):
            self.ops.append(op)
            return SimpleNamespace(text=self.outs.pop(0), tokens=[], prompt_tokens=[], stop_reason="stop_token")

    _, embed = _embed_table(dim=16)
    llm = Scripted(outputs)
    with MemoryStore(tmp_path / "a.sqlite") as store:
        pipe = MemoryPipeline(llm, SimpleNamespace(embed=embed), store, owner="u",
                              config=PipelineConfig(constrained=False))  # replayed text: no mask to apply
        first = pipe.add_turns(TURNS[:1], DATE)
        assert [c.op for c in first.calls] == ["extract"] and first.applied[0].added and store.count("u") == 2
        pipe.add_turns(TURNS[2:], DATE)
        assert llm.ops == ["extract", "extract", "update"]
        assert sorted(m.text for m in store.all("u")) == ["Caroline moved to Denver", "Melanie has kids"]
    llm = Scripted([outputs[0], '{"memory": [{"id": "0", "text": "Caroline lives in Boston", "event": "UPDATE", '
                                '"old_memory": "x"}]}'])
    with MemoryStore(tmp_path / "b.sqlite") as store:
        pipe = MemoryPipeline(llm, SimpleNamespace(embed=embed), store, owner="u",
                              config=PipelineConfig(add_to_empty_store=False, constrained=False))
        r = pipe.add_turns(TURNS[:1], DATE)
        assert llm.ops == ["extract", "update"] and r.applied[0].skipped and store.count("u") == 0


def test_answer_shows_the_kept_turns_beside_the_memories(tmp_path):
    """Every turn is kept as it was said; the answer prompt shows the `answer_turns` most similar ones beside the
    memories, all oldest first with their dates; with answer_turns=0 only memories (the paper's pipeline)."""
    from types import SimpleNamespace

    from tests.jvm_vectors import _embed_table

    class Recorder:
        def __init__(self, outs):
            self.outs, self.messages = list(outs), []

        def generate(self, op, messages=None, **_):
            self.messages.append((op, messages))
            return SimpleNamespace(text=self.outs.pop(0), tokens=[], prompt_tokens=[], stop_reason="stop_token")

    _, embed = _embed_table(dim=16)
    llm = Recorder(['{"facts": ["Caroline moved to Denver"]}', '{"facts": []}', "Denver", "Denver"])
    with MemoryStore(tmp_path / "t.sqlite") as store:
        pipe = MemoryPipeline(llm, SimpleNamespace(embed=embed), store, owner="u",
                              config=PipelineConfig(constrained=False, answer_turns=2))
        pipe.add_turns(TURNS, DATE)
        pipe.add_turns(TURNS, DATE)  # the same window again: its turns are kept once
        assert store.turn_count("u") == 3 and store.count("u") == 1
        kept = {t.turn_id: t.text for t, _ in store.search_turns(embed(["x"])[0], 3, owner="u")}
        assert kept == {"D1:1": "Caroline: I went to an LGBTQ support group yesterday and it was so powerful.",
                        "D1:2": "Melanie: That's great! I'm painting a sunrise for my kids this weekend.",
                        "D1:3": "Caroline: I moved to Denver last month. [shares a photo: a city skyline]"}
        q = "Where did Caroline move?"
        a = pipe.answer(q)
        assert len(a.turns) == 2 and [s for _, s in a.turns] == sorted((s for _, s in a.turns), reverse=True)
        want = [t for t, _ in store.search_turns(embed([q])[0], 2, owner="u", query_text=q)]  # hybrid by default
        assert [t.id for t, _ in a.turns] == [t.id for t in want]
        prompt = llm.messages[-1][1][-1]["content"]
        lines = prompt.split("Memories:\n")[1].split("\nQuestion:")[0].splitlines()
        # The memory first (same date: memories before turns), then the turns in the order they were said.
        assert lines == ["[8 May 2023] Caroline moved to Denver"] + [f"[8 May 2023] {t.text}" for t in
                                                                     sorted(want, key=lambda t: t.id)]
        pipe.config.answer_turns = 0
        a = pipe.answer(q)
        assert a.turns == [] and llm.messages[-1][1][-1]["content"].count("[8 May 2023]") == 1
        # A very long message is kept whole and shown cut (TURN_SHOWN_CHARS), so it cannot crowd out the prompt.
        long = "Melanie: " + "y" * 5000
        store.add_turns([long], embed([long]), owner="u", turn_ids=["D2:1"], said_at="2023-06-01T10:00:00")
        pipe.config.answer_turns = 10
        llm.outs.append("x")
        a = pipe.answer(q)
        assert any(t.text == long for t, _ in a.turns)
        assert "[1 June 2023] Melanie: " + "y" * (TURN_SHOWN_CHARS - 9) + "\n" in llm.messages[-1][1][-1]["content"]


def test_few_shot_shows_examples_as_earlier_turns_and_ends_a_free_answer_at_its_line():
    """--few-shot: each shot's user message then its target as the assistant's turn, between the op's system message
    and its own prompt; ops without shots pass through; a free-text answer is cut at its first line break only when
    every shot answers in one line (a base model goes on with an imagined next example), a JSON op never."""
    from runtimes.base import Generation
    from runtimes.memory.fewshot import FewShotLLM, Shot

    class Echo:
        tokenizer = "tok"

        def __init__(self):
            self.seen = []

        def generate(self, op, messages=None, **kw):
            self.seen.append(messages)
            return Generation(op=op, text=" Denver\nQ: Where does Melanie live?\nA: Boston", tokens=[5, 6],
                              prompt_tokens=[1, 2, 3], stop_reason="max_new_tokens")

    shots = {"generate": [Shot([{"role": "system", "content": "S0"}, {"role": "user", "content": "Q1"}], "A1"),
                          Shot([{"role": "user", "content": "Q2"}], "A2")],
             "extract": [Shot([{"role": "user", "content": "T1"}], '{"facts": []}')], "update": []}
    inner = Echo()
    llm = FewShotLLM(inner, shots)
    assert llm.tokenizer == "tok"  # the wrapped model's tokenizer: the JSON mask is built from it
    g = llm.generate("generate", messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}])
    assert inner.seen[-1] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                              {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"},
                              {"role": "assistant", "content": "A2"}, {"role": "user", "content": "Q"}]
    assert g.text == "Denver" and g.tokens == [5, 6] and g.stop_reason == "max_new_tokens"
    upd = [{"role": "user", "content": "U"}]
    assert llm.generate("update", messages=upd).text.count("\n") == 2 and inner.seen[-1] == upd  # no shots
    e = llm.generate("extract", messages=[{"role": "user", "content": "T"}], constraint=object())
    assert "\n" in e.text and [m["content"] for m in inner.seen[-1]] == ["T1", '{"facts": []}', "T"]
    multi = FewShotLLM(Echo(), {"generate": [Shot([{"role": "user", "content": "Q1"}], "line 1\nline 2")]})
    assert "\n" in multi.generate("generate", messages=[{"role": "user", "content": "Q"}]).text
