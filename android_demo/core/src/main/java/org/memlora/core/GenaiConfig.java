package org.memlora.core;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What the app's ONNX backend needs from an ONNX bundle's {@code genai_config.json} (written by ORT GenAI's model
 * builder; runtimes/onnx.py hands the same file to onnxruntime-genai): the decoder graph's input and output names,
 * the KV cache layout (layers, KV heads, head size) and the context length. Each decode step feeds
 * {@code input_ids} int64 [1, n], {@code attention_mask} int64 [1, past + n] of ones, {@code position_ids} int64
 * [1, n] = past .. past + n - 1 when the graph has that input, and per layer {@code past_key_values.%d.key/value}
 * float32 [1, kv_heads, past, head_size] (empty at the first step, then the previous step's {@code present.%d.*});
 * it reads {@code logits} [1, n or 1, vocab] at the last row. This is ORT GenAI's own feed for these graphs without
 * a shared KV buffer; tests/test_android.py runs that feed with plain onnxruntime on an exported separate-adapter
 * bundle and gets ORT GenAI's greedy tokens.
 */
public final class GenaiConfig {
    /** The decoder inputs this feed knows; a graph asking for others (e.g. a shared-buffer build's seqlens) is refused. */
    static final List<String> KNOWN_INPUTS = Arrays.asList("input_ids", "attention_mask", "position_ids", "past_key_names",
            "past_value_names");

    public final String type;
    public final String filename;
    public final int layers, kvHeads, headSize, contextLength, vocabSize;
    public final String inputIds, attentionMask, positionIds; // positionIds null when the graph has none
    public final String pastKey, pastValue, logits, presentKey, presentValue;

    public static GenaiConfig load(File file) {
        if (!file.isFile()) throw new BundleError(file.getName() + " is missing from the bundle (ONNX bundles carry ORT GenAI's config)");
        try {
            return parse(new String(Files.readAllBytes(file.toPath()), StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new BundleError("cannot read " + file + ": " + e.getMessage());
        }
    }

    public static GenaiConfig parse(String json) {
        Object parsed;
        try {
            parsed = JsonTree.parse(json);
        } catch (IllegalArgumentException e) {
            throw new BundleError("genai_config.json: " + e.getMessage());
        }
        return new GenaiConfig(parsed);
    }

    private GenaiConfig(Object parsed) {
        Map<String, Object> model = section(parsed instanceof Map ? JsonTree.obj(parsed, "genai_config") : null, "model");
        Map<String, Object> dec = section(model, "decoder");
        type = String.valueOf(model.get("type"));
        filename = (String) dec.get("filename");
        layers = intOf(dec, "num_hidden_layers");
        kvHeads = intOf(dec, "num_key_value_heads");
        headSize = intOf(dec, "head_size");
        contextLength = intOf(model, "context_length");
        vocabSize = intOf(model, "vocab_size");
        Map<String, Object> in = section(dec, "inputs"), out = section(dec, "outputs");
        List<String> unknown = new ArrayList<>();
        for (String k : in.keySet()) if (!KNOWN_INPUTS.contains(k)) unknown.add(k);
        if (!unknown.isEmpty())
            throw new BundleError("genai_config.json: decoder inputs " + unknown + " are not supported by the app's ONNX "
                    + "backend (it feeds " + KNOWN_INPUTS + "; export for the CPU execution provider)");
        inputIds = name(in, "input_ids", "inputs");
        attentionMask = name(in, "attention_mask", "inputs");
        positionIds = (String) in.get("position_ids");
        pastKey = name(in, "past_key_names", "inputs");
        pastValue = name(in, "past_value_names", "inputs");
        logits = name(out, "logits", "outputs");
        presentKey = name(out, "present_key_names", "outputs");
        presentValue = name(out, "present_value_names", "outputs");
    }

    private static Map<String, Object> section(Map<String, Object> m, String key) {
        Object v = m == null ? null : m.get(key);
        if (!(v instanceof Map)) throw new BundleError("genai_config.json: no '" + key + "' section");
        return JsonTree.obj(v, key);
    }

    private static int intOf(Map<String, Object> m, String key) {
        Object v = m.get(key);
        if (!(v instanceof Number)) throw new BundleError("genai_config.json: '" + key + "' is missing or not a number");
        return ((Number) v).intValue();
    }

    private static String name(Map<String, Object> m, String key, String where) {
        Object v = m.get(key);
        if (!(v instanceof String) || ((String) v).isEmpty())
            throw new BundleError("genai_config.json: decoder " + where + " name no '" + key + "'");
        return (String) v;
    }

    public String pastKey(int layer) {
        return String.format(java.util.Locale.ROOT, pastKey, layer);
    }

    public String pastValue(int layer) {
        return String.format(java.util.Locale.ROOT, pastValue, layer);
    }

    public String presentKey(int layer) {
        return String.format(java.util.Locale.ROOT, presentKey, layer);
    }

    public String presentValue(int layer) {
        return String.format(java.util.Locale.ROOT, presentValue, layer);
    }

    /** The shape of one layer's past key (or value) holding {@code past} positions: [1, kv_heads, past, head_size]. */
    public long[] pastShape(int past) {
        return new long[] {1, kvHeads, past, headSize};
    }

    /** position_ids for {@code n} tokens placed at {@code start}: start .. start + n - 1. */
    public static long[] positions(int start, int n) {
        long[] p = new long[n];
        for (int i = 0; i < n; i++) p[i] = start + i;
        return p;
    }

    /** The graph's inputs as this backend feeds them (names in feed order), for messages and the tests. */
    public Map<String, String> feedNames() {
        Map<String, String> f = new LinkedHashMap<>();
        f.put("input_ids", inputIds);
        f.put("attention_mask", attentionMask);
        if (positionIds != null) f.put("position_ids", positionIds);
        for (int l = 0; l < layers; l++) {
            f.put("past_key." + l, pastKey(l));
            f.put("past_value." + l, pastValue(l));
        }
        return f;
    }
}
