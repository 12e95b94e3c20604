package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import org.junit.Test;

/** The text rules shared with Python (whitespace, lines, order) and the strict reader of model output (json.json). */
public class TextTest {
    @Test
    public void whitespaceIsPythonsForEveryCodePoint() {
        Set<Long> py = new HashSet<>();
        for (Object o : Vectors.arr(Vectors.obj(Vectors.load("text.json")).get("isspace"))) py.add((Long) o);
        for (int cp = 0; cp < 0x110000; cp++) assertEquals("U+" + Integer.toHexString(cp), py.contains((long) cp), Text.isSpace(cp));
        for (int cp = 0; cp < 0x10000; cp++)
            assertEquals("U+" + Integer.toHexString(cp), Text.isSpace(cp), String.valueOf((char) cp).matches(Text.SPACE_CLASS));
    }

    @Test
    public void collapseStripLinesOrder() {
        assertEquals("a b c", Text.collapse("\u2003 a\u00a0b\n\tc \u3000"));
        assertEquals("a b", Text.collapse("  a \n  b "));
        assertEquals("", Text.collapse(" \u0085 "));
        assertEquals("x", Text.strip("\u0085 x\u2029"));
        assertEquals(" x", Text.rstrip(" x\u00a0\n"));
        assertEquals(Arrays.asList("a", "", "b", "c"), Text.lines("a\n\r\nb\u2028c\n"));
        assertTrue(Text.CODE_POINT_ORDER.compare("\uffff", "\ud83d\ude00") < 0); // U+FFFF before U+1F600 (UTF-16 says after)
        assertTrue(Text.CODE_POINT_ORDER.compare("ab", "abc") < 0);
    }

    @Test
    public void readerTakesWhatPythonsJsonTakes() {
        int n = 0;
        for (Object o : Vectors.arr(Vectors.load("json.json"))) {
            Map<String, Object> c = Vectors.obj(o);
            String doc = (String) c.get("doc");
            String what = JsonTree.write(Arrays.asList(doc), 0);
            OpParser.Reader r = new OpParser.Reader(doc);
            try {
                Object value = r.value(0);
                if (c.containsKey("error")) fail(what + ": Python refused it (" + c.get("error") + "), Java read " + value);
                Vectors.assertJsonEquals(what, Vectors.decode(c.get("value")), value);
                assertEquals(what + " end", ((Long) c.get("end")).intValue(), doc.codePointCount(0, r.end));
            } catch (OpParser.Stop e) {
                if (!c.containsKey("error")) fail(what + ": Python read it, Java refused it");
                assertEquals(what + " truncated (" + c.get("error") + ")", Vectors.obj(c.get("error")).get("truncated"), e.truncated);
            }
            n++;
        }
        assertTrue(n > 60);
    }
}
