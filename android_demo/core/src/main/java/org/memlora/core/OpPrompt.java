package org.memlora.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * An op's prompt as the bundle carries it (manifest {@code ops.<op>.prompt}, runtimes/chat.py OpPrompt): a system
 * text and a user text whose only braces are its {@code {field}} placeholders, filled by plain substitution.
 */
public final class OpPrompt {
    static final Pattern FIELD = Pattern.compile("\\{([a-z_][a-z0-9_]*)\\}");

    public final String id, system, user;
    public final List<String> fields;

    public OpPrompt(String id, String system, String user, List<String> fields) {
        String problem = problem(user, fields);
        if (problem != null) throw new IllegalArgumentException(problem);
        this.id = id;
        this.system = system;
        this.user = user;
        this.fields = Collections.unmodifiableList(new ArrayList<>(fields));
    }

    /** Why {@code user} does not fit {@code fields} (placeholders other than the fields, or other braces); null if it fits. */
    static String problem(String user, List<String> fields) {
        TreeSet<String> named = new TreeSet<>();
        Matcher m = FIELD.matcher(user);
        while (m.find()) named.add(m.group(1));
        String rest = FIELD.matcher(user).replaceAll("");
        if (rest.indexOf('{') < 0 && rest.indexOf('}') < 0 && named.equals(new TreeSet<>(fields))) return null;
        return "its {placeholders} " + named + " must be exactly the fields " + new TreeSet<>(fields) + ", with no other braces";
    }

    /** [system, user] with every {field} replaced by its value; a field without a value is an IllegalArgumentException. */
    public List<ChatMessage> messages(Map<String, String> values) {
        for (String f : fields)
            if (!values.containsKey(f)) throw new IllegalArgumentException("prompt " + id + " needs the field '" + f + "'");
        StringBuilder sb = new StringBuilder();
        Matcher m = FIELD.matcher(user);
        int at = 0;
        while (m.find()) {
            sb.append(user, at, m.start()).append(values.get(m.group(1)));
            at = m.end();
        }
        sb.append(user, at, user.length());
        return Arrays.asList(new ChatMessage("system", system), new ChatMessage("user", sb.toString()));
    }
}
