package org.memlora.core;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * How the bundle's model frames chat messages (manifest {@code tokenizer.chat_format}, runtimes/chat.py): per role the
 * text before and after a message, the generation prompt, the system text the model's template adds to a conversation
 * without one, and whether the tokenizer adds its special tokens. The exporter derived it from the model's chat
 * template and checked it against that template; a prompt is built here by concatenation alone.
 */
public final class ChatFormat {
    /** role -> {before, after}. */
    public final Map<String, String[]> roles;
    public final String generationPrompt;
    /** Inserted as a first system message when a conversation has none; null: nothing is inserted. */
    public final String defaultSystem;
    /** Whether the prompt is tokenized with the tokenizer's special tokens (plain models without a chat template). */
    public final boolean addSpecialTokens;

    public ChatFormat(Map<String, String[]> roles, String generationPrompt, String defaultSystem, boolean addSpecialTokens) {
        this.roles = Collections.unmodifiableMap(new LinkedHashMap<>(roles));
        this.generationPrompt = generationPrompt;
        this.defaultSystem = defaultSystem;
        this.addSpecialTokens = addSpecialTokens;
    }

    /** The prompt text: [default system,] each message framed by its role, then the generation prompt. */
    public String render(List<ChatMessage> messages) {
        StringBuilder sb = new StringBuilder();
        if (defaultSystem != null && (messages.isEmpty() || !"system".equals(messages.get(0).role))) frame(sb, "system", defaultSystem);
        for (ChatMessage m : messages) frame(sb, m.role, m.content);
        return sb.append(generationPrompt).toString();
    }

    private void frame(StringBuilder sb, String role, String content) {
        String[] ba = roles.get(role);
        if (ba == null) throw new BundleError("role '" + role + "' is not in this bundle's chat format (" + roles.keySet() + ")");
        sb.append(ba[0]).append(content).append(ba[1]);
    }
}
