"""Scores (hand-checked), LoCoMo parsing / windows / split, and prompt formatting."""

import math

import numpy as np
import pytest

from runtimes.memory import locomo, metrics
from runtimes.memory.pipeline import clean_answer
from runtimes.memory.prompts import (display_date, format_facts, format_memories, format_turns, generate_messages,
                                     to_iso)


@pytest.mark.parametrize("pred, ref, want", [
    ("The answer is Denver.", "Denver", 2 * 0.25 * 1 / 1.25),  # p = 1/4, r = 1
    ("7 May 2023", "7 May, 2023", 1.0),                         # punctuation stripped
    ("DENVER, Colorado!", "denver colorado", 1.0),              # lower-cased
    ("denver denver", "Denver", 1.0),                           # token sets
    ("2022", 2022, 1.0),                                        # LoCoMo has integer answers
    ("Boston", "Denver", 0.0),
    ("", "Denver", 0.0),
])
def test_f1(pred, ref, want):
    assert metrics.f1(pred, ref) == pytest.approx(want)


@pytest.mark.parametrize("pred, ref, want", [
    ("Denver", "Denver", 1.0),
    ("in Denver Colorado", "Denver", 1 / 3),             # 1 of 3 unigrams, no brevity penalty
    ("denver denver denver", "Denver", 1 / 3),           # clipped counts
    ("Denver", "moved to Denver", math.exp(1 - 3)),      # precision 1 x brevity penalty exp(1 - 3/1)
    ("Boston", "Denver", 0.1),                           # NLTK smoothing method1: 0.1 / len
    ("", "Denver", 0.0),
])
def test_bleu1(pred, ref, want):
    assert metrics.bleu1(pred, ref) == pytest.approx(want)


def test_fact_matching_is_one_to_one_above_threshold():
    pred = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], dtype=np.float32)
    gold = np.array([[1, 0, 0], [0, 0.5, np.sqrt(0.75)]], dtype=np.float32)
    m = metrics.match_facts(pred, gold, threshold=0.6)
    # pred 0 takes gold 0 (cos 1.0); pred 1 (cos 0.8 to gold 0) finds it taken; pred 2 matches gold 1 (cos 0.866).
    assert [(i, j) for i, j, _ in m] == [(0, 0), (2, 1)]
    assert metrics.prf(len(m), 3, 2) == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8})
    assert metrics.match_facts(pred, gold, threshold=0.9) == [(0, 0, pytest.approx(1.0))]


SAMPLE = {
    "sample_id": "conv-x",
    "conversation": {
        "speaker_a": "Ann", "speaker_b": "Bo",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [{"speaker": "Ann", "dia_id": f"D1:{i}", "text": f"t{i}"} for i in range(1, 9)],
        "session_2_date_time": "10:00 am on 9 June, 2023",
        "session_2": [{"speaker": "Bo", "dia_id": "D2:1", "text": "hello", "blip_caption": "a dog"}],
        "session_3_date_time": "11:00 am on 1 July, 2023",  # a date without turns: no session
    },
    "qa": [{"question": "q1", "answer": "a", "category": 1, "evidence": ["D1:2"]},
           {"question": "q5", "adversarial_answer": "x", "category": 5},
           {"question": "q2", "answer": 2022, "category": 2, "evidence": ["D1:7; D2:1"]},
           {"question": "q3", "answer": "b", "category": 4}],
    "observation": {"session_1_observation": {"Ann": [["Ann likes tea.", "D1:2"], ["Ann runs.", ["D1:7", "D2:1"]]]}},
}


def test_locomo_windows_split_and_questions():
    c = locomo.parse_sample(SAMPLE)
    assert [s.index for s in c.sessions] == [1, 2]
    ws = list(c.windows(6))
    assert [w.dia_ids for w in ws] == [[f"D1:{i}" for i in range(1, 7)], ["D1:7", "D1:8"], ["D2:1"]]
    assert [w.gold_facts for w in ws] == [["Ann likes tea."], ["Ann runs."], ["Ann runs."]]
    assert ws[2].date == "10:00 am on 9 June, 2023"
    assert [q["question"] for q in c.questions()] == ["q1", "q2", "q3"]
    # A session slice keeps only questions whose evidence (also "D1:7; D2:1" joined strings) lies inside it.
    assert [q["question"] for q in c.questions(sessions={1})] == ["q1"]
    assert [q["question"] for q in c.questions(sessions={1, 2})] == ["q1", "q2"]
    convs = [locomo.parse_sample(dict(SAMPLE, sample_id=f"c{i}")) for i in range(5)]
    assert [x.sample_id for x in locomo.split(convs, "val")] == ["c3", "c4"]
    assert [x.sample_id for x in locomo.split(convs, "train")] == ["c0", "c1", "c2"]


def test_formatting():
    assert to_iso("1:56 pm on 8 May, 2023") == "2023-05-08T13:56:00" and display_date("2023-05-08T13:56:00") == "8 May 2023"
    assert format_turns(SAMPLE["conversation"]["session_2"]) == "Bo: hello [shares a photo: a dog]"
    assert format_facts(["a", "b"]) == "- a\n- b" and format_facts([]) == "(none)"
    mems = [{"id": 41, "text": "Ann likes tea", "updated_at": "2023-05-08T13:56:00"},
            {"id": 7, "text": "Bo has  a dog", "updated_at": "2023-06-09T10:00:00"}]
    assert format_memories(mems, with_dates=False) == ("0: Ann likes tea\n1: Bo has a dog", {"0": 41, "1": 7})
    assert format_memories(mems, with_dates=True)[0] == "[8 May 2023] Ann likes tea\n[9 June 2023] Bo has a dog"
    assert format_memories([], with_dates=False) == ("(none)", {})
    msgs = generate_messages(" Does Bo have a pet? ", mems)
    assert msgs[0]["role"] == "system" and msgs[1]["content"].endswith("Question: Does Bo have a pet?")
    assert clean_answer('\n"Answer: Denver"\nBecause ...') == "Denver"
