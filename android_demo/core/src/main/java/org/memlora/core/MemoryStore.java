package org.memlora.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
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
        "CREATE TABLE IF NOT EXISTS images (\n"
            + "    id INTEGER PRIMARY KEY,\n"
            + "    owner TEXT,\n"
            + "    turn_id TEXT,\n"
            + "    shared_at TEXT NOT NULL,\n"
            + "    context TEXT NOT NULL,\n"
            + "    png BLOB NOT NULL,\n"
            + "    embedding BLOB NOT NULL\n"
            + ")",
        "CREATE INDEX IF NOT EXISTS images_owner ON images(owner)",
        "CREATE TABLE IF NOT EXISTS turns (\n"
            + "    id INTEGER PRIMARY KEY,\n"
            + "    owner TEXT,\n"
            + "    turn_id TEXT,\n"
            + "    said_at TEXT NOT NULL,\n"
            + "    text TEXT NOT NULL,\n"
            + "    embedding BLOB NOT NULL\n"
            + ")",
        "CREATE INDEX IF NOT EXISTS turns_owner ON turns(owner)",
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

    /** An image shared in a conversation (MemLoRA-V, store.py StoredImage): PNG bytes kept inside the store file, the
     *  turn and date it was shared at, and the text it was shared with, by which it is retrieved. */
    public static final class StoredImage {
        public final long id;
        public final String owner, turnId, sharedAt, context;
        public final byte[] png;
        public final double score; // cosine to the query of searchImages

        StoredImage(long id, String owner, String turnId, String sharedAt, String context, byte[] png, double score) {
            this.id = id;
            this.owner = owner;
            this.turnId = turnId;
            this.sharedAt = sharedAt;
            this.context = context;
            this.png = png;
            this.score = score;
        }
    }

    /** A conversation turn kept as it was said ("Speaker: text"), shown beside the memories (store.StoredTurn). */
    public static final class StoredTurn {
        public final long id;
        public final String owner, turnId, saidAt, text;
        public final double score; // cosine to the query of searchTurns

        StoredTurn(long id, String owner, String turnId, String saidAt, String text, double score) {
            this.id = id;
            this.owner = owner;
            this.turnId = turnId;
            this.saidAt = saidAt;
            this.text = text;
            this.score = score;
        }
    }

    private static final byte[] PNG_MAGIC = {(byte) 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

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
            conn = DriverManager.getConnection("jdbc:sqlite:" + path); // autocommit: transactions are opened explicitly
        } catch (SQLException e) {
            throw error(e);
        }
        try {
            exec("PRAGMA busy_timeout=30000");
            if (header == null || "legacy".equals(kind)) initialise(header == null);
            exec("PRAGMA journal_mode=WAL");
            exec("PRAGMA synchronous=FULL");
            exec("PRAGMA foreign_keys=ON");
            for (String sql : SCHEMA) exec(sql); // IF NOT EXISTS: adds what older stores lack (memories_text)
            Map<String, String> meta = new HashMap<>();
            for (String[] kv : select(conn, "SELECT key, value FROM meta", rs -> new String[] {rs.getString(1), rs.getString(2)}))
                meta.put(kv[0], kv[1]);
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
        transaction(() -> {
            String kind = StoreFile.inspect(conn, path, creating);
            if (kind.equals("empty") || kind.equals("legacy")) {
                exec("PRAGMA application_id = " + APPLICATION_ID);
                exec("PRAGMA user_version = " + SCHEMA_VERSION);
            }
            if (kind.equals("empty")) {
                for (String sql : SCHEMA) exec(sql);
                exec("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", String.valueOf(SCHEMA_VERSION));
            }
        });
    }

    private interface Work {
        void run() throws SQLException;
    }

    /** {@code work} in one transaction ({@code BEGIN IMMEDIATE} ... {@code COMMIT}, as in Python), rolled back on any failure. */
    private void transaction(Work work) throws SQLException {
        exec("BEGIN IMMEDIATE");
        try {
            work.run();
            exec("COMMIT");
        } catch (Throwable t) {
            try {
                exec("ROLLBACK");
            } catch (SQLException e) {
                // no transaction open any more (SQLite rolled it back itself), or the connection is gone
            }
            throw t;
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

    /** Maps the current row of a result set. */
    interface Row<T> {
        T map(ResultSet rs) throws SQLException;
    }

    /** The rows of {@code sql} on {@code c}, each mapped by {@code row}; {@code args} bound to its placeholders. */
    static <T> List<T> select(Connection c, String sql, Row<T> row, Object... args) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) ps.setObject(i + 1, args[i]);
            List<T> out = new ArrayList<>();
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) out.add(row.map(rs));
            }
            return out;
        }
    }

    /** {@link #select} on this store, failures as StoreError naming the file. */
    private <T> List<T> query(String sql, Row<T> row, Object... args) {
        try {
            return select(conn, sql, row, args);
        } catch (SQLException e) {
            throw error(e);
        }
    }

    private void exec(String sql, Object... args) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) ps.setObject(i + 1, args[i]);
            ps.execute();
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
        float[] v = new float[b.length / 4];
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(v);
        return v;
    }

    static byte[] toBlob(float[] v) {
        ByteBuffer bb = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        bb.asFloatBuffer().put(v);
        return bb.array();
    }

    static List<String> jsonStrings(String json) {
        List<String> out = new ArrayList<>();
        for (Object o : JsonTree.arr(JsonTree.parse(json), "source_turns")) out.add(String.valueOf(o));
        return out;
    }

    /** A list of strings as Python's {@code json.dumps} writes it ({@code ["a", "b"]}, non-ASCII as \\u escapes), so
     *  that the phone and Python write the same bytes into a store. */
    static String jsonList(Iterable<String> items) {
        StringBuilder sb = new StringBuilder("[");
        for (String item : items) {
            if (sb.length() > 1) sb.append(", ");
            sb.append('"');
            for (char c : item.toCharArray()) {
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

    public Memory get(long id) {
        List<Memory> r = query(COLS + " WHERE id = ?", rs -> row(rs, true), id);
        return r.isEmpty() ? null : r.get(0);
    }

    /** All memories (of one owner when owner != null), by id. */
    public List<Memory> all(String owner) {
        return owner != null ? query(COLS + " WHERE owner = ? ORDER BY id", rs -> row(rs, false), owner)
                : query(COLS + " ORDER BY id", rs -> row(rs, false));
    }

    public int count(String owner) {
        return owner != null ? query("SELECT COUNT(*) FROM memories WHERE owner = ?", rs -> rs.getInt(1), owner).get(0)
                : query("SELECT COUNT(*) FROM memories", rs -> rs.getInt(1)).get(0);
    }

    /** History rows (of one memory when memoryId != null) in order, keyed by column; source_turns as a list. */
    public List<Map<String, Object>> history(Long memoryId) {
        List<String> cols = StoreFile.HISTORY_COLUMNS;
        String sql = "SELECT " + String.join(", ", cols) + " FROM history" + (memoryId != null ? " WHERE memory_id = ?" : "") + " ORDER BY seq";
        return query(sql, rs -> {
            Map<String, Object> h = new LinkedHashMap<>();
            for (int i = 0; i < cols.size(); i++) h.put(cols.get(i), i < 2 ? (Object) rs.getLong(i + 1) : rs.getString(i + 1));
            h.put("source_turns", jsonStrings((String) h.get("source_turns")));
            return h;
        }, memoryId != null ? new Object[] {memoryId} : new Object[0]);
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

    /** Cosine of a stored embedding with the normalised query q (store.py _rank); StoreError when the sizes differ. */
    private double cosine(float[] stored, float[] q) {
        if (stored.length != q.length) throw new StoreError(path + ": query has " + q.length + " dims, stored embeddings " + stored.length);
        double dot = 0, nn = 0;
        for (int i = 0; i < q.length; i++) {
            dot += (double) stored[i] * q[i];
            nn += (double) stored[i] * stored[i];
        }
        double norm = Math.sqrt(nn);
        return dot / (norm > 0 ? norm : 1.0);
    }

    /** The k memories most similar to the query (cosine), best first; equal scores keep row order. */
    public List<Scored> search(float[] queryEmbedding, int k, String owner) {
        List<Memory> rows = owner != null ? query(COLS + " WHERE owner = ?", rs -> row(rs, true), owner) : query(COLS, rs -> row(rs, true));
        if (rows.isEmpty() || k <= 0) return new ArrayList<>();
        float[] q = normalize(queryEmbedding);
        List<Scored> scored = new ArrayList<>();
        for (Memory m : rows) {
            scored.add(new Scored(new Memory(m.id, m.owner, m.text, m.createdAt, m.updatedAt, m.sourceTurns, null),
                    cosine(m.embedding, q)));
        }
        scored.sort(Comparator.comparingDouble((Scored s) -> -s.score)); // List.sort is stable
        return new ArrayList<>(scored.subList(0, Math.min(k, scored.size())));
    }

    // ------------------------------------------------------------------------------------------------ images

    /** Keeps a shared image (PNG bytes) with the text it was shared with and that text's embedding; its row id. */
    public long addImage(byte[] png, String context, float[] embedding, String owner, String turnId, String sharedAt) {
        if (!isPng(png)) throw new IllegalArgumentException("addImage takes PNG bytes");
        float[] v = normalize(embedding);
        try {
            checkDim(v.length);
            try (PreparedStatement ps = conn.prepareStatement(
                    "INSERT INTO images (owner, turn_id, shared_at, context, png, embedding) VALUES (?, ?, ?, ?, ?, ?)",
                    java.sql.Statement.RETURN_GENERATED_KEYS)) {
                ps.setString(1, owner);
                ps.setString(2, turnId);
                ps.setString(3, sharedAt != null ? sharedAt : MemoryFormat.now());
                ps.setString(4, context);
                ps.setBytes(5, png);
                ps.setBytes(6, toBlob(v));
                ps.executeUpdate();
                try (ResultSet rs = ps.getGeneratedKeys()) {
                    rs.next();
                    return rs.getLong(1);
                }
            }
        } catch (SQLException e) {
            throw error(e);
        }
    }

    /** Starts with the PNG signature. */
    public static boolean isPng(byte[] b) {
        return b != null && b.length >= PNG_MAGIC.length && java.util.Arrays.equals(java.util.Arrays.copyOf(b, PNG_MAGIC.length), PNG_MAGIC);
    }

    public int imageCount(String owner) {
        return owner != null ? query("SELECT COUNT(*) FROM images WHERE owner = ?", rs -> rs.getInt(1), owner).get(0)
                : query("SELECT COUNT(*) FROM images", rs -> rs.getInt(1)).get(0);
    }

    /** The k images whose sharing text is most similar to the query (cosine), best first. */
    public List<StoredImage> searchImages(float[] queryEmbedding, int k, String owner) {
        String sql = "SELECT id, embedding FROM images" + (owner != null ? " WHERE owner = ?" : "");
        List<Object[]> rows = owner != null ? query(sql, rs -> new Object[] {rs.getLong(1), fromBlob(rs.getBytes(2))}, owner)
                : query(sql, rs -> new Object[] {rs.getLong(1), fromBlob(rs.getBytes(2))});
        if (rows.isEmpty() || k <= 0) return new ArrayList<>();
        float[] q = normalize(queryEmbedding);
        List<double[]> scored = new ArrayList<>(); // {index, score}
        for (int r = 0; r < rows.size(); r++) {
            scored.add(new double[] {r, cosine((float[]) rows.get(r)[1], q)});
        }
        scored.sort(Comparator.comparingDouble((double[] x) -> -x[1])); // stable: ties in row order
        List<StoredImage> out = new ArrayList<>();
        for (double[] x : scored.subList(0, Math.min(k, scored.size()))) {
            long id = (Long) rows.get((int) x[0])[0];
            out.add(query("SELECT id, owner, turn_id, shared_at, context, png FROM images WHERE id = ?",
                    rs -> new StoredImage(rs.getLong(1), rs.getString(2), rs.getString(3), rs.getString(4), rs.getString(5),
                            rs.getBytes(6), x[1]), id).get(0));
        }
        return out;
    }

    // ------------------------------------------------------------------------------------------------ turns

    /**
     * Keeps conversation turns ("Speaker: text") with their embeddings in one transaction, as store.add_turns; their
     * row ids. A turn already kept for the owner (same turn id and text) is not kept twice: its row id is returned.
     */
    public List<Long> addTurns(List<String> texts, float[][] embeddings, String owner, List<String> turnIds, String saidAt) {
        if (embeddings.length != texts.size() || (turnIds != null && turnIds.size() != texts.size())) {
            throw new IllegalArgumentException("addTurns: " + texts.size() + " texts, " + embeddings.length + " embeddings, "
                    + (turnIds == null ? texts.size() : turnIds.size()) + " turn ids");
        }
        List<Long> out = new ArrayList<>();
        String at = saidAt != null ? saidAt : MemoryFormat.now();
        try {
            float[][] vecs = new float[embeddings.length][];
            for (int i = 0; i < vecs.length; i++) {
                vecs[i] = normalize(embeddings[i]);
                checkDim(vecs[i].length);
            }
            transaction(() -> {
                for (int i = 0; i < texts.size(); i++) {
                    String tid = turnIds == null ? null : turnIds.get(i);
                    if (tid != null) {
                        List<Long> old = query("SELECT id FROM turns WHERE owner IS ? AND turn_id IS ? AND text = ?",
                                rs -> rs.getLong(1), owner, tid, texts.get(i));
                        if (!old.isEmpty()) {
                            out.add(old.get(0));
                            continue;
                        }
                    }
                    try (PreparedStatement ps = conn.prepareStatement(
                            "INSERT INTO turns (owner, turn_id, said_at, text, embedding) VALUES (?, ?, ?, ?, ?)",
                            java.sql.Statement.RETURN_GENERATED_KEYS)) {
                        ps.setString(1, owner);
                        ps.setString(2, tid);
                        ps.setString(3, at);
                        ps.setString(4, texts.get(i));
                        ps.setBytes(5, toBlob(vecs[i]));
                        ps.executeUpdate();
                        try (ResultSet rs = ps.getGeneratedKeys()) {
                            rs.next();
                            out.add(rs.getLong(1));
                        }
                    }
                }
            });
        } catch (SQLException e) {
            throw error(e);
        }
        return out;
    }

    public int turnCount(String owner) {
        return owner != null ? query("SELECT COUNT(*) FROM turns WHERE owner = ?", rs -> rs.getInt(1), owner).get(0)
                : query("SELECT COUNT(*) FROM turns", rs -> rs.getInt(1)).get(0);
    }

    /** The k kept turns most similar to the query (cosine), best first; equal scores keep row order. */
    public List<StoredTurn> searchTurns(float[] queryEmbedding, int k, String owner) {
        return searchTurns(queryEmbedding, k, owner, null);
    }

    /**
     * As store.search_turns: with {@code queryText}, the k best by reciprocal rank fusion of the cosine ranking and BM25
     * over the turns' words ({@link Lexical}; the score is then the fused one); without, by cosine.
     */
    public List<StoredTurn> searchTurns(float[] queryEmbedding, int k, String owner, String queryText) {
        String sql = "SELECT id, owner, turn_id, said_at, text, embedding FROM turns" + (owner != null ? " WHERE owner = ?" : "");
        List<Object[]> rows = owner != null ? query(sql, MemoryStore::turnRow, owner) : query(sql, MemoryStore::turnRow);
        if (rows.isEmpty() || k <= 0) return new ArrayList<>();
        float[] q = normalize(queryEmbedding);
        List<StoredTurn> scored = new ArrayList<>();
        double[] cos = new double[rows.size()];
        List<String> texts = new ArrayList<>();
        for (int i = 0; i < rows.size(); i++) {
            StoredTurn t = (StoredTurn) rows.get(i)[0];
            cos[i] = cosine((float[]) rows.get(i)[1], q);
            texts.add(t.text);
            scored.add(new StoredTurn(t.id, t.owner, t.turnId, t.saidAt, t.text, cos[i]));
        }
        if (queryText != null) {
            List<StoredTurn> out = new ArrayList<>();
            for (double[] h : Lexical.fuse(cos, Lexical.bm25(queryText, texts), k)) {
                StoredTurn t = scored.get((int) h[0]);
                out.add(new StoredTurn(t.id, t.owner, t.turnId, t.saidAt, t.text, h[1]));
            }
            return out;
        }
        scored.sort(Comparator.comparingDouble((StoredTurn t) -> -t.score)); // stable: ties in row order
        return new ArrayList<>(scored.subList(0, Math.min(k, scored.size())));
    }

    private static Object[] turnRow(ResultSet rs) throws SQLException {
        return new Object[] {new StoredTurn(rs.getLong(1), rs.getString(2), rs.getString(3), rs.getString(4), rs.getString(5), 0),
                fromBlob(rs.getBytes(6))};
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
        Set<String> textSet = new TreeSet<>(Text.CODE_POINT_ORDER);
        for (UpdateEvent e : events)
            if ((e.event.equals("ADD") || e.event.equals("UPDATE")) && e.text != null && !e.text.isEmpty()) textSet.add(e.text);
        List<String> texts = new ArrayList<>(textSet);
        Update u = new Update(idMap, owner, sourceTurns == null ? Collections.emptyList() : sourceTurns, now != null ? now : MemoryFormat.now(), batch);
        try {
            if (!texts.isEmpty()) {
                float[][] emb = embedFn.embed(texts);
                if (emb.length != texts.size()) throw new IllegalArgumentException("embed_fn returned " + emb.length + " rows for " + texts.size() + " texts");
                checkDim(emb[0].length);
                for (int i = 0; i < texts.size(); i++) u.vectors.put(texts.get(i), toBlob(normalize(emb[i])));
            }
            transaction(() -> {
                for (UpdateEvent e : events) u.apply(e);
            });
            return u.res;
        } catch (SQLException e) {
            throw error(e);
        }
    }

    /** One applyUpdate: what its events share (computed once, not per event) and the rules of one event. */
    private final class Update {
        final Map<String, Long> idMap;
        final String owner, now, batch, turnsJson, shownIds;
        final List<String> turns;
        final Map<String, byte[]> vectors = new HashMap<>();
        final ApplyResult res = new ApplyResult();

        Update(Map<String, Long> idMap, String owner, List<String> turns, String now, String batch) {
            this.idMap = idMap;
            this.owner = owner;
            this.turns = turns;
            this.now = now;
            this.batch = batch;
            this.turnsJson = jsonList(turns);
            Set<String> sorted = new TreeSet<>(Text.CODE_POINT_ORDER);
            sorted.addAll(idMap.keySet());
            List<String> shown = new ArrayList<>();
            for (String id : sorted) shown.add("'" + id + "'");
            this.shownIds = shown.toString(); // Python's repr of sorted(id_map): ['0', '1']
        }

        void apply(UpdateEvent e) throws SQLException {
            String ev = e.event, text = e.text == null ? "" : e.text;
            if (ev.equals("ADD")) {
                List<Long> dup = query("SELECT id FROM memories WHERE text = ? AND owner IS ?", rs -> rs.getLong(1), text, owner);
                if (!dup.isEmpty()) {
                    skip(e, "ADD of a text already stored (memory " + dup.get(0) + ")");
                    return;
                }
                exec("INSERT INTO memories (owner, text, created_at, updated_at, source_turns, embedding) VALUES (?, ?, ?, ?, ?, ?)",
                        owner, text, now, now, turnsJson, vectors.get(text));
                long id = query("SELECT last_insert_rowid()", rs -> rs.getLong(1)).get(0);
                history(id, "ADD", null, text);
                res.added.add(id);
                return;
            }
            Long real = idMap.get(e.id);
            if (ev.equals("NONE")) {
                res.unchanged++;
                return;
            }
            if (real == null) {
                skip(e, ev + " of unknown id '" + e.id + "' (shown ids: " + shownIds + ")");
                return;
            }
            List<String[]> old = query("SELECT text, source_turns FROM memories WHERE id = ?", rs -> new String[] {rs.getString(1), rs.getString(2)}, real);
            if (old.isEmpty()) {
                skip(e, ev + " of memory " + real + ", which is not stored (already deleted?)");
                return;
            }
            String oldText = old.get(0)[0];
            if (ev.equals("UPDATE")) {
                if (text.equals(oldText)) {
                    res.unchanged++;
                    return;
                }
                List<String> merged = jsonStrings(old.get(0)[1]); // the turns it came from join the stored ones
                Set<String> seen = new HashSet<>(merged);
                for (String t : turns) if (!seen.contains(t)) merged.add(t);
                exec("UPDATE memories SET text = ?, updated_at = ?, source_turns = ?, embedding = ? WHERE id = ?",
                        text, now, jsonList(merged), vectors.get(text), real);
                history(real, "UPDATE", oldText, text);
                res.updated.add(real);
            } else if (ev.equals("DELETE")) {
                exec("DELETE FROM memories WHERE id = ?", real);
                history(real, "DELETE", oldText, null);
                res.deleted.add(real);
            }
        }

        private void history(long memoryId, String event, String oldText, String newText) throws SQLException {
            exec("INSERT INTO history (memory_id, owner, event, old_text, new_text, source_turns, at, batch) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    memoryId, owner, event, oldText, newText, turnsJson, now, batch);
        }

        private void skip(UpdateEvent e, String reason) {
            Map<String, Object> s = new LinkedHashMap<>();
            s.put("event", e.toMap());
            s.put("reason", reason);
            res.skipped.add(s);
        }
    }

    /** Adds memories directly (one transaction), e.g. to seed a store. */
    public ApplyResult add(List<String> texts, String owner, EmbedFn embedFn, List<String> sourceTurns, String now) {
        List<UpdateEvent> events = new ArrayList<>();
        for (String t : texts) events.add(new UpdateEvent("", t, "ADD", null));
        return applyUpdate(events, Collections.emptyMap(), owner, sourceTurns, embedFn, now, "direct");
    }

    /** A user's deletion: one transaction, recorded in the history; false when there is no such memory. */
    public boolean delete(long memoryId, String now) {
        Memory m = get(memoryId);
        if (m == null) return false;
        // The kept turns it came from go first (store.delete): a deleted memory is not shown again from its dialogue.
        if (!m.sourceTurns.isEmpty()) {
            StringBuilder marks = new StringBuilder();
            Object[] args = new Object[m.sourceTurns.size() + 1];
            args[0] = m.owner;
            for (int i = 0; i < m.sourceTurns.size(); i++) {
                marks.append(i == 0 ? "?" : ", ?");
                args[i + 1] = m.sourceTurns.get(i);
            }
            try {
                exec("DELETE FROM turns WHERE owner IS ? AND turn_id IN (" + marks + ")", args);
            } catch (SQLException e) {
                throw error(e);
            }
        }
        ApplyResult res = applyUpdate(Collections.singletonList(new UpdateEvent("u", "", "DELETE", null)),
                Collections.singletonMap("u", memoryId), m.owner, null, t -> new float[t.size()][1], now, "user");
        return !res.deleted.isEmpty();
    }
}
