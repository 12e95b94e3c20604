package org.memlora.core;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/** One parsed update event: {@code id} (a temporary id shown to the model), {@code text}, {@code event} in
 *  ADD | UPDATE | DELETE | NONE, {@code oldMemory} (null when absent). */
public final class UpdateEvent {
    public final String id;
    public final String text;
    public final String event;
    public final String oldMemory;

    public UpdateEvent(String id, String text, String event, String oldMemory) {
        this.id = id;
        this.text = text;
        this.event = event;
        this.oldMemory = oldMemory;
    }

    /** The dict form Python uses ({"id", "text", "event", "old_memory"}). */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("text", text);
        m.put("event", event);
        m.put("old_memory", oldMemory);
        return m;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof UpdateEvent)) return false;
        UpdateEvent e = (UpdateEvent) o;
        return id.equals(e.id) && text.equals(e.text) && event.equals(e.event) && Objects.equals(oldMemory, e.oldMemory);
    }

    @Override
    public int hashCode() {
        return Objects.hash(id, text, event, oldMemory);
    }

    @Override
    public String toString() {
        return toMap().toString();
    }
}
