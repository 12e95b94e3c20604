"""The visual memory benchmark's generator (seeded, from easy-VQA test) and its scoring rule; shared images in the
store (kept inside the SQLite file, retrieved by the text they were shared with)."""

import io

import numpy as np
import pytest

from runtimes.memory import visual
from runtimes.memory.locomo import Conversation, Session
from runtimes.memory.store import MemoryStore


def _conv(sid="conv-a"):
    sessions = [Session(index=i, date=f"{i} May 2023", turns=[{"speaker": "Ana" if j % 2 else "Ben",
                                                                  "dia_id": f"D{i}:{j}", "text": f"turn {i}.{j}"}
                                                                 for j in range(1, 6)]) for i in (1, 2, 3)]
    return Conversation(sample_id=sid, speakers=("Ana", "Ben"), sessions=sessions, qa=[], observations={})


def test_augment_is_seeded_and_points_each_question_at_its_share():
    import easy_vqa

    conv = _conv()
    a, qa = visual.augment(conv, seed=3, shares=5, sessions=[2, 3])
    b, qb = visual.augment(conv, seed=3, shares=5, sessions=[2, 3])
    _, qc = visual.augment(conv, seed=4, shares=5, sessions=[2, 3])
    assert qa == qb and a.sessions == b.sessions and qa != qc
    assert [len(s.turns) for s in conv.sessions] == [5, 5, 5]  # the input is not modified
    shared = {t["dia_id"]: t for s in a.sessions for t in s.turns if "image" in t}
    assert len(shared) == 5 and len(a.sessions[0].turns) == 5  # only in the sessions asked for
    assert sum(len(s.turns) for s in a.sessions) == 20
    assert len(qa) == 10 and {q.dia_id for q in qa} == set(shared)
    texts, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    truth = {(str(paths[i]), q): ans for q, ans, i in zip(texts, answers, image_ids)}
    for q in qa:
        turn = shared[q.dia_id]
        assert turn["image"] == q.image and truth[(q.image, q.vqa_question)] == q.answer  # easy-VQA's gold answer
        subject = next(s for s in visual.SUBJECTS if s in turn["text"])
        assert q.question.startswith(f"In the photo of {subject} that {turn['speaker']} shared, ")
        assert q.kind == visual.kind_of(q.answer)
    assert len({q.image for q in qa}) == 5  # a different image per share
    for t in shared.values():  # a perfect caption: the image's own colour and shape answers
        truth = {ans for q, ans, i in zip(texts, answers, image_ids) if str(paths[i]) == t["image"]} - {"yes", "no"}
        words = t["gold_caption"].split()
        assert words[0] == "a" and 2 <= len(words) <= 3 and visual.kind_of(words[-1]) in ("color", "shape")
        for w in truth:  # every open answer about the image is in its caption
            assert w in words, (t["gold_caption"], truth)
    gold = visual.with_gold_captions(a)
    swapped = [t for s in gold.sessions for t in s.turns if t["dia_id"] in shared]
    assert [t["blip_caption"] for t in swapped] == [shared[t["dia_id"]]["gold_caption"] for t in swapped]
    assert not any("image" in t or "gold_caption" in t for t in swapped)
    assert [q.kind == "yes/no" for q in qa] == [False, True] * 5  # an open question, then a yes/no one
    with pytest.raises(visual.VisualDataError):
        visual.augment(conv, shares=len(visual.SUBJECTS) + 1)


def test_correct_needs_exactly_the_gold_answer_word():
    vocab = visual.answer_words()
    assert visual.correct("red", "red", vocab) and visual.correct("It was a red circle.", "red", vocab)
    assert visual.correct("A red one", "red", vocab) and visual.correct("Yes.", "yes", vocab)
    assert not visual.correct("red or blue", "red", vocab) and not visual.correct("no", "yes", vocab)
    assert visual.correct("a red circle", "circle", vocab) and not visual.correct("no, a circle", "yes", vocab)
    assert not visual.correct("", "red", vocab) and not visual.correct("reddish", "red", vocab)
    # the caption of an image: open answers, and what a yes/no question confirms (negations flipped)
    assert visual.gold_caption([("is there not a red shape?", "no"), ("what shape is present?", "circle")]) == "a red circle"
    assert visual.gold_caption([("is there a blue shape?", "no"), ("does the image contain a triangle?", "yes")]) == "a triangle"
    assert visual.kind_of("teal") == "color" and visual.kind_of("triangle") == "shape" and visual.kind_of("no") == "yes/no"


def _png(rgb):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_store_keeps_images_inside_itself(tmp_path):
    e = np.eye(4, dtype=np.float32)
    with MemoryStore(tmp_path / "s.sqlite") as st:
        a = st.add_image(_png((255, 0, 0)), context="Ana: the sign", embedding=e[0] * 3, owner="c", turn_id="D1:1",
                         shared_at="2023-05-08T00:00:00")
        b = st.add_image(_png((0, 0, 255)), context="Ben: the kite", embedding=e[1], owner="c", turn_id="D2:4")
        st.add_image(_png((0, 255, 0)), context="someone else's", embedding=e[0], owner="x")
        with pytest.raises(ValueError, match="PNG"):
            st.add_image(b"GIF89a...", context="x", embedding=e[0], owner="c")
        hits = st.search_images(e[1] + 0.1 * e[0], 2, owner="c")
        assert [h.id for h, _ in hits] == [b, a] and hits[0][1] > hits[1][1]
        assert st.image_count("c") == 2 and st.image_count() == 3
        got = st.get_image(a)
        assert got.image().getpixel((3, 3)) == (255, 0, 0) and got.shared_at == "2023-05-08T00:00:00"
        st.add(["Ana likes kites"], owner="c", embed_fn=lambda t: np.ones((len(t), 4)))  # same dims as the images
    with MemoryStore(tmp_path / "s.sqlite") as st:  # reopened: all there
        assert st.image_count() == 3 and st.count() == 1 and st.get_image(99) is None


def test_an_unreadable_shared_image_is_one_clear_error(tmp_path):
    from runtimes.memory.pipeline import MemoryPipeline

    class Emb:
        def embed(self, texts):
            return np.ones((len(texts), 4), dtype=np.float32)

    (tmp_path / "notes.txt").write_text("not an image")
    with MemoryStore(tmp_path / "s.sqlite") as st:
        pipe = MemoryPipeline(None, Emb(), st, owner="c")
        for bad in (str(tmp_path / "notes.txt"), str(tmp_path / "missing.png"), b"\x89PNG\r\n\x1a\ntruncated"):
            with pytest.raises(ValueError, match=r"^turn D1:2: the shared image .* cannot be read \("):
                pipe.add_turns([{"speaker": "Ana", "dia_id": "D1:2", "text": "look", "image": bad}], "8 May 2023")
        assert st.image_count() == 0 and st.count() == 0  # nothing half-written
        pipe.share_image({"speaker": "Ana", "dia_id": "D1:3", "text": "look", "image": _png((1, 2, 3))}, "8 May 2023")
        assert st.image_count("c") == 1
