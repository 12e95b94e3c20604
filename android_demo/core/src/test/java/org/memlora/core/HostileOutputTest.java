package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/**
 * The phone's parser and store under hostile model output (the Python side: tests/test_memory_hostile.py; the exact
 * messages at every bound are shared vectors in parse.json): any text parses inside the bounds or is a ParseError,
 * never another exception (no StackOverflowError however deep); an update as large as the parser admits applies
 * with row-id and memories_text look-ups only.
 */
public class HostileOutputTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    static void checkExtract(String text) {
        List<String> facts;
        try {
            facts = OpParser.parseExtract(text);
        } catch (ParseError e) {
            assertNotNull(e.getMessage());
            return;
        }
        assertTrue(facts.size() <= OpParser.MAX_FACTS);
        assertEquals(facts.size(), new HashSet<>(facts).size());
        for (String f : facts) assertTrue(!f.isEmpty() && OpParser.len(f) <= OpParser.MAX_TEXT_CHARS && f.equals(Text.collapse(f)));
    }

    static void checkUpdate(String text) {
        List<UpdateEvent> events;
        try {
            events = OpParser.parseUpdate(text);
        } catch (ParseError e) {
            assertNotNull(e.getMessage());
            return;
        }
        assertTrue(events.size() <= OpParser.MAX_EVENTS);
        for (UpdateEvent e : events) {
            assertTrue(OpParser.EVENTS.contains(e.event));
            assertTrue(OpParser.len(e.id) <= OpParser.MAX_ID_CHARS && OpParser.len(e.text) <= OpParser.MAX_TEXT_CHARS);
            assertTrue(!e.text.isEmpty() || e.event.equals("DELETE") || e.event.equals("NONE"));
            assertTrue(e.oldMemory == null || (!e.oldMemory.isEmpty() && OpParser.len(e.oldMemory) <= OpParser.MAX_TEXT_CHARS));
        }
    }

    static void checkAll(String text) {
        checkExtract(text);
        checkUpdate(text);
        assertFalse(MemoryCycle.cleanAnswer(text).contains("\n"));
    }

    static String repeat(String s, int n) {
        StringBuilder sb = new StringBuilder(s.length() * n);
        for (int i = 0; i < n; i++) sb.append(s);
        return sb.toString();
    }

    @Test
    public void randomSoupsOfJsonPunctuation() {
        String[] units = {"{", "}", "[", "]", "\"", "\\", ",", ":", " ", "0", "a", "{\"facts\": [", "{\"memory\": [",
            "{\"id\": \"0\", \"event\": \"NONE\"}", "\"text\": ", "\"x\"", "```json\n", "```", "\ud83d\ude00", "1e400", "-"};
        Random r = new Random(13);
        for (int n = 0; n < 4000; n++) {
            StringBuilder sb = new StringBuilder();
            int len = r.nextInt(n % 10 == 0 ? 3000 : 60);
            for (int i = 0; i < len; i++) sb.append(units[r.nextInt(units.length)]);
            checkAll(sb.toString());
        }
    }

    @Test
    public void nestingIsAParseErrorAtAnyDepth() {
        for (int depth : new int[] {OpParser.MAX_DEPTH, OpParser.MAX_DEPTH + 1, 600, 5_000, 30_000, 100_000}) {
            for (String opener : new String[] {"[", "{\"a\": ", "[\"]\", "}) {
                String deep = repeat(opener, depth);
                for (String text : new String[] {"{\"facts\": " + deep, "{\"memory\": [" + deep + "1", "x " + deep + "]}"}) {
                    checkAll(text);
                }
            }
        }
        try {
            OpParser.parseExtract("{\"facts\": " + repeat("[", 20_000) + "}");
            fail("parsed 20,000 levels");
        } catch (ParseError e) {
            assertEquals("JSON nested deeper than 32 levels", e.getMessage());
        }
        // Bundle JSON (org.json) nested that deep is an IllegalArgumentException, not a StackOverflowError.
        try {
            JsonTree.parse(repeat("[", 100_000) + repeat("]", 100_000));
            fail("decoded 100,000 levels");
        } catch (IllegalArgumentException e) {
            assertEquals("invalid JSON: nested too deeply", e.getMessage());
        }
        assertEquals(1, ((List<?>) JsonTree.parse(repeat("[", 500) + repeat("]", 500))).size());
    }

    @Test
    public void hugeOutputsAreRefusedUnread() {
        String ev = "{\"id\": \"0\", \"text\": \"x\", \"event\": \"DELETE\"}";
        StringBuilder sb = new StringBuilder("{\"memory\": [");
        for (int i = 0; i < 50_000; i++) sb.append(i == 0 ? "" : ", ").append(ev);
        try {
            OpParser.parseUpdate(sb.append("]}").toString());
            fail("parsed 50,000 events");
        } catch (ParseError e) {
            assertEquals("output of 2250012 characters (at most 32768)", e.getMessage());
        }
        checkAll(repeat("{\"facts\": [\"a\", ", 10_000));
        checkAll(repeat("9", 40_000));
    }

    static float[][] embed(List<String> texts) {
        float[][] out = new float[texts.size()][8];
        for (int i = 0; i < out.length; i++) {
            out[i][Math.floorMod(texts.get(i).hashCode(), 8)] = 1f;
            out[i][texts.get(i).length() % 8] += 0.5f;
        }
        return out;
    }

    @Test
    public void theLargestAdmittedUpdateAppliesWithIndexedLookUps() throws Exception {
        File db = new File(tmp.getRoot(), "big.sqlite");
        try (MemoryStore store = new MemoryStore(db.getPath())) {
            List<String> seed = new ArrayList<>();
            for (int i = 0; i < 20_000; i++) seed.add("memory " + i);
            seed.add("memory 7");
            ApplyResult added = store.add(seed, "u", HostileOutputTest::embed, null, "2023-05-08T13:56:00");
            assertEquals(20_000, added.added.size());
            assertEquals(1, added.skipped.size());
            List<Memory> all = store.all("u");
            Map<String, Long> idMap = new LinkedHashMap<>();
            for (int i = 0; i < 40; i++) idMap.put(String.valueOf(i), all.get(i * 97).id);
            StringBuilder raw = new StringBuilder("{\"memory\": [");
            String[] kinds = {"ADD", "UPDATE", "DELETE", "NONE", "UPDATE"};
            for (int n = 0; n < OpParser.MAX_EVENTS; n++) {
                String kind = kinds[n % 5];
                String id = kind.equals("ADD") ? String.valueOf(n) : n % 9 == 8 ? "999" : String.valueOf(n % 40); // 999: never shown
                String text = kind.equals("ADD") || kind.equals("UPDATE") ? "event " + n + " " + repeat("z", 300) : "";
                raw.append(n == 0 ? "" : ", ").append("{\"id\": \"").append(id).append("\", \"text\": \"").append(text)
                        .append("\", \"event\": \"").append(kind).append("\"}");
            }
            List<UpdateEvent> events = OpParser.parseUpdate(raw.append("]}").toString());
            assertEquals(OpParser.MAX_EVENTS, events.size());
            ApplyResult res = store.applyUpdate(events, idMap, "u", Arrays.asList("D9:1"), HostileOutputTest::embed,
                    "2023-06-01T10:00:00", "big");
            assertEquals(OpParser.MAX_EVENTS, res.changed() + res.unchanged + res.skipped.size());
            assertTrue(!res.added.isEmpty() && !res.updated.isEmpty() && !res.deleted.isEmpty() && !res.skipped.isEmpty());
        }
        // The look-ups applyUpdate makes: by row id, and the duplicate check of an ADD by text (not by owner: one
        // owner's memories scanned per ADD made the cost quadratic).
        try (Connection c = DriverManager.getConnection("jdbc:sqlite:" + db); Statement st = c.createStatement()) {
            String[] sqls = {"SELECT id FROM memories WHERE text = 'x' AND owner IS 'u'", "SELECT text, source_turns FROM memories WHERE id = 5",
                "UPDATE memories SET text = 'y' WHERE id = 5", "DELETE FROM memories WHERE id = 5"};
            for (String sql : sqls) {
                try (ResultSet rs = st.executeQuery("EXPLAIN QUERY PLAN " + sql)) {
                    assertTrue(rs.next());
                    String plan = rs.getString(4);
                    assertTrue(sql + ": " + plan, plan.equals("SEARCH memories USING INTEGER PRIMARY KEY (rowid=?)")
                            || plan.equals("SEARCH memories USING INDEX memories_text (text=?)"));
                }
            }
        }
    }
}
