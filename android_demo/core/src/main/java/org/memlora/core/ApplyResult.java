package org.memlora.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** What one {@code applyUpdate} changed: row ids added / updated / deleted, NONE count, skipped events with reasons. */
public final class ApplyResult {
    public final List<Long> added = new ArrayList<>();
    public final List<Long> updated = new ArrayList<>();
    public final List<Long> deleted = new ArrayList<>();
    public int unchanged = 0;
    public final List<Map<String, Object>> skipped = new ArrayList<>(); // {"event": {...}, "reason": "..."}

    public int changed() {
        return added.size() + updated.size() + deleted.size();
    }

    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("added", new ArrayList<Object>(added));
        m.put("updated", new ArrayList<Object>(updated));
        m.put("deleted", new ArrayList<Object>(deleted));
        m.put("unchanged", (long) unchanged);
        m.put("skipped", new ArrayList<Object>(skipped));
        return m;
    }
}
