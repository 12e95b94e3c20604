package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** The shared test vectors written by `python -m tests.jvm_vectors DIR` (dir given as -Dmemlora.vectors=DIR). */
final class Vectors {
    private Vectors() {}

    static File dir() {
        String d = System.getProperty("memlora.vectors");
        if (d == null || !new File(d, "meta.json").isFile())
            fail("no shared test vectors: run `python -m tests.jvm_vectors DIR` and pass -Dmemlora.vectors=DIR "
                    + "(./build.sh android-test does both)");
        return new File(d);
    }

    static Object load(String name) {
        try {
            return JsonTree.parse(new String(Files.readAllBytes(new File(dir(), name).toPath()), StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new AssertionError("cannot read vectors file " + name + ": " + e);
        }
    }

    static Map<String, Object> obj(Object v) {
        return JsonTree.obj(v, "vector");
    }

    static List<Object> arr(Object v) {
        return JsonTree.arr(v, "vector");
    }

    static List<String> strings(Object v) {
        List<String> out = new ArrayList<>();
        for (Object o : arr(v)) out.add((String) o);
        return out;
    }

    /** Undo the JSON-safe encoding of NaN / infinities / big integers used by the vector writer. */
    static Object decode(Object v) {
        if (v instanceof Map) {
            Map<String, Object> m = obj(v);
            if (m.size() == 1 && m.containsKey("$float")) {
                String f = (String) m.get("$float");
                return f.equals("nan") ? Double.NaN : f.equals("inf") ? Double.POSITIVE_INFINITY : Double.NEGATIVE_INFINITY;
            }
            if (m.size() == 1 && m.containsKey("$bigint")) return new BigInteger((String) m.get("$bigint"));
            Map<String, Object> out = new java.util.LinkedHashMap<>();
            for (Map.Entry<String, Object> e : m.entrySet()) out.put(e.getKey(), decode(e.getValue()));
            return out;
        }
        if (v instanceof List) {
            List<Object> out = new ArrayList<>();
            for (Object o : arr(v)) out.add(decode(o));
            return out;
        }
        return v;
    }

    /** Deep equality of JSON-model values; numbers compared by value (NaN equals NaN). */
    static void assertJsonEquals(String what, Object expected, Object actual) {
        if (expected instanceof Number && actual instanceof Number) {
            if (expected instanceof Double || actual instanceof Double) {
                double a = ((Number) expected).doubleValue(), b = ((Number) actual).doubleValue();
                assertTrue(what + ": " + a + " != " + b, (Double.isNaN(a) && Double.isNaN(b)) || a == b);
            } else assertEquals(what, new BigInteger(expected.toString()), new BigInteger(actual.toString()));
            return;
        }
        if (expected instanceof Map && actual instanceof Map) {
            Map<?, ?> e = (Map<?, ?>) expected, a = (Map<?, ?>) actual;
            assertEquals(what + ": keys", new ArrayList<>(e.keySet()), new ArrayList<>(a.keySet()));
            for (Object k : e.keySet()) assertJsonEquals(what + "." + k, e.get(k), a.get(k));
            return;
        }
        if (expected instanceof List && actual instanceof List) {
            List<?> e = (List<?>) expected, a = (List<?>) actual;
            assertEquals(what + ": length (" + e + " vs " + a + ")", e.size(), a.size());
            for (int i = 0; i < e.size(); i++) assertJsonEquals(what + "[" + i + "]", e.get(i), a.get(i));
            return;
        }
        assertEquals(what, expected, actual);
    }

    static float[] floats(Object v) {
        List<Object> l = arr(v);
        float[] out = new float[l.size()];
        for (int i = 0; i < out.length; i++) out[i] = ((Number) l.get(i)).floatValue();
        return out;
    }

    static List<ChatMessage> messages(Object v) {
        List<ChatMessage> out = new ArrayList<>();
        for (Object o : arr(v)) {
            Map<String, Object> m = obj(o);
            out.add(new ChatMessage((String) m.get("role"), (String) m.get("content")));
        }
        return out;
    }

    /** The bundle the vectors were recorded from (schema 2, read with verify=false). */
    static Manifest bundle() {
        return Manifest.load(new File((String) obj(load("meta.json")).get("bundle")), false);
    }

    static List<Object> messageMaps(List<ChatMessage> msgs) {
        List<Object> out = new ArrayList<>();
        for (ChatMessage m : msgs) out.add(m.toMap());
        return out;
    }
}
