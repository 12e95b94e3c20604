package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Map;
import org.junit.Test;

/** The benchmark entry point's figures are the profiler's: same reading of the runner's stats, same job/result schema. */
public class BenchTest {
    @Test
    public void runFiguresMatchTheProfiler() {
        Map<String, Object> v = Vectors.obj(Vectors.load("bench.json"));
        Map<String, Object> want = Vectors.obj(v.get("run"));
        Map<String, Object> got = Bench.run((String) v.get("stats"));
        assertEquals(want.keySet(), got.keySet());
        for (String k : want.keySet()) assertEquals(k, ((Number) want.get(k)).doubleValue(), ((Number) got.get(k)).doubleValue(), 1e-9);
    }

    @Test
    public void readsJobsAndWritesDeviceResults() {
        String job = "{\"schema\": \"memlora.profile.job\", \"schema_version\": 1, \"threads\": 4, \"warmup\": 1, \"repeats\": 3,"
                + " \"rounds\": 2, \"stop_tokens\": \"ignored\", \"ops\": {\"extract\": {\"new_tokens\": 48, \"items\": [{\"sample_id\":"
                + " \"conv0-s1-t0\", \"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U\"}]}]}}}";
        Bench.Job j = Bench.parseJob(job);
        assertEquals(4, j.threads);
        assertEquals(2, j.rounds);
        assertEquals(48, j.ops.get("extract").newTokens);
        assertEquals("conv0-s1-t0", j.ops.get("extract").items.get(0).sampleId);
        assertEquals(new ChatMessage("user", "U"), j.ops.get("extract").items.get(0).messages.get(1));
        try {
            Bench.parseJob("{\"schema\": \"other\", \"schema_version\": 1, \"ops\": {}}");
            fail();
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage().startsWith("not a memlora.profile.job v1 job"));
        }
        String out = Bench.deviceResult(Map.of("model", "x"), Map.of("extract", Map.of("runs", java.util.List.of())), null);
        Map<String, Object> d = JsonTree.obj(JsonTree.parse(out), "result");
        assertEquals("memlora.profile.device", d.get("schema"));
        assertEquals(1L, d.get("schema_version"));
    }
}
