package org.memlora.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The versioned prompt templates of runtimes/prompts.py. A bundle's manifest names the template id per op; the texts
 * live here because the phone has no Python. The JVM tests assert that this table is identical to the Python one
 * (the shared test vectors dump it), so a template edited on one side only fails the build.
 */
public final class PromptTemplates {
    private PromptTemplates() {}

    public static final Map<String, String[]> TEMPLATES; // id -> {system, user}
    public static final Map<String, String> DEFAULT_TEMPLATE;

    static {
        Map<String, String[]> t = new LinkedHashMap<>();
        t.put("memlora.extract.v1", new String[] {
            "You extract lasting personal facts from a conversation. Reply only with JSON of the form "
                + "{\"facts\": [\"<fact>\", ...]}. Each fact is one short sentence naming the person. "
                + "If there is nothing worth remembering, reply {\"facts\": []}.",
            "Session date: {date}\nConversation:\n{turns}",
        });
        t.put("memlora.update.v1", new String[] {
            "You maintain a memory store. Compare the new facts with the stored memories and reply only with JSON "
                + "{\"memory\": [{\"id\": \"<id>\", \"text\": \"<text>\", \"event\": \"ADD|UPDATE|DELETE|NONE\", "
                + "\"old_memory\": \"<previous text, for UPDATE>\"}]}. Use the ids shown; new memories get new ids.",
            "Stored memories:\n{memories}\nNew facts:\n{facts}",
        });
        t.put("memlora.generate.v1", new String[] {
            "You answer questions about the user from their memories. Answer in a few words, no explanation.",
            "Memories:\n{memories}\nQuestion: {question}",
        });
        TEMPLATES = Collections.unmodifiableMap(t);
        Map<String, String> d = new LinkedHashMap<>();
        d.put("extract", "memlora.extract.v1");
        d.put("update", "memlora.update.v1");
        d.put("generate", "memlora.generate.v1");
        DEFAULT_TEMPLATE = Collections.unmodifiableMap(d);
    }

    public static String templateFor(String op) {
        String t = DEFAULT_TEMPLATE.get(op);
        return t != null ? t : "memlora.generate.v1";
    }

    /** The chat messages for a template (system + user); a missing field throws naming it, like Python's KeyError. */
    public static List<ChatMessage> render(String templateId, Map<String, String> fields) {
        String[] t = TEMPLATES.get(templateId);
        if (t == null) {
            List<String> known = new ArrayList<>(TEMPLATES.keySet());
            known.sort(Py.CODE_POINT_ORDER);
            throw new IllegalArgumentException("unknown prompt template " + Py.repr(templateId) + "; known: " + Py.repr(known));
        }
        return Arrays.asList(new ChatMessage("system", t[0]), new ChatMessage("user", format(t[1], fields)));
    }

    /** Python's {@code str.format(**fields)} for plain {name} fields and {{ / }} escapes. */
    static String format(String tpl, Map<String, String> fields) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < tpl.length(); i++) {
            char c = tpl.charAt(i);
            if (c == '{' && i + 1 < tpl.length() && tpl.charAt(i + 1) == '{') {
                sb.append('{');
                i++;
            } else if (c == '}' && i + 1 < tpl.length() && tpl.charAt(i + 1) == '}') {
                sb.append('}');
                i++;
            } else if (c == '{') {
                int end = tpl.indexOf('}', i);
                if (end < 0) throw new IllegalArgumentException("Single '{' encountered in format string");
                String name = tpl.substring(i + 1, end);
                if (!fields.containsKey(name)) throw new IllegalArgumentException("missing prompt field " + Py.repr(name));
                sb.append(fields.get(name));
                i = end;
            } else sb.append(c);
        }
        return sb.toString();
    }
}
