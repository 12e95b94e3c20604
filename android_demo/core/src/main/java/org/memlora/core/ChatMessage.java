package org.memlora.core;

import java.util.LinkedHashMap;
import java.util.Map;

/** One chat message: role ("system" | "user" | "assistant") and content. */
public final class ChatMessage {
    public final String role;
    public final String content;

    public ChatMessage(String role, String content) {
        this.role = role;
        this.content = content;
    }

    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("role", role);
        m.put("content", content);
        return m;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof ChatMessage && ((ChatMessage) o).role.equals(role) && ((ChatMessage) o).content.equals(content);
    }

    @Override
    public int hashCode() {
        return role.hashCode() * 31 + content.hashCode();
    }

    @Override
    public String toString() {
        return toMap().toString();
    }
}
