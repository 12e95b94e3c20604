package org.memlora.core;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Map;
import java.util.Random;
import java.util.Set;

/**
 * The decoding loop of runtimes/base.py {@code Runtime.stream}, for backends that hand out logits (the app's ONNX
 * backend): prefill the prompt, then pick a token per step (greedy argmax at temperature 0; else temperature + top-p
 * sampling), stop at the op's stop ids, at max_new_tokens or when the context is full, and stream decoded text pieces
 * exactly as Python does — the whole output decoded after every token, a piece emitted only when the text grew and
 * does not end in U+FFFD (never half a UTF-8 character). The model is an abstract {@link Step}; the JVM tests replay
 * the Python loop's scripted runs (runtimes/memory/vectors.py, loop.json) and compare pieces, results and calls.
 *
 * <p>Sampling at temperature &gt; 0 follows the same rule as Python's {@code sample_next} but draws from
 * java.util.Random, so sampled outputs are not the Python runtime's; greedy decoding (every op's default) is.
 */
public final class DecodeLoop {
    private DecodeLoop() {}

    /** One forward pass: {@code tokens} placed at positions startPos.. of the op's sequence; returns the last position's logits. */
    public interface Step {
        float[] forward(int[] tokens, int startPos);
    }

    public static final class Options {
        public int maxNewTokens = 128;
        public double temperature = 0.0;
        public double topP = 1.0;
        public long seed = 0;
        public int maxSeqLen;
        public final Set<Integer> stopIds = new HashSet<>();
        /** Benchmarks with a fixed output length (the profiler's stop_tokens "ignored"): never stop at a stop id. */
        public boolean ignoreStopIds = false;

        public Options(int maxSeqLen) {
            this.maxSeqLen = maxSeqLen;
        }

        /** An op's defaults from the manifest: max_new_tokens, temperature, top_p, stop_token_ids, max_seq_len. */
        public static Options forOp(Manifest m, String op, Integer maxNewTokens) {
            Manifest.OpEntry e = m.op(op);
            Options o = new Options(m.maxSeqLen());
            o.maxNewTokens = maxNewTokens != null ? maxNewTokens : e.maxNewTokens();
            o.temperature = e.gen("temperature", 0.0);
            o.topP = e.gen("top_p", 1.0);
            for (Long id : e.stopTokenIds) o.stopIds.add(id.intValue());
            return o;
        }
    }

    public static final class Result {
        public final int[] promptTokens;
        public final int[] tokens;
        public final String text;
        public final String stopReason; // "stop_token" | "max_new_tokens" | "context_full"
        public final int newTokens;     // generated tokens, the stop token included (Python's Stats.new_tokens)
        public final double prefillMs, ttftMs, decodeMs, samplingMs;

        Result(int[] promptTokens, int[] tokens, String text, String stopReason, int newTokens, double prefillMs, double ttftMs,
               double decodeMs, double samplingMs) {
            this.promptTokens = promptTokens;
            this.tokens = tokens;
            this.text = text;
            this.stopReason = stopReason;
            this.newTokens = newTokens;
            this.prefillMs = prefillMs;
            this.ttftMs = ttftMs;
            this.decodeMs = decodeMs;
            this.samplingMs = samplingMs;
        }

        /** The profiler's run fields (the keys {@link Bench#run} gives for ExecuTorch runner stats). */
        public Map<String, Object> run(double loadMs) {
            return Bench.runFields(promptTokens.length, newTokens, loadMs, ttftMs, prefillMs, decodeMs, prefillMs + decodeMs, samplingMs);
        }
    }

    public static Result run(Step step, BpeTokenizer tok, int[] prompt, Options o, MemoryCycle.TokenListener onText) {
        int room = o.maxSeqLen - prompt.length;
        if (room <= 0)
            throw new IllegalArgumentException("prompt of " + prompt.length + " tokens does not fit the bundle's max_seq_len " + o.maxSeqLen);
        Random rng = new Random(o.seed);
        long t0 = System.nanoTime();
        float[] logits = step.forward(prompt, 0);
        double prefillMs = ms(t0);
        int[] out = new int[Math.max(0, Math.min(o.maxNewTokens, room))];
        int n = 0;
        String text = "";
        String reason = "max_new_tokens";
        double ttftMs = 0, samplingNs = 0;
        long tDec = System.nanoTime();
        while (true) {
            long ts = System.nanoTime();
            int t = o.temperature <= 0 ? argmax(logits) : sample(logits, o.temperature, o.topP, rng);
            samplingNs += System.nanoTime() - ts;
            if (n == 0) ttftMs = ms(t0);
            if (!o.ignoreStopIds && o.stopIds.contains(t)) {
                reason = "stop_token";
                break;
            }
            if (n == out.length) out = Arrays.copyOf(out, Math.max(1, n * 2));
            out[n++] = t;
            String newText = tok.decode(Arrays.copyOf(out, n), true);
            int have = text.codePointCount(0, text.length());
            if (newText.codePointCount(0, newText.length()) > have && !newText.endsWith("\ufffd")) {
                String piece = newText.substring(newText.offsetByCodePoints(0, have));
                if (onText != null) onText.onText(piece);
                text = newText;
            }
            if (n >= o.maxNewTokens) break;
            if (prompt.length + n >= o.maxSeqLen) {
                reason = "context_full";
                break;
            }
            logits = step.forward(new int[] {t}, prompt.length + n - 1);
        }
        double decodeMs = ms(tDec);
        int[] tokens = Arrays.copyOf(out, n);
        return new Result(prompt, tokens, tok.decode(tokens, true), reason, n + (reason.equals("stop_token") ? 1 : 0), prefillMs,
                ttftMs, decodeMs, samplingNs / 1e6);
    }

    private static double ms(long since) {
        return (System.nanoTime() - since) / 1e6;
    }

    /** numpy's argmax: the first index of the maximum (NaN wins, as in numpy). */
    public static int argmax(float[] logits) {
        int best = 0;
        for (int i = 1; i < logits.length; i++) {
            if (Float.isNaN(logits[best])) return best;
            if (logits[i] > logits[best] || Float.isNaN(logits[i])) best = i;
        }
        return best;
    }

    /** Python's sample_next: softmax(logits / temperature), the smallest top-p nucleus, one draw. */
    public static int sample(float[] logits, double temperature, double topP, Random rng) {
        int v = logits.length;
        double max = Double.NEGATIVE_INFINITY;
        for (float x : logits) max = Math.max(max, x / temperature);
        double[] p = new double[v];
        double sum = 0;
        for (int i = 0; i < v; i++) sum += p[i] = Math.exp(logits[i] / temperature - max);
        for (int i = 0; i < v; i++) p[i] /= sum;
        if (topP < 1.0) {
            Integer[] order = new Integer[v];
            for (int i = 0; i < v; i++) order[i] = i;
            Arrays.sort(order, (a, b) -> Double.compare(p[b], p[a]));
            double cum = 0;
            int keep = v;
            for (int i = 0; i < v; i++) {
                cum += p[order[i]];
                if (cum >= topP) {
                    keep = i + 1;
                    break;
                }
            }
            double[] q = new double[v];
            double qs = 0;
            for (int i = 0; i < keep; i++) qs += q[order[i]] = p[order[i]];
            for (int i = 0; i < v; i++) p[i] = q[i] / qs;
        }
        double r = rng.nextDouble(), c = 0;
        for (int i = 0; i < v; i++) {
            c += p[i];
            if (r < c) return i;
        }
        for (int i = v - 1; i >= 0; i--) if (p[i] > 0) return i;
        return 0;
    }
}
