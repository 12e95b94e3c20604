package org.memlora.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.Test;

/**
 * The ONNX backend's decoding loop against runtimes/base.py's: the same scripted steps (loop.json: each forward call
 * returns logits peaking on the script's next ids) give the same forward calls, streamed pieces, text, tokens, stop
 * reason and token counts. The step is a script — this tests the loop, not a model.
 */
public class DecodeLoopTest {
    @Test
    public void loopMatchesThePythonRuntime() {
        Map<String, Object> v = Vectors.obj(Vectors.load("loop.json"));
        Manifest m = Manifest.load(new File((String) Vectors.obj(Vectors.load("meta.json")).get("bundle")), false);
        assertEquals(((Number) v.get("max_seq_len")).intValue(), m.maxSeqLen());
        BpeTokenizer tok = BpeTokenizer.load(m.tokenizerFile());
        final int vocab = ((Number) v.get("vocab_size")).intValue();
        int n = 0;
        for (Object o : Vectors.arr(v.get("cases"))) {
            Map<String, Object> c = Vectors.obj(o);
            String op = (String) c.get("op");
            final List<Object> script = Vectors.arr(c.get("script"));
            Map<String, Object> kw = Vectors.obj(c.get("kwargs"));
            DecodeLoop.Options opts = DecodeLoop.Options.forOp(m, op,
                    kw.containsKey("max_new_tokens") ? ((Number) kw.get("max_new_tokens")).intValue() : null);
            final List<Object> calls = new ArrayList<>();
            DecodeLoop.Step step = (tokens, startPos) -> {
                float[] logits = new float[vocab];
                for (Object id : Vectors.arr(script.get(calls.size()))) logits[((Number) id).intValue()] = 1f;
                List<Object> ts = new ArrayList<>();
                for (int t : tokens) ts.add((long) t);
                java.util.Map<String, Object> call = new java.util.LinkedHashMap<>();
                call.put("tokens", ts);
                call.put("start_pos", (long) startPos);
                calls.add(call);
                return logits;
            };
            List<Object> pieces = new ArrayList<>();
            String what = "case " + n + " (" + op + ", script " + script + ")";
            try {
                DecodeLoop.Result r = DecodeLoop.run(step, tok, BpeTokenizerTest.ints(c.get("prompt_ids")), opts, pieces::add);
                if (c.containsKey("error")) fail(what + ": expected " + c.get("error"));
                Map<String, Object> want = Vectors.obj(c.get("result"));
                assertEquals(what + ": pieces", c.get("pieces"), pieces);
                assertEquals(what + ": text", want.get("text"), r.text);
                assertArrayEquals(what + ": tokens", BpeTokenizerTest.ints(want.get("tokens")), r.tokens);
                assertEquals(what + ": stop reason", want.get("stop_reason"), r.stopReason);
                assertEquals(what + ": new tokens", ((Number) want.get("new_tokens")).intValue(), r.newTokens);
                assertEquals(what + ": prompt tokens", ((Number) want.get("prompt_tokens")).intValue(), r.promptTokens.length);
                String joined = String.join("", pieces.toArray(new String[0]));
                assertTrue(what + ": the pieces are a prefix of the text", r.text.startsWith(joined));
            } catch (IllegalArgumentException e) {
                assertEquals(what, c.get("error"), e.getMessage());
            }
            Vectors.assertJsonEquals(what + ": forward calls", c.get("calls"), calls);
            n++;
        }
        assertTrue(n >= 8);
    }

    @Test
    public void runFieldsAndIgnoredStops() {
        Map<String, Object> v = Vectors.obj(Vectors.arr(Vectors.obj(Vectors.load("bpe.json")).get("variants")).get(0));
        BpeTokenizer tok = BpeTokenizerTest.load(v);
        DecodeLoop.Options o = new DecodeLoop.Options(64);
        o.stopIds.add(2);
        o.maxNewTokens = 6;
        o.ignoreStopIds = true; // the profiler's fixed output length: the stop id is decoded like any other
        final int[] calls = {0};
        DecodeLoop.Result r = DecodeLoop.run((tokens, pos) -> {
            calls[0]++;
            float[] l = new float[tok.vocabSize()];
            l[2] = 1f;
            return l;
        }, tok, new int[] {1, 9, 9}, o, null);
        assertEquals("max_new_tokens", r.stopReason);
        assertArrayEquals(new int[] {2, 2, 2, 2, 2, 2}, r.tokens);
        assertEquals(6, calls[0]);
        Map<String, Object> run = r.run(12.5);
        assertEquals(java.util.Arrays.asList("prompt_tokens", "new_tokens", "load_ms", "ttft_ms", "prefill_ms", "decode_ms",
                "prefill_tok_s", "decode_tok_s", "e2e_ms", "sampling_ms"), new ArrayList<>(run.keySet()));
        assertEquals(3L, run.get("prompt_tokens"));
        assertEquals(6L, run.get("new_tokens"));
        assertEquals(12.5, (Double) run.get("load_ms"), 0);
        double decode = (Double) run.get("decode_ms");
        assertEquals(decode > 0 ? 5 / (decode / 1e3) : 0.0, (Double) run.get("decode_tok_s"), 1e-9);
        assertEquals(Bench.run("{\"prompt_tokens\":1,\"generated_tokens\":1,\"inference_start_ms\":0,\"prompt_eval_end_ms\":1,"
                + "\"inference_end_ms\":2,\"model_load_start_ms\":0,\"model_load_end_ms\":0,\"first_token_ms\":1}").keySet(), run.keySet());
    }

    @Test
    public void argmaxAndSampling() {
        assertEquals(1, DecodeLoop.argmax(new float[] {0f, 3f, 3f, -1f}));
        assertEquals(2, DecodeLoop.argmax(new float[] {0f, 3f, Float.NaN, 5f}));
        float[] logits = {0f, (float) Math.log(3), (float) Math.log(6), Float.NEGATIVE_INFINITY}; // p = 0.1, 0.3, 0.6, 0
        Random rng = new Random(7);
        int[] counts = new int[4];
        for (int i = 0; i < 20000; i++) counts[DecodeLoop.sample(logits, 1.0, 1.0, rng)]++;
        assertEquals(0, counts[3]);
        assertEquals(0.1, counts[0] / 20000.0, 0.015);
        assertEquals(0.3, counts[1] / 20000.0, 0.015);
        assertEquals(0.6, counts[2] / 20000.0, 0.015);
        int[] nucleus = new int[4];
        for (int i = 0; i < 5000; i++) nucleus[DecodeLoop.sample(logits, 1.0, 0.8, rng)]++; // keeps {0.6, 0.3}
        assertEquals(0, nucleus[0]);
        assertEquals(2.0, nucleus[2] / (double) nucleus[1], 0.25);
        for (int i = 0; i < 200; i++) assertEquals(2, DecodeLoop.sample(logits, 1.0, 0.5, rng)); // top-p 0.5: the mode only
    }
}
