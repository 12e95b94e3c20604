package org.memlora.core;

import java.util.LinkedHashMap;
import java.util.Map;

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
}
