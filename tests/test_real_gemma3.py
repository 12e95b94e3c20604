"""The real embedded Gemma-3-270M base (no chat template) on the PyTorch reference, as `memlora-eval --few-shot`
runs it: the plain framing its bundle carries, with <bos>, and one worked example making the base model write a
constrained extraction that parses."""

import json

import pytest

from exporter.reference import ReferenceLLM
from runtimes.chat import PLAIN
from runtimes.memory.constrain import JsonConstraint
from runtimes.memory.fewshot import FewShotLLM, Shot
from runtimes.memory.parse import parse_extract
from runtimes.memory.prompts import extract_messages

pytestmark = pytest.mark.real

TURNS = [{"speaker": "Jolene", "dia_id": "D1:1", "text": "My mum bought me this pendant in Paris in 2010."},
         {"speaker": "Deborah", "dia_id": "D1:2", "text": "Lovely! I teach yoga on the beach every Sunday."}]
SHOT_TURNS = [{"speaker": "John", "dia_id": "D9:1", "text": "I adopted a puppy called Max from a shelter in Ohio."},
              {"speaker": "James", "dia_id": "D9:2", "text": "Congrats! I started learning the guitar last week."}]
SHOT = Shot(extract_messages(SHOT_TURNS, "2 May, 2022"), json.dumps(
    {"facts": ["John adopted a puppy called Max from a shelter in Ohio.", "James started learning the guitar."]},
    separators=(", ", ": ")))


def test_real_gemma3_base_few_shot_extracts():
    ref = ReferenceLLM("gemma3-270m")
    assert not getattr(ref.tokenizer, "chat_template", None)  # the base model: plain lines, not a chat
    msgs = extract_messages(TURNS, "8 May, 2023")
    ids = ref.encode(msgs)
    assert ids[0] == ref.tokenizer.bos_token_id and ref.tokenizer.decode(ids[1:]) == PLAIN.render(msgs)
    llm = FewShotLLM(ref, {"extract": [SHOT]})
    c = JsonConstraint.for_op("extract", ref.tokenizer, ref.stop_token_ids("extract"))
    g = llm.generate("extract", messages=msgs, max_new_tokens=96, constraint=c)
    assert g.stop_reason == "stop_token" and len(g.prompt_tokens) > len(ids) + 40  # the shot came before the prompt
    facts = parse_extract(g.text)
    assert facts and any(w in " ".join(facts) for w in ("Jolene", "Deborah", "pendant", "yoga"))  # about these turns
