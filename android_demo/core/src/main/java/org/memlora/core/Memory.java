package org.memlora.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

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
}
