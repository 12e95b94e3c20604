package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/**
 * MemoryCycle against runtimes/memory/pipeline.py: the recorded model outputs are replayed on both sides, so the two
 * must send the same prompts (same retrieval, same temporary ids), apply the same store changes and give the same
 * answers. (The model itself runs in the Python tests and on the phone; this checks the orchestration around it.)
 */
public class PipelineTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    @Test
    public void sameCallsStoreAndAnswersAsPython() throws Exception {
        Map<String, Object> v = Vectors.obj(Vectors.load("pipeline.json"));
        List<Object> calls = Vectors.arr(v.get("calls"));
        int[] next = {0};
        MemoryCycle.Llm replay = (op, messages, maxNew, onText) -> {
            Map<String, Object> c = Vectors.obj(calls.get(next[0]++));
            assertEquals("call " + (next[0] - 1) + " op", c.get("op"), op);
            Vectors.assertJsonEquals("call " + (next[0] - 1) + " (" + op + ") messages", c.get("messages"), Vectors.messageMaps(messages));
            assertEquals(c.get("max_new_tokens"), maxNew == null ? null : (Object) (long) maxNew);
            String out = (String) c.get("output");
            if (onText != null) onText.onText(out);
            return new MemoryCycle.Generation(out, 0, 0, "stop_token");
        };
        MemoryStore.EmbedFn table = StoreTest.table(v.get("embeddings"));
        File db = new File(tmp.getRoot(), "pipeline.sqlite");
        Map<String, Object> script = Vectors.obj(v.get("script"));
        try (MemoryStore store = new MemoryStore(db.getPath())) {
            MemoryCycle cycle = new MemoryCycle(replay, table::embed, store, "user", new MemoryCycle.Config(),
                    MemoryCycle.templatesOf(Vectors.bundle()));
            List<Object> expectAdded = Vectors.arr(v.get("add_turns"));
            int i = 0;
            for (Object o : Vectors.arr(script.get("turns"))) {
                Map<String, Object> step = Vectors.obj(o);
                MemoryCycle.AddTurnsResult r = cycle.addTurns(PromptTest.turns(step.get("turns")), (String) step.get("date"));
                Map<String, Object> want = Vectors.obj(expectAdded.get(i));
                Vectors.assertJsonEquals("add_turns " + i + " facts", want.get("facts"), new ArrayList<Object>(r.facts));
                List<Object> applied = new ArrayList<>();
                for (ApplyResult a : r.applied) applied.add(a.toMap());
                Vectors.assertJsonEquals("add_turns " + i + " applied", want.get("applied"), applied);
                List<Object> wantCalls = Vectors.arr(want.get("calls"));
                assertEquals(wantCalls.size(), r.calls.size());
                for (int k = 0; k < wantCalls.size(); k++) {
                    Map<String, Object> wc = Vectors.obj(wantCalls.get(k));
                    assertEquals(wc.get("op"), r.calls.get(k).op);
                    assertEquals(wc.get("ok"), r.calls.get(k).ok);
                    assertEquals(wc.get("error"), r.calls.get(k).error);
                }
                i++;
            }
            List<Object> questions = Vectors.arr(script.get("questions"));
            List<Object> answers = Vectors.arr(v.get("answers"));
            for (int q = 0; q < questions.size(); q++) {
                List<Object> qk = Vectors.arr(questions.get(q));
                Map<String, Object> want = Vectors.obj(answers.get(q));
                StringBuilder streamed = new StringBuilder();
                MemoryCycle.Answer a = cycle.answer((String) qk.get(0), qk.get(1) == null ? null : ((Long) qk.get(1)).intValue(), streamed::append);
                assertEquals(want.get("text"), a.text);
                assertEquals(a.call.text, streamed.toString());
                List<Object> ids = Vectors.arr(want.get("memories")), scores = Vectors.arr(want.get("scores"));
                assertEquals(ids.size(), a.memories.size());
                for (int k = 0; k < ids.size(); k++) {
                    assertEquals(((Long) ids.get(k)).longValue(), a.memories.get(k).memory.id);
                    assertEquals(((Number) scores.get(k)).doubleValue(), a.memories.get(k).score, 1e-5);
                }
                List<Object> turnIds = Vectors.arr(want.get("turns")), turnScores = Vectors.arr(want.get("turn_scores"));
                assertEquals(turnIds.size(), a.turns.size());
                for (int k = 0; k < turnIds.size(); k++) {
                    assertEquals(((Long) turnIds.get(k)).longValue(), a.turns.get(k).id);
                    assertEquals(((Number) turnScores.get(k)).doubleValue(), a.turns.get(k).score, 1e-5);
                }
            }
            assertEquals("every recorded call was made", calls.size(), next[0]);
        }
        StoreTest.assertRows("final store", Vectors.obj(v.get("final")), StoreTest.rows(db), true);
        for (Object o : Vectors.arr(v.get("clean_answer"))) {
            Map<String, Object> c = Vectors.obj(o);
            assertEquals(PromptTest.quoted((String) c.get("text")), c.get("clean"), MemoryCycle.cleanAnswer((String) c.get("text")));
        }
        assertTrue(next[0] > 5);
    }
}
