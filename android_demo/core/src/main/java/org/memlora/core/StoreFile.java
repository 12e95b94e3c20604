package org.memlora.core;

import java.io.DataInputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.SQLException;
import java.util.Arrays;
import java.util.List;

/**
 * Whether a file may be opened as a memory store (runtimes/memory/store.py {@code _inspect}), judged before anything
 * writes to it: from its header bytes (SQLite? another application's stamp?), then by read-only queries (a stamped
 * memlora store, one from before the stamp, an empty file, or something else, refused naming what it holds).
 */
final class StoreFile {
    private StoreFile() {}

    static final List<String> MEMORY_COLUMNS = Arrays.asList("id", "owner", "text", "created_at", "updated_at", "source_turns", "embedding");
    static final List<String> HISTORY_COLUMNS = Arrays.asList("seq", "memory_id", "owner", "event", "old_text", "new_text", "source_turns", "at", "batch");

    /** The first 100 bytes of the file (SQLite's database header); null when the file is missing or empty. */
    static byte[] readHeader(String path) {
        File f = new File(path);
        if (!f.exists()) return null;
        try (DataInputStream in = new DataInputStream(new FileInputStream(f))) {
            byte[] header = new byte[(int) Math.min(100, f.length())];
            in.readFully(header);
            return header.length == 0 ? null : header;
        } catch (IOException e) {
            String why = f.isDirectory() ? "Is a directory" : e.getMessage();
            throw new MemoryStore.StoreError(path + ": cannot read the file (" + why + ")", e);
        }
    }

    private static final byte[] SQLITE_MAGIC = "SQLite format 3\u0000".getBytes(StandardCharsets.US_ASCII);

    static String notAStore(String path, String why) {
        return path + ": not a memlora memory store (" + why + ")";
    }

    static String otherApplication(long appId) {
        return String.format("SQLite application_id 0x%08x, a memlora store has 0x%08x", appId, MemoryStore.APPLICATION_ID);
    }

    /** Refuses, from the raw header alone, a file that is not SQLite or that another application stamped. */
    static void checkHeader(String path, byte[] header) {
        if (header.length < 100 || !Arrays.equals(Arrays.copyOf(header, SQLITE_MAGIC.length), SQLITE_MAGIC))
            throw new MemoryStore.StoreError(notAStore(path, "not an SQLite database file"));
        long appId = ByteBuffer.wrap(header, 68, 4).order(ByteOrder.BIG_ENDIAN).getInt() & 0xFFFFFFFFL;
        if (appId != 0 && appId != MemoryStore.APPLICATION_ID) throw new MemoryStore.StoreError(notAStore(path, otherApplication(appId)));
    }

    /** A read-only SQLite URI for the file: {@code immutable=1} (no locks, no side files) unless a -wal or -journal
     *  file is there, whose content a reader has to see. */
    static String readOnlyUri(String path) {
        boolean hot = new File(path + "-wal").exists() || new File(path + "-journal").exists();
        return new File(path).getAbsoluteFile().toURI().toString() + (hot ? "?mode=ro" : "?mode=ro&immutable=1");
    }

    private static long pragma(Connection c, String name) throws SQLException {
        List<Long> v = MemoryStore.select(c, "PRAGMA " + name, rs -> rs.getLong(1));
        return v.isEmpty() ? 0 : v.get(0);
    }

    private static List<String> columns(Connection c, String table) throws SQLException {
        return MemoryStore.select(c, "PRAGMA table_info(" + table + ")", rs -> rs.getString("name"));
    }

    /** store._inspect: "memlora", "legacy" or (emptyOk) "empty", by read-only queries; anything else a StoreError. */
    static String inspect(Connection c, String path, boolean emptyOk) throws SQLException {
        long appId = pragma(c, "application_id") & 0xFFFFFFFFL;
        long version = pragma(c, "user_version");
        if (appId == MemoryStore.APPLICATION_ID) {
            if (version != MemoryStore.SCHEMA_VERSION)
                throw new MemoryStore.StoreError(path + ": memory store schema " + version + " (this code reads " + MemoryStore.SCHEMA_VERSION + ")");
            return "memlora";
        }
        if (appId != 0) throw new MemoryStore.StoreError(notAStore(path, otherApplication(appId)));
        List<String> names = MemoryStore.select(c, "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
                rs -> rs.getString(1));
        if (names.isEmpty() && version == 0 && emptyOk) return "empty";
        if (columns(c, "memories").equals(MEMORY_COLUMNS) && columns(c, "history").equals(HISTORY_COLUMNS)
                && columns(c, "meta").equals(Arrays.asList("key", "value"))) {
            List<String> sv = MemoryStore.select(c, "SELECT value FROM meta WHERE key = 'schema_version'", rs -> rs.getString(1));
            if (!sv.isEmpty()) {
                if (!sv.get(0).equals(String.valueOf(MemoryStore.SCHEMA_VERSION)))
                    throw new MemoryStore.StoreError(path + ": memory store schema " + sv.get(0) + " (this code reads " + MemoryStore.SCHEMA_VERSION + ")");
                return "legacy";
            }
        }
        String shown = String.join(", ", names.subList(0, Math.min(5, names.size())))
                + (names.size() > 5 ? ", ... (" + names.size() + " in all)" : "");
        throw new MemoryStore.StoreError(notAStore(path, "an SQLite database without the memlora tables; it holds: " + (shown.isEmpty() ? "nothing" : shown)));
    }
}
