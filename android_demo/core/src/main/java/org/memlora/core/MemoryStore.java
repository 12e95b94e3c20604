package org.memlora.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * The memory store of runtimes/memory/store.py on the JVM (JDBC over SQLite: xerial sqlite-jdbc here and on the
 * phone): the same schema, so a store file moves between the phone and Python; {@link #applyUpdate} applies parsed
 * update events in ONE transaction ({@code BEGIN IMMEDIATE} ... {@code COMMIT}) with the same rules (unknown id,
 * UPDATE/DELETE of nothing, ADD of a stored text: skipped, nothing changed) and an append-only history;
 * {@link #search} ranks by cosine similarity, best first, ties in row order. Applying is linear in the number of
 * events (row-id and memories_text look-ups only).
 *
 * <p>Opening, as in Python: a missing or empty file becomes a new store stamped with {@link #APPLICATION_ID} and
 * {@code user_version} = {@link #SCHEMA_VERSION}; a stamped store opens; a store from before the stamp (application
 * id 0, the memlora tables and columns) opens and is stamped; anything else is a {@link StoreError} and the file is
 * left byte-identical (judged from its header bytes and a read-only connection before anything writes to it). Every
 * SQLite or I/O failure is a StoreError whose message starts with the file's path.
 */
public final class MemoryStore implements AutoCloseable {
    public static final int SCHEMA_VERSION = 1;
    /** {@code PRAGMA application_id} of a memlora store: "MemL" (0x4d656d4c), store.APPLICATION_ID. */
    public static final long APPLICATION_ID = 0x4d656d4cL;

    /** runtimes/memory/store.py SCHEMA, statement by statement (the JVM tests compare sqlite_master with Python's). */
    static final String[] SCHEMA = {
        "CREATE TABLE IF NOT EXISTS memories (\n"
            + "    id INTEGER PRIMARY KEY,\n"
            + "    owner TEXT,\n"
            + "    text TEXT NOT NULL,\n"
            + "    created_at TEXT NOT NULL,\n"
            + "    updated_at TEXT NOT NULL,\n"
            + "    source_turns TEXT NOT NULL DEFAULT '[]',\n"
            + "    embedding BLOB NOT NULL\n"
            + ")",
        "CREATE INDEX IF NOT EXISTS memories_owner ON memories(owner)",
        "CREATE INDEX IF NOT EXISTS memories_text ON memories(text)",
        "CREATE TABLE IF NOT EXISTS history (\n"
            + "    seq INTEGER PRIMARY KEY AUTOINCREMENT,\n"
            + "    memory_id INTEGER NOT NULL,\n"
            + "    owner TEXT,\n"
            + "    event TEXT NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),\n"
            + "    old_text TEXT,\n"
            + "    new_text TEXT,\n"
            + "    source_turns TEXT NOT NULL DEFAULT '[]',\n"
            + "    at TEXT NOT NULL,\n"
            + "    batch TEXT\n"
            + ")",
        "CREATE INDEX IF NOT EXISTS history_memory ON history(memory_id)",
        "CREATE TRIGGER IF NOT EXISTS history_no_update BEFORE UPDATE ON history\n"
            + "BEGIN SELECT RAISE(ABORT, 'history is append-only'); END",
        "CREATE TRIGGER IF NOT EXISTS history_no_delete BEFORE DELETE ON history\n"
            + "BEGIN SELECT RAISE(ABORT, 'history is append-only'); END",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    };

    /** Texts -> one embedding per text (rows of equal length). */
    public interface EmbedFn {
        float[][] embed(List<String> texts);
    }

    /** The store file cannot be used (not a memory store, another schema version, another embedding size) or SQLite
     *  failed on it; the message starts with the file's path. */
    public static final class StoreError extends RuntimeException {
        public StoreError(String msg) {
            super(msg);
        }

        public StoreError(String msg, Throwable cause) {
            super(msg, cause);
        }
    }

    /** A search hit. */
    public static final class Scored {
        public final Memory memory;
        public final double score;

        Scored(Memory memory, double score) {
            this.memory = memory;
            this.score = score;
        }
    }

    private static final String COLS = "SELECT id, owner, text, created_at, updated_at, source_turns, embedding FROM memories";

    public final String path;
    private final Connection conn;
    private Integer dim;

    public MemoryStore(String path) {
        this.path = path;
        try {
            Class.forName("org.sqlite.JDBC"); // registers the driver (DriverManager's service lookup is not reliable on Android)
        } catch (ClassNotFoundException e) {
            throw new StoreError("the SQLite JDBC driver (org.xerial:sqlite-jdbc) is not on the classpath", e);
        }
        byte[] header = StoreFile.readHeader(path);
        String kind = null;
        if (header != null) {
            // An existing file: judged before anything can write to it.
            StoreFile.checkHeader(path, header);
            try (Connection ro = DriverManager.getConnection("jdbc:sqlite:" + StoreFile.readOnlyUri(path))) {
                kind = StoreFile.inspect(ro, path, false);
            } catch (SQLException e) {
                throw error(e);
            }
        }
        try {
            conn = DriverManager.getConnection("jdbc:sqlite:" + path);
        } catch (SQLException e) {
            throw error(e);
        }
        try {
            conn.setAutoCommit(true); // transactions are opened explicitly with BEGIN IMMEDIATE, as in Python
            try (Statement st = conn.createStatement()) {
                st.setQueryTimeout(30);
                st.execute("PRAGMA busy_timeout=30000");
            }
            if (header == null || "legacy".equals(kind)) initialise(header == null);
            try (Statement st = conn.createStatement()) {
                try (ResultSet rs = st.executeQuery("PRAGMA journal_mode=WAL")) {
                    rs.next();
                }
                st.execute("PRAGMA synchronous=FULL");
                st.execute("PRAGMA foreign_keys=ON");
                for (String sql : SCHEMA) st.execute(sql); // IF NOT EXISTS: adds what older stores lack (memories_text)
            }
            Map<String, String> meta = new LinkedHashMap<>();
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT key, value FROM meta")) {
                while (rs.next()) meta.put(rs.getString(1), rs.getString(2));
            }
            if (!String.valueOf(SCHEMA_VERSION).equals(meta.get("schema_version")))
                throw new StoreError(path + ": memory store schema " + meta.get("schema_version") + " (this code reads " + SCHEMA_VERSION + ")");
            dim = meta.containsKey("dim") ? Integer.valueOf(meta.get("dim")) : null;
        } catch (SQLException | RuntimeException e) {
            try {
                conn.close();
            } catch (SQLException ignored) {
                // the first error is the one to report
            }
            throw e instanceof SQLException ? error((SQLException) e) : (RuntimeException) e;
        }
    }

    private StoreError error(SQLException e) {
        return new StoreError(path + ": " + e.getMessage(), e);
    }

    /** Creates the store in an empty file, or stamps a store from before the stamp: one transaction, the file looked
     *  at again under the write lock (another process may have created it meanwhile). */
    private void initialise(boolean creating) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.execute("BEGIN IMMEDIATE");
        }
        try {
            String kind = StoreFile.inspect(conn, path, creating);
            try (Statement st = conn.createStatement()) {
                if (kind.equals("empty") || kind.equals("legacy")) {
                    st.execute("PRAGMA application_id = " + APPLICATION_ID);
                    st.execute("PRAGMA user_version = " + SCHEMA_VERSION);
                }
                if (kind.equals("empty")) {
                    for (String sql : SCHEMA) st.execute(sql);
                    st.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', '" + SCHEMA_VERSION + "')");
                }
                st.execute("COMMIT");
            }
        } catch (SQLException | RuntimeException e) {
            rollback();
            throw e;
        }
    }

    private void rollback() {
        try {
            try (Statement st = conn.createStatement()) {
                st.execute("ROLLBACK");
            }
        } catch (SQLException e) {
            // no transaction open any more (SQLite rolled it back itself), or the connection is gone
        }
    }

    @Override
    public void close() {
        try {
            conn.close();
        } catch (SQLException e) {
            throw error(e);
        }
    }

    public Integer dim() {
        return dim;
    }

    private void exec(String sql, Object... args) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            bind(ps, args);
            ps.execute();
        }
    }

    private static void bind(PreparedStatement ps, Object... args) throws SQLException {
        for (int i = 0; i < args.length; i++) {
            Object a = args[i];
            if (a == null) ps.setNull(i + 1, java.sql.Types.NULL);
            else if (a instanceof byte[]) ps.setBytes(i + 1, (byte[]) a);
            else if (a instanceof Long) ps.setLong(i + 1, (Long) a);
            else ps.setString(i + 1, a.toString());
        }
    }

    private void checkDim(int d) throws SQLException {
        if (dim == null) {
            exec("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", String.valueOf(d));
            dim = d;
        } else if (dim != d) {
            throw new StoreError(path + ": embeddings here have " + dim + " dims, got " + d + " (another embedder?)");
        }
    }

    // ------------------------------------------------------------------------------------------------ reading

    static float[] fromBlob(byte[] b) {
        ByteBuffer bb = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
        float[] v = new float[b.length / 4];
        for (int i = 0; i < v.length; i++) v[i] = bb.getFloat();
        return v;
    }

    static byte[] toBlob(float[] v) {
        ByteBuffer bb = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float f : v) bb.putFloat(f);
        return bb.array();
    }

    static List<String> jsonStrings(String json) {
        List<String> out = new ArrayList<>();
        for (Object o : JsonTree.arr(JsonTree.parse(json), "source_turns")) out.add(String.valueOf(o));
        return out;
    }

    /** A list of strings as Python's {@code json.dumps} writes it ({@code ["a", "b"]}, non-ASCII as \\u escapes), so
     *  that the phone and Python write the same bytes into a store. */
    static String jsonList(List<?> items) {
        StringBuilder sb = new StringBuilder("[");
        for (Object o : items) {
            if (sb.length() > 1) sb.append(", ");
            sb.append('"');
            for (char c : String.valueOf(o).toCharArray()) {
                int esc = "\"\\\n\r\t\b\f".indexOf(c);
                if (esc >= 0) sb.append('\\').append("\"\\nrtbf".charAt(esc));
                else if (c < 0x20 || c > 0x7e) sb.append(String.format("\\u%04x", (int) c));
                else sb.append(c);
            }
            sb.append('"');
        }
        return sb.append(']').toString();
    }

    private static Memory row(ResultSet rs, boolean withEmbedding) throws SQLException {
        return new Memory(rs.getLong(1), rs.getString(2), rs.getString(3), rs.getString(4), rs.getString(5),
                jsonStrings(rs.getString(6)), withEmbedding ? fromBlob(rs.getBytes(7)) : null);
    }

    private List<Memory> query(String sql, boolean withEmbedding, Object... args) {
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            bind(ps, args);
            List<Memory> out = new ArrayList<>();
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) out.add(row(rs, withEmbedding));
            }
            return out;
        } catch (SQLException e) {
            throw new StoreError(path + ": " + e.getMessage(), e);
        }
    }

    public Memory get(long id) {
        List<Memory> r = query(COLS + " WHERE id = ?", true, id);
        return r.isEmpty() ? null : r.get(0);
    }

    /** All memories (of one owner when owner != null), by id. */
    public List<Memory> all(String owner) {
        return owner != null ? query(COLS + " WHERE owner = ? ORDER BY id", false, owner) : query(COLS + " ORDER BY id", false);
    }

    public int count(String owner) {
        String sql = owner == null ? "SELECT COUNT(*) FROM memories" : "SELECT COUNT(*) FROM memories WHERE owner = ?";
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            if (owner != null) ps.setString(1, owner);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getInt(1);
            }
        } catch (SQLException e) {
            throw new StoreError(path + ": " + e.getMessage(), e);
        }
    }

    /** History rows (of one memory when memoryId != null) in order: seq, memory_id, owner, event, old_text, new_text,
     *  source_turns (list), at, batch. */
    public List<Map<String, Object>> history(Long memoryId) {
        String q = "SELECT seq, memory_id, owner, event, old_text, new_text, source_turns, at, batch FROM history";
        String sql = memoryId != null ? q + " WHERE memory_id = ? ORDER BY seq" : q + " ORDER BY seq";
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            if (memoryId != null) ps.setLong(1, memoryId);
            List<Map<String, Object>> out = new ArrayList<>();
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    Map<String, Object> h = new LinkedHashMap<>();
                    h.put("seq", rs.getLong(1));
                    h.put("memory_id", rs.getLong(2));
                    h.put("owner", rs.getString(3));
                    h.put("event", rs.getString(4));
                    h.put("old_text", rs.getString(5));
                    h.put("new_text", rs.getString(6));
                    h.put("source_turns", new ArrayList<Object>(jsonStrings(rs.getString(7))));
                    h.put("at", rs.getString(8));
                    h.put("batch", rs.getString(9));
                    out.add(h);
                }
            }
            return out;
        } catch (SQLException e) {
            throw new StoreError(path + ": " + e.getMessage(), e);
        }
    }

    // ------------------------------------------------------------------------------------------------ retrieval

    /** float32 L2 normalisation as numpy does it in store.py ({@code v / ||v||}, unchanged when the norm is 0). */
    public static float[] normalize(float[] v) {
        double s = 0;
        for (float f : v) s += (double) f * f;
        float n = (float) Math.sqrt(s);
        float[] out = new float[v.length];
        for (int i = 0; i < v.length; i++) out[i] = n > 0 ? v[i] / n : v[i];
        return out;
    }

    /** The k memories most similar to the query (cosine), best first; equal scores keep row order. */
    public List<Scored> search(float[] queryEmbedding, int k, String owner) {
        List<Memory> rows = owner != null ? query(COLS + " WHERE owner = ?", true, owner) : query(COLS, true);
        List<Scored> out = new ArrayList<>();
        if (rows.isEmpty() || k <= 0) return out;
        float[] q = normalize(queryEmbedding);
        List<Scored> all = new ArrayList<>();
        for (Memory m : rows) {
            if (m.embedding.length != q.length)
                throw new StoreError(path + ": query has " + q.length + " dims, stored embeddings " + m.embedding.length);
            double dot = 0, nn = 0;
            for (int i = 0; i < q.length; i++) {
                dot += (double) m.embedding[i] * q[i];
                nn += (double) m.embedding[i] * m.embedding[i];
            }
            double norm = Math.sqrt(nn);
            all.add(new Scored(new Memory(m.id, m.owner, m.text, m.createdAt, m.updatedAt, m.sourceTurns, null),
                    dot / (norm > 0 ? norm : 1.0)));
        }
        List<Scored> sorted = new ArrayList<>(all);
        sorted.sort(Comparator.comparingDouble((Scored s) -> -s.score)); // List.sort is stable
        return new ArrayList<>(sorted.subList(0, Math.min(k, sorted.size())));
    }

    // ------------------------------------------------------------------------------------------------ writes

    /**
     * Applies parsed update events in one transaction. {@code idMap} maps the temporary ids shown to the model to row
     * ids ({@link MemoryFormat#formatMemories}); ADD ignores the id the model gave; UPDATE / DELETE / NONE must name a
     * shown id. Embeddings of the new texts are computed before the transaction opens; the work per event is a few
     * indexed statements, so the transaction's time grows linearly with the number of events.
     */
    public ApplyResult applyUpdate(List<UpdateEvent> events, Map<String, Long> idMap, String owner, List<String> sourceTurns,
                                   EmbedFn embedFn, String now, String batch) {
        String when = now != null ? now : MemoryFormat.now();
        List<String> turns = sourceTurns == null ? new ArrayList<>() : new ArrayList<>(sourceTurns);
        TreeSet<String> textSet = new TreeSet<>(Text.CODE_POINT_ORDER);
        for (UpdateEvent e : events) if ((e.event.equals("ADD") || e.event.equals("UPDATE")) && e.text != null && !e.text.isEmpty()) textSet.add(e.text);
        List<String> texts = new ArrayList<>(textSet);
        Map<String, byte[]> vectors = new LinkedHashMap<>();
        try {
            if (!texts.isEmpty()) {
                float[][] emb = embedFn.embed(texts);
                if (emb.length != texts.size()) throw new IllegalArgumentException("embed_fn returned " + emb.length + " rows for " + texts.size() + " texts");
                checkDim(emb[0].length);
                for (int i = 0; i < texts.size(); i++) vectors.put(texts.get(i), toBlob(normalize(emb[i])));
            }
            Apply ctx = new Apply(idMap, owner, turns, vectors, when, batch);
            try (Statement st = conn.createStatement()) {
                st.execute("BEGIN IMMEDIATE");
            }
            try {
                for (UpdateEvent e : events) applyOne(e, ctx);
                try (Statement st = conn.createStatement()) {
                    st.execute("COMMIT");
                }
            } catch (Throwable t) {
                rollback();
                throw t;
            }
            return ctx.res;
        } catch (SQLException e) {
            throw error(e);
        }
    }

    /** What every event of one applyUpdate shares, computed once (not per event). */
    private static final class Apply {
        final Map<String, Long> idMap;
        final String owner, now, batch, turnsJson;
        final List<String> turns;
        final Map<String, byte[]> vectors;
        final ApplyResult res = new ApplyResult();
        private String shownIds;

        Apply(Map<String, Long> idMap, String owner, List<String> turns, Map<String, byte[]> vectors, String now, String batch) {
            this.idMap = idMap;
            this.owner = owner;
            this.turns = turns;
            this.vectors = vectors;
            this.now = now;
            this.batch = batch;
            this.turnsJson = jsonList(turns);
        }

        String shownIds() {
            if (shownIds == null) {
                List<String> shown = new ArrayList<>(idMap.keySet());
                shown.sort(Text.CODE_POINT_ORDER);
                StringBuilder sb = new StringBuilder("[");
                for (String id : shown) sb.append(sb.length() > 1 ? ", '" : "'").append(id).append('\'');
                shownIds = sb.append(']').toString();
            }
            return shownIds;
        }
    }

    private long lastRowId() throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT last_insert_rowid()")) {
            rs.next();
            return rs.getLong(1);
        }
    }

    private void applyOne(UpdateEvent e, Apply ctx) throws SQLException {
        String ev = e.event, text = e.text == null ? "" : e.text;
        String owner = ctx.owner, now = ctx.now, batch = ctx.batch, turnsJson = ctx.turnsJson;
        ApplyResult res = ctx.res;
        if (ev.equals("ADD")) {
            Long dup = null;
            try (PreparedStatement ps = conn.prepareStatement("SELECT id FROM memories WHERE text = ? AND owner IS ?")) {
                bind(ps, text, owner);
                try (ResultSet rs = ps.executeQuery()) {
                    if (rs.next()) dup = rs.getLong(1);
                }
            }
            if (dup != null) {
                skip(res, e, "ADD of a text already stored (memory " + dup + ")");
                return;
            }
            exec("INSERT INTO memories (owner, text, created_at, updated_at, source_turns, embedding) VALUES (?, ?, ?, ?, ?, ?)",
                    owner, text, now, now, turnsJson, ctx.vectors.get(text));
            long mid = lastRowId();
            exec("INSERT INTO history (memory_id, owner, event, old_text, new_text, source_turns, at, batch) "
                    + "VALUES (?, ?, 'ADD', NULL, ?, ?, ?, ?)", mid, owner, text, turnsJson, now, batch);
            res.added.add(mid);
            return;
        }
        Long real = ctx.idMap.get(e.id);
        if (ev.equals("NONE")) {
            res.unchanged++;
            return;
        }
        if (real == null) {
            skip(res, e, ev + " of unknown id '" + e.id + "' (shown ids: " + ctx.shownIds() + ")");
            return;
        }
        String oldText = null, oldTurnsJson = null;
        try (PreparedStatement ps = conn.prepareStatement("SELECT text, source_turns FROM memories WHERE id = ?")) {
            ps.setLong(1, real);
            try (ResultSet rs = ps.executeQuery()) {
                if (rs.next()) {
                    oldText = rs.getString(1);
                    oldTurnsJson = rs.getString(2);
                }
            }
        }
        if (oldText == null) {
            skip(res, e, ev + " of memory " + real + ", which is not stored (already deleted?)");
            return;
        }
        if (ev.equals("UPDATE")) {
            if (text.equals(oldText)) {
                res.unchanged++;
                return;
            }
            List<Object> merged = new ArrayList<>(jsonStrings(oldTurnsJson));
            HashSet<Object> seen = new HashSet<>(merged);
            for (String t : ctx.turns) if (!seen.contains(t)) merged.add(t);
            exec("UPDATE memories SET text = ?, updated_at = ?, source_turns = ?, embedding = ? WHERE id = ?",
                    text, now, jsonList(merged), ctx.vectors.get(text), real);
            exec("INSERT INTO history (memory_id, owner, event, old_text, new_text, source_turns, at, batch) "
                    + "VALUES (?, ?, 'UPDATE', ?, ?, ?, ?, ?)", real, owner, oldText, text, turnsJson, now, batch);
            res.updated.add(real);
        } else if (ev.equals("DELETE")) {
            exec("DELETE FROM memories WHERE id = ?", real);
            exec("INSERT INTO history (memory_id, owner, event, old_text, new_text, source_turns, at, batch) "
                    + "VALUES (?, ?, 'DELETE', ?, NULL, ?, ?, ?)", real, owner, oldText, turnsJson, now, batch);
            res.deleted.add(real);
        }
    }

    private static void skip(ApplyResult res, UpdateEvent e, String reason) {
        Map<String, Object> s = new LinkedHashMap<>();
        s.put("event", e.toMap());
        s.put("reason", reason);
        res.skipped.add(s);
    }

    /** Adds memories directly (one transaction), e.g. to seed a store. */
    public ApplyResult add(List<String> texts, String owner, EmbedFn embedFn, List<String> sourceTurns, String now) {
        List<UpdateEvent> events = new ArrayList<>();
        for (String t : texts) events.add(new UpdateEvent("", t, "ADD", null));
        return applyUpdate(events, new LinkedHashMap<>(), owner, sourceTurns, embedFn, now, "direct");
    }

    /** A user's deletion: one transaction, recorded in the history; false when there is no such memory. */
    public boolean delete(long memoryId, String now) {
        Memory m = get(memoryId);
        if (m == null) return false;
        Map<String, Long> idMap = new LinkedHashMap<>();
        idMap.put("u", memoryId);
        ApplyResult res = applyUpdate(Arrays.asList(new UpdateEvent("u", "", "DELETE", null)), idMap, m.owner, null,
                t -> new float[t.size()][1], now, "user");
        return !res.deleted.isEmpty();
    }
}
