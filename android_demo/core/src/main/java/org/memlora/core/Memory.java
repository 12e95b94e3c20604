package org.memlora.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** A stored memory row (the store's {@code memories} table). */
public final class Memory {
    public final long id;
    public final String owner;
    public final String text;
    public final String createdAt;
    public final String updatedAt;
    public final List<String> sourceTurns;
    public final float[] embedding; // null unless asked for

    public Memory(long id, String owner, String text, String createdAt, String updatedAt, List<String> sourceTurns,
                  float[] embedding) {
        this.id = id;
        this.owner = owner;
        this.text = text;
        this.createdAt = createdAt;
        this.updatedAt = updatedAt;
        this.sourceTurns = Collections.unmodifiableList(new ArrayList<>(sourceTurns));
        this.embedding = embedding;
    }

    /** A memory as the prompt formatter needs it (id, text, date), e.g. for a workload built elsewhere. */
    public static Memory of(long id, String text, String updatedAt) {
        return new Memory(id, null, text, updatedAt, updatedAt, Collections.<String>emptyList(), null);
    }

    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("owner", owner);
        m.put("text", text);
        m.put("created_at", createdAt);
        m.put("updated_at", updatedAt);
        m.put("source_turns", new ArrayList<Object>(sourceTurns));
        return m;
    }

    @Override
    public String toString() {
        return toMap().toString();
    }
}
