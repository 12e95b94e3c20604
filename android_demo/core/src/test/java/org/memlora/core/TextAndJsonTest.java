package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.Test;

/** Python's str.isspace and json.raw_decode, which the parsing rules rest on. */
public class TextAndJsonTest {
    @Test
    public void isSpaceMatchesPythonForEveryCodePoint() {
        Set<Long> py = new HashSet<>();
        for (Object o : Vectors.arr(Vectors.obj(Vectors.load("text.json")).get("isspace"))) py.add((Long) o);
        for (int cp = 0; cp < 0x110000; cp++) assertEquals("U+" + Integer.toHexString(cp), py.contains((long) cp), Py.isSpace(cp));
    }

    @Test
    public void splitStripAndRepr() {
        assertEquals(Arrays.asList("a", "b", "c"), Py.split("\u2003 a\u00a0b\n\tc \u3000"));
        assertEquals("a b", Py.collapse("  a \n  b "));
        assertEquals("x", Py.strip("\u0085 x\u2029"));
        assertEquals("'it'", Py.repr("it"));
        assertEquals("\"it's\"", Py.repr("it's"));
        assertEquals("'a\\nb\\x00\\u200b'", Py.repr("a\nb\u0000\u200b"));
        assertEquals("[None, True, 1, 1.5, 'x', {'k': []}]", Py.repr(Arrays.asList(null, true, 1L, 1.5, "x", Map.of("k", List.of()))));
        assertEquals("1e+20", Py.floatRepr(1e20));
        assertEquals("1e-05", Py.floatRepr(1e-5));
        assertEquals("0.0001", Py.floatRepr(1e-4));
        assertEquals("123.0", Py.floatRepr(123.0));
        assertEquals(Arrays.asList("a", "", "b", "c"), Py.splitlines("a\n\r\nb\u2028c\n"));
    }

    @Test
    public void rawDecodeMatchesPython() {
        int n = 0;
        for (Object o : Vectors.arr(Vectors.load("json.json"))) {
            Map<String, Object> c = Vectors.obj(o);
            String doc = (String) c.get("doc");
            try {
                Json.Decoded d = Json.rawDecode(doc, 0);
                if (c.containsKey("error")) fail(Py.repr(doc) + ": Python refused it (" + c.get("error") + "), Java read " + Py.repr(d.value));
                Vectors.assertJsonEquals(Py.repr(doc), Vectors.decode(c.get("value")), d.value);
                assertEquals(Py.repr(doc) + " end", ((Long) c.get("end")).intValue(), doc.codePointCount(0, d.end));
            } catch (Json.DecodeError e) {
                if (!c.containsKey("error")) fail(Py.repr(doc) + ": Python read it, Java says " + e.getMessage());
                Map<String, Object> err = Vectors.obj(c.get("error"));
                assertEquals(Py.repr(doc), err.get("msg"), e.msg);
                assertEquals(Py.repr(doc) + " pos", ((Long) err.get("pos")).intValue(), doc.codePointCount(0, Math.min(e.pos, doc.length())));
                assertEquals(Py.repr(doc), err.get("message"), e.getMessage());
            }
            n++;
        }
        assertTrue(n > 40);
    }

    @Test
    public void dumpsLikePython() {
        assertEquals("[\"D1:1\", \"caf\\u00e9\"]", Json.dumps(Arrays.asList("D1:1", "café")));
        assertEquals("{\n  \"a\": [\n    1,\n    2.5\n  ],\n  \"b\": {}\n}", Json.dumps(Map.of("b", Map.of(), "a", List.of(1L, 2.5)), 2, true, true));
    }
}
