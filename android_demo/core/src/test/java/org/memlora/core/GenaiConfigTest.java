package org.memlora.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.fail;

import java.io.File;
import java.util.Arrays;
import org.junit.Test;

/** genai_config.json as the ONNX backend reads it (the decoder's feed names and KV layout). */
public class GenaiConfigTest {
    /** The decoder section ORT GenAI's model builder (onnxruntime-genai 0.18.0) wrote for a 2-layer tiny llama export. */
    static final String BUILDER_CONFIG = "{\"model\": {\"bos_token_id\": 1, \"context_length\": 256, \"decoder\": {"
            + "\"session_options\": {\"log_id\": \"onnxruntime-genai\", \"provider_options\": []}, \"filename\": \"foundation.onnx\","
            + "\"head_size\": 16, \"hidden_size\": 64, \"inputs\": {\"input_ids\": \"input_ids\", \"attention_mask\": \"attention_mask\","
            + "\"past_key_names\": \"past_key_values.%d.key\", \"past_value_names\": \"past_key_values.%d.value\"},"
            + "\"outputs\": {\"logits\": \"logits\", \"present_key_names\": \"present.%d.key\", \"present_value_names\": \"present.%d.value\"},"
            + "\"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"num_key_value_heads\": 2}, \"eos_token_id\": 2, \"pad_token_id\": 2,"
            + "\"type\": \"llama\", \"vocab_size\": 49152}, \"search\": {\"max_length\": 256, \"past_present_share_buffer\": true}}";

    @Test
    public void readsTheBuilderConfig() {
        GenaiConfig g = GenaiConfig.parse(BUILDER_CONFIG);
        assertEquals("llama", g.type);
        assertEquals("foundation.onnx", g.filename);
        assertEquals(2, g.layers);
        assertEquals(2, g.kvHeads);
        assertEquals(16, g.headSize);
        assertEquals(256, g.contextLength);
        assertEquals(49152, g.vocabSize);
        assertNull(g.positionIds);
        assertEquals(Arrays.asList("input_ids", "attention_mask", "past_key_values.0.key", "past_key_values.0.value",
                "past_key_values.1.key", "past_key_values.1.value"), new java.util.ArrayList<>(g.feedNames().values()));
        assertEquals("present.1.value", g.presentValue(1));
        assertArrayEquals(new long[] {1, 2, 0, 16}, g.pastShape(0));
        assertArrayEquals(new long[] {5, 6, 7}, GenaiConfig.positions(5, 3));
        GenaiConfig withPos = GenaiConfig.parse(BUILDER_CONFIG.replace("\"attention_mask\": \"attention_mask\",",
                "\"attention_mask\": \"attention_mask\", \"position_ids\": \"position_ids\","));
        assertEquals("position_ids", withPos.feedNames().get("position_ids"));
    }

    @Test
    public void refusesWhatTheFeedCannotServe() {
        String[][] cases = {
            {BUILDER_CONFIG.replace("\"input_ids\": \"input_ids\",", "\"input_ids\": \"input_ids\", \"seqlens_k\": \"seqlens_k\","),
             "genai_config.json: decoder inputs [seqlens_k] are not supported by the app's ONNX backend (it feeds [input_ids, "
                     + "attention_mask, position_ids, past_key_names, past_value_names]; export for the CPU execution provider)"},
            {BUILDER_CONFIG.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": null"),
             "genai_config.json: 'num_key_value_heads' is missing or not a number"},
            {BUILDER_CONFIG.replace("\"logits\": \"logits\",", ""), "genai_config.json: decoder outputs name no 'logits'"},
            {"{\"search\": {}}", "genai_config.json: no 'model' section"},
            {"{not json", null},
        };
        for (String[] c : cases) {
            try {
                GenaiConfig.parse(c[0]);
                fail("accepted " + c[0]);
            } catch (BundleError e) {
                if (c[1] != null) assertEquals(c[1], e.getMessage());
                else assertEquals(true, e.getMessage().startsWith("genai_config.json: invalid JSON: "));
            }
        }
        try {
            GenaiConfig.load(new File(Vectors.dir(), "no-such-dir/genai_config.json"));
            fail();
        } catch (BundleError e) {
            assertEquals("genai_config.json is missing from the bundle (ONNX bundles carry ORT GenAI's config)", e.getMessage());
        }
    }

    @Test
    public void opBytesPerBackend() {
        Manifest m = Vectors.bundle();
        for (Manifest.OpEntry e : m.ops.values()) {
            java.util.Set<String> names = new java.util.LinkedHashSet<>(e.dataFiles); // a one-format bundle: program + data files
            names.add(e.program);
            long want = 0;
            for (String f : names) want += (Long) Vectors.obj(m.files().get(f)).get("bytes");
            assertEquals(e.name, want, m.opBytes(e.name, "executorch"));
        }
    }
}
