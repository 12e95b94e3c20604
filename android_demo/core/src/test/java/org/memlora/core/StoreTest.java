package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** The SQLite store on the JVM (real SQLite through sqlite-jdbc) replays Python's update steps with the same results,
 *  and opens or refuses the same files with the same messages (a refused file left byte-identical). */
public class StoreTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    static MemoryStore.EmbedFn table(Object embeddings) {
        Map<String, Object> t = Vectors.obj(embeddings);
        return texts -> {
            float[][] out = new float[texts.size()][];
            for (int i = 0; i < texts.size(); i++) {
                if (!t.containsKey(texts.get(i))) throw new AssertionError("Java embedded a text Python did not: " + PromptTest.quoted(texts.get(i)));
                out[i] = Vectors.floats(t.get(texts.get(i)));
            }
            return out;
        };
    }

    static List<UpdateEvent> events(Object v) {
        List<UpdateEvent> out = new ArrayList<>();
        for (Object o : Vectors.arr(v)) {
            Map<String, Object> e = Vectors.obj(o);
            out.add(new UpdateEvent((String) e.get("id"), (String) e.get("text"), (String) e.get("event"), (String) e.get("old_memory")));
        }
        return out;
    }

    static Map<String, Long> idMap(Object v) {
        Map<String, Long> out = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : Vectors.obj(v).entrySet()) out.put(e.getKey(), (Long) e.getValue());
        return out;
    }

    /** Rows / history / meta of a store file, in the shape vectors.py records (embeddings as float lists). */
    static Map<String, Object> rows(File db) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Connection c = DriverManager.getConnection("jdbc:sqlite:" + db); Statement st = c.createStatement()) {
            List<Object> mems = new ArrayList<>();
            try (ResultSet rs = st.executeQuery("SELECT id, owner, text, created_at, updated_at, source_turns, embedding FROM memories ORDER BY id")) {
                while (rs.next()) {
                    Map<String, Object> m = new LinkedHashMap<>();
                    m.put("id", rs.getLong(1));
                    m.put("owner", rs.getString(2));
                    m.put("text", rs.getString(3));
                    m.put("created_at", rs.getString(4));
                    m.put("updated_at", rs.getString(5));
                    m.put("source_turns", rs.getString(6));
                    List<Object> emb = new ArrayList<>();
                    for (float f : MemoryStore.fromBlob(rs.getBytes(7))) emb.add((double) f);
                    m.put("embedding", emb);
                    mems.add(m);
                }
            }
            List<Object> hist = new ArrayList<>();
            try (ResultSet rs = st.executeQuery("SELECT seq, memory_id, owner, event, old_text, new_text, source_turns, at, batch FROM history ORDER BY seq")) {
                while (rs.next()) {
                    Map<String, Object> h = new LinkedHashMap<>();
                    String[] keys = {"seq", "memory_id", "owner", "event", "old_text", "new_text", "source_turns", "at", "batch"};
                    for (int i = 0; i < keys.length; i++) h.put(keys[i], i < 2 ? (Object) rs.getLong(i + 1) : rs.getString(i + 1));
                    hist.add(h);
                }
            }
            Map<String, Object> meta = new LinkedHashMap<>();
            try (ResultSet rs = st.executeQuery("SELECT key, value FROM meta")) {
                while (rs.next()) meta.put(rs.getString(1), rs.getString(2));
            }
            List<Object> turns = new ArrayList<>();
            try (ResultSet rs = st.executeQuery("SELECT id, owner, turn_id, said_at, text, embedding FROM turns ORDER BY id")) {
                while (rs.next()) {
                    Map<String, Object> t = new LinkedHashMap<>();
                    t.put("id", rs.getLong(1));
                    t.put("owner", rs.getString(2));
                    t.put("turn_id", rs.getString(3));
                    t.put("said_at", rs.getString(4));
                    t.put("text", rs.getString(5));
                    List<Object> emb = new ArrayList<>();
                    for (float f : MemoryStore.fromBlob(rs.getBytes(6))) emb.add((double) f);
                    t.put("embedding", emb);
                    turns.add(t);
                }
            }
            out.put("memories", mems);
            out.put("history", hist);
            out.put("meta", meta);
            out.put("turns", turns);
        }
        return out;
    }

    /** Equal rows; embeddings within float32 rounding (numpy and Java normalise in a different order). */
    static void assertRows(String what, Map<String, Object> expected, Map<String, Object> actual, boolean ignoreBatch) {
        List<Object> em = Vectors.arr(expected.get("memories")), am = Vectors.arr(actual.get("memories"));
        assertEquals(what + " memory count", em.size(), am.size());
        for (int i = 0; i < em.size(); i++) {
            Map<String, Object> e = new LinkedHashMap<>(Vectors.obj(em.get(i))), a = new LinkedHashMap<>(Vectors.obj(am.get(i)));
            float[] ev = Vectors.floats(e.remove("embedding")), av = Vectors.floats(a.remove("embedding"));
            Vectors.assertJsonEquals(what + " memory " + i, e, a);
            assertEquals(what + " embedding size", ev.length, av.length);
            for (int k = 0; k < ev.length; k++) assertEquals(what + " embedding", ev[k], av[k], 1e-6);
        }
        List<Object> eh = Vectors.arr(expected.get("history")), ah = Vectors.arr(actual.get("history"));
        assertEquals(what + " history count", eh.size(), ah.size());
        for (int i = 0; i < eh.size(); i++) {
            Map<String, Object> e = new LinkedHashMap<>(Vectors.obj(eh.get(i))), a = new LinkedHashMap<>(Vectors.obj(ah.get(i)));
            if (ignoreBatch) {
                assertEquals(e.get("batch") == null, a.get("batch") == null);
                e.remove("batch");
                a.remove("batch");
            }
            Vectors.assertJsonEquals(what + " history " + i, e, a);
        }
        Vectors.assertJsonEquals(what + " meta", expected.get("meta"), actual.get("meta"));
        List<Object> et = Vectors.arr(expected.get("turns")), at = Vectors.arr(actual.get("turns"));
        assertEquals(what + " turn count", et.size(), at.size());
        for (int i = 0; i < et.size(); i++) {
            Map<String, Object> e = new LinkedHashMap<>(Vectors.obj(et.get(i))), a = new LinkedHashMap<>(Vectors.obj(at.get(i)));
            float[] ev = Vectors.floats(e.remove("embedding")), av = Vectors.floats(a.remove("embedding"));
            Vectors.assertJsonEquals(what + " turn " + i, e, a);
            assertEquals(what + " turn embedding size", ev.length, av.length);
            for (int k = 0; k < ev.length; k++) assertEquals(what + " turn embedding", ev[k], av[k], 1e-6);
        }
    }

    @Test
    public void replaysPythonUpdateStepsIdentically() throws Exception {
        Map<String, Object> v = Vectors.obj(Vectors.load("store.json"));
        MemoryStore.EmbedFn embed = table(v.get("embeddings"));
        File db = new File(tmp.getRoot(), "java.sqlite");
        int step = 0;
        try (MemoryStore store = new MemoryStore(db.getPath())) {
            for (Object o : Vectors.arr(v.get("steps"))) {
                Map<String, Object> s = Vectors.obj(o);
                String now = (String) s.get("now");
                Object result;
                switch ((String) s.get("kind")) {
                    case "add":
                        result = store.add(Vectors.strings(s.get("texts")), (String) s.get("owner"), embed, Vectors.strings(s.get("source_turns")), now).toMap();
                        break;
                    case "update":
                        List<UpdateEvent> evs = s.containsKey("raw") ? OpParser.parseUpdate((String) s.get("raw")) : events(s.get("events"));
                        result = store.applyUpdate(evs, idMap(s.get("id_map")), (String) s.get("owner"), Vectors.strings(s.get("source_turns")),
                                embed, now, (String) s.get("batch")).toMap();
                        break;
                    default:
                        result = store.delete((Long) s.get("memory_id"), now);
                }
                Vectors.assertJsonEquals("step " + step + " result", s.get("result"), result);
                assertRows("step " + step, Vectors.obj(s.get("after")), rows(db), false);
                step++;
            }
            Map<String, Object> counts = Vectors.obj(v.get("counts"));
            assertEquals(((Long) counts.get("all")).intValue(), store.count(null));
            assertEquals(((Long) counts.get("user")).intValue(), store.count("user"));
            assertEquals(((Long) counts.get("bob")).intValue(), store.count("bob"));
            Map<String, Object> h = Vectors.obj(v.get("history_of"));
            Vectors.assertJsonEquals("history(memory)", h.get("rows"), store.history((Long) h.get("memory_id")));
        }
        assertTrue(step >= 6);
    }

    @Test
    public void sameSchemaAsPython() throws Exception {
        Map<String, Object> v = Vectors.obj(Vectors.load("store.json"));
        File db = new File(tmp.getRoot(), "schema.sqlite");
        new MemoryStore(db.getPath()).close();
        List<Object> got = new ArrayList<>();
        try (Connection c = DriverManager.getConnection("jdbc:sqlite:" + db); Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")) {
            while (rs.next()) {
                List<Object> r = new ArrayList<>();
                for (int i = 1; i <= 4; i++) r.add(rs.getString(i));
                got.add(r);
            }
        }
        Vectors.assertJsonEquals("sqlite_master", v.get("schema"), got);
    }

    @Test
    public void opensAPythonStoreAndHistoryIsAppendOnly() throws Exception {
        Map<String, Object> v = Vectors.obj(Vectors.load("store.json"));
        File db = new File(tmp.getRoot(), "py.sqlite");
        Files.copy(new File(Vectors.dir(), (String) v.get("db")).toPath(), db.toPath(), StandardCopyOption.REPLACE_EXISTING);
        List<Object> steps = Vectors.arr(v.get("steps"));
        Map<String, Object> last = Vectors.obj(Vectors.obj(steps.get(steps.size() - 1)).get("after"));
        try (MemoryStore store = new MemoryStore(db.getPath())) {
            assertEquals(Vectors.arr(last.get("memories")).size(), store.all(null).size());
            assertEquals(Integer.valueOf(8), store.dim());
            try (Connection c = DriverManager.getConnection("jdbc:sqlite:" + db); Statement st = c.createStatement()) {
                st.execute("DELETE FROM history");
                fail("history rows could be deleted");
            } catch (java.sql.SQLException e) {
                assertTrue(e.getMessage(), e.getMessage().contains("history is append-only"));
            }
            try {
                store.add(java.util.Arrays.asList("wrong size"), "user", t -> new float[][] {new float[3]}, null, null);
                fail("accepted 3-dim embeddings in an 8-dim store");
            } catch (MemoryStore.StoreError e) {
                assertTrue(e.getMessage(), e.getMessage().contains("embeddings here have 8 dims, got 3"));
            }
        }
        assertRows("reopened", last, rows(db), false);
    }

    @Test
    public void aFailedUpdateChangesNothing() throws Exception {
        File db = new File(tmp.getRoot(), "tx.sqlite");
        try (MemoryStore store = new MemoryStore(db.getPath())) {
            store.add(java.util.Arrays.asList("a", "b"), "user", t -> {
                float[][] out = new float[t.size()][];
                for (int i = 0; i < out.length; i++) out[i] = new float[] {i + 1, 1};
                return out;
            }, null, "2023-01-01T00:00:00");
            Map<String, Object> before = rows(db);
            Map<String, Long> ids = new LinkedHashMap<>();
            ids.put("0", 1L);
            ids.put("1", 2L);
            // The second UPDATE's embedding has the wrong size: the first UPDATE is inside the same transaction.
            List<UpdateEvent> evs = java.util.Arrays.asList(new UpdateEvent("0", "a2", "UPDATE", "a"), new UpdateEvent("1", "b2", "UPDATE", "b"));
            try {
                store.applyUpdate(evs, ids, "user", null, t -> new float[][] {{1, 0}}, "2023-01-02T00:00:00", "x");
                fail("applied an update whose embedder failed");
            } catch (IllegalArgumentException e) {
                assertTrue(e.getMessage().contains("1 rows for 2 texts"));
            }
            assertRows("after failed update", before, rows(db), false);
            assertFalse(store.delete(99, null));
        }
    }

    @Test
    public void turnsAreKeptOnceRankedAndForgottenWithTheirMemory() throws Exception {
        File db = new File(tmp.getRoot(), "turns.sqlite");
        try (MemoryStore store = new MemoryStore(db.getPath())) {
            List<String> texts = java.util.Arrays.asList("A: hi", "B: pizza is pepperoni", "A: bye");
            float[][] vecs = {{1, 0, 0}, {0, 1, 0}, {0.6f, 0.8f, 0}};
            List<Long> ids = store.addTurns(texts, vecs, "u", java.util.Arrays.asList("D1:1", "D1:2", null), "2023-05-08T13:56:00");
            List<Long> again = store.addTurns(texts, vecs, "u", java.util.Arrays.asList("D1:1", "D1:2", null), "2023-05-09T00:00:00");
            assertEquals(ids.subList(0, 2), again.subList(0, 2));
            assertEquals(4, store.turnCount("u"));
            List<MemoryStore.StoredTurn> hits = store.searchTurns(new float[] {0, 1, 0}, 2, "u");
            assertEquals("B: pizza is pepperoni", hits.get(0).text);
            assertEquals("D1:2", hits.get(0).turnId);
            assertEquals(1.0, hits.get(0).score, 1e-6);
            assertEquals("A: bye", hits.get(1).text);
            assertEquals(0.8, hits.get(1).score, 1e-6);
            // Deleting a memory deletes the kept turns it came from, and only those.
            ApplyResult r = store.add(Collections.singletonList("B likes pepperoni pizza"), "u", t -> new float[][] {{0, 1, 0}},
                    Collections.singletonList("D1:2"), "2023-05-08T13:56:00");
            assertTrue(store.delete(r.added.get(0), null));
            assertEquals(3, store.turnCount("u"));
            assertEquals("A: bye", store.searchTurns(new float[] {0, 1, 0}, 1, "u").get(0).text);
        }
    }

    static long pragma(File db, String name) throws Exception {
        try (Connection c = DriverManager.getConnection("jdbc:sqlite:" + db); Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("PRAGMA " + name)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    @Test
    public void opensOrRefusesFilesLikePython() throws Exception {
        List<Object> cases = Vectors.arr(Vectors.obj(Vectors.load("store.json")).get("open"));
        assertTrue(cases.size() >= 10);
        int n = 0;
        for (Object o : cases) {
            Map<String, Object> c = Vectors.obj(o);
            String name = (String) c.get("db");
            File dir = tmp.newFolder("open" + n++);
            File db = new File(dir, "store.db");
            Files.copy(new File(Vectors.dir(), name).toPath(), db.toPath());
            byte[] before = Files.readAllBytes(db.toPath());
            if (c.containsKey("error")) {
                try {
                    new MemoryStore(db.getPath()).close();
                    fail(name + ": Python refused it (" + c.get("error") + "), Java opened it");
                } catch (MemoryStore.StoreError e) {
                    assertEquals(name, c.get("error"), e.getMessage().replace(db.getPath(), "<db>"));
                }
                assertTrue(name + " was changed", Arrays.equals(before, Files.readAllBytes(db.toPath())));
                assertEquals(name + ": files left next to it", Arrays.asList("store.db"), Arrays.asList(dir.list()));
            } else {
                new MemoryStore(db.getPath()).close();
                Map<String, Object> opened = new LinkedHashMap<>(Vectors.obj(c.get("opened")));
                assertEquals(name, opened.remove("application_id"), pragma(db, "application_id"));
                assertEquals(name, opened.remove("user_version"), pragma(db, "user_version"));
                assertRows(name, opened, rows(db), false);
            }
        }
    }

    @Test
    public void newStoresAreStampedAndFailuresNameTheFile() throws Exception {
        File db = new File(tmp.getRoot(), "new.sqlite");
        new MemoryStore(db.getPath()).close();
        byte[] header = Arrays.copyOf(Files.readAllBytes(db.toPath()), 100);
        assertEquals("MemL", new String(header, 68, 4, java.nio.charset.StandardCharsets.US_ASCII));
        assertEquals(MemoryStore.APPLICATION_ID, pragma(db, "application_id"));
        assertEquals(MemoryStore.SCHEMA_VERSION, pragma(db, "user_version"));
        try {
            new MemoryStore(tmp.getRoot().getPath());
            fail("opened a directory");
        } catch (MemoryStore.StoreError e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith(tmp.getRoot().getPath() + ": cannot read the file"));
        }
        String missing = new File(tmp.getRoot(), "no/such/dir.sqlite").getPath();
        try {
            new MemoryStore(missing);
            fail("opened a store in a missing directory");
        } catch (MemoryStore.StoreError e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith(missing + ": "));
        }
        try (MemoryStore store = new MemoryStore(db.getPath())) {
            store.add(Arrays.asList("a"), "user", t -> new float[][] {{1, 0}}, null, null);
            try {
                store.search(new float[] {1, 0, 0}, 1, "user");
                fail("searched 2-dim embeddings with a 3-dim query");
            } catch (MemoryStore.StoreError e) {
                assertEquals(db.getPath() + ": query has 3 dims, stored embeddings 2", e.getMessage());
            }
        }
    }
}
