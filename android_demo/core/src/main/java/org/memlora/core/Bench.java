package org.memlora.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The profiler's device protocol (runtimes/profiler/adb.py, docs/profiler.md): reads a {@code memlora.profile.job} v1
 * job, turns one generation's ExecuTorch runner stats ({@code LlmCallback.onStats}: the JSON of
 * extension/llm/runner/stats.h stats_to_json_string) into a run with the profiler's figures, and writes
 * {@code memlora.profile.device} v1 results.
 */
public final class Bench {
    private Bench() {}

    public static final String JOB_SCHEMA = "memlora.profile.job";
    public static final String DEVICE_SCHEMA = "memlora.profile.device";

    public static final class Item {
        public final String sampleId;
        public final List<ChatMessage> messages;

        Item(String sampleId, List<ChatMessage> messages) {
            this.sampleId = sampleId;
            this.messages = messages;
        }
    }

    public static final class OpJob {
        public final int newTokens;
        public final List<Item> items = new ArrayList<>();

        OpJob(int newTokens) {
            this.newTokens = newTokens;
        }
    }

    public static final class Job {
        public int threads, warmup, repeats, rounds;
        public String stopTokens;
        public final Map<String, OpJob> ops = new LinkedHashMap<>();
    }

    static int intOr(Map<String, Object> m, String k, int d) {
        Object v = m.get(k);
        return v instanceof Number ? ((Number) v).intValue() : d;
    }

    public static Job parseJob(String json) {
        Map<String, Object> j = JsonTree.obj(JsonTree.parse(json), "job");
        if (!JOB_SCHEMA.equals(j.get("schema")) || !Long.valueOf(1).equals(j.get("schema_version")))
            throw new IllegalArgumentException("not a " + JOB_SCHEMA + " v1 job (schema=" + j.get("schema")
                    + ", version=" + j.get("schema_version") + ")");
        Job job = new Job();
        job.threads = intOr(j, "threads", 0);
        job.warmup = intOr(j, "warmup", 1);
        job.repeats = intOr(j, "repeats", 3);
        job.rounds = Math.max(1, intOr(j, "rounds", 1));
        job.stopTokens = String.valueOf(j.get("stop_tokens"));
        for (Map.Entry<String, Object> e : JsonTree.obj(j.get("ops"), "ops").entrySet()) {
            Map<String, Object> o = JsonTree.obj(e.getValue(), "op");
            OpJob oj = new OpJob(intOr(o, "new_tokens", 32));
            for (Object it : JsonTree.arr(o.get("items"), "items")) {
                Map<String, Object> item = JsonTree.obj(it, "item");
                List<ChatMessage> msgs = new ArrayList<>();
                for (Object mo : JsonTree.arr(item.get("messages"), "messages")) {
                    Map<String, Object> m = JsonTree.obj(mo, "message");
                    msgs.add(new ChatMessage((String) m.get("role"), (String) m.get("content")));
                }
                oj.items.add(new Item(String.valueOf(item.get("sample_id")), msgs));
            }
            job.ops.put(e.getKey(), oj);
        }
        return job;
    }

    /**
     * One run from the runner's stats JSON, as the profiler's parse_observer reads it: prefill = inference start ->
     * prompt evaluated, decode = prompt evaluated -> inference end, ttft = inference start -> first token.
     * ExecuTorch's generated_tokens counts the decode loop only (the first token comes out of prefill), so
     * new_tokens = generated_tokens + 1 and decode tok/s = generated_tokens / decode time.
     */
    public static Map<String, Object> run(String statsJson) {
        Map<String, Object> s = JsonTree.obj(JsonTree.parse(statsJson), "stats");
        double scale = 1000.0 / num(s.getOrDefault("SCALING_FACTOR_UNITS_PER_SECOND", 1000L));
        long prompt = (long) num(s.get("prompt_tokens")), gen = (long) num(s.get("generated_tokens"));
        double start = num(s.get("inference_start_ms")), promptEnd = num(s.get("prompt_eval_end_ms")), end = num(s.get("inference_end_ms"));
        return runFields(prompt, gen + 1, (num(s.get("model_load_end_ms")) - num(s.get("model_load_start_ms"))) * scale,
                (num(s.get("first_token_ms")) - start) * scale, (promptEnd - start) * scale, (end - promptEnd) * scale,
                (end - start) * scale, num(s.getOrDefault("aggregate_sampling_time_ms", 0L)) * scale);
    }

    /** The profiler's run fields; {@code newTokens} counts the first token, which comes out of prefill, so decode tok/s
     *  is over the others. */
    static Map<String, Object> runFields(long promptTokens, long newTokens, double loadMs, double ttftMs, double prefillMs,
                                         double decodeMs, double e2eMs, double samplingMs) {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("prompt_tokens", promptTokens);
        r.put("new_tokens", newTokens);
        r.put("load_ms", loadMs);
        r.put("ttft_ms", ttftMs);
        r.put("prefill_ms", prefillMs);
        r.put("decode_ms", decodeMs);
        r.put("prefill_tok_s", prefillMs > 0 ? promptTokens / (prefillMs / 1e3) : 0.0);
        r.put("decode_tok_s", decodeMs > 0 && newTokens > 1 ? (newTokens - 1) / (decodeMs / 1e3) : 0.0);
        r.put("e2e_ms", e2eMs);
        r.put("sampling_ms", samplingMs);
        return r;
    }

    static double num(Object v) {
        if (v instanceof Number) return ((Number) v).doubleValue();
        throw new IllegalArgumentException("runner stats: expected a number, got " + v);
    }

    /** The {@code memlora.profile.device} v1 document. {@code ops}: op -> {"rounds": [{"runs", "load_ms", "rss_mb"}], ...}. */
    public static String deviceResult(Map<String, Object> device, Map<String, Object> ops, Map<String, Object> extra) {
        Map<String, Object> d = new LinkedHashMap<>();
        d.put("schema", DEVICE_SCHEMA);
        d.put("schema_version", 1L);
        d.put("device", device);
        d.put("ops", ops);
        if (extra != null) d.putAll(extra);
        return JsonTree.write(d, 1);
    }
}
