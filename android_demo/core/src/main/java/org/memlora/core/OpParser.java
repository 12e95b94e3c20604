package org.memlora.core;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Parsing of the extract and update outputs, rule for rule as runtimes/memory/parse.py: tolerant of a code fence,
 * prose around the JSON, integer ids, lower-case events and stray whitespace; strict on shape (one bad item rejects
 * the whole update). The shared test vectors hold the Python results this class must reproduce.
 */
public final class OpParser {
    private OpParser() {}

    public static final List<String> EVENTS = Arrays.asList("ADD", "UPDATE", "DELETE", "NONE");
    // Python: re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.S); \s is Python's Unicode whitespace and
    // $ matches at the end or before a final "\n" only (UNIX_LINES).
    private static final Pattern FENCE =
            Pattern.compile("```(?:json|JSON)?" + Py.SPACE_CLASS + "*\\n?(.*?)(?:```|$)", Pattern.DOTALL | Pattern.UNIX_LINES);

    /** The first JSON object in {@code body} that decodes; ParseError("truncated JSON") when the first candidate is cut off. */
    static Map<String, Object> firstObject(String body) {
        boolean first = true;
        int rlen = Py.rstrip(body).length();
        for (int i = 0; i < body.length(); i++) {
            if (body.charAt(i) != '{') continue;
            try {
                return Json.obj(Json.rawDecode(body, i).value, "value");
            } catch (Json.DecodeError e) {
                if (first && (e.pos >= rlen || e.msg.startsWith("Unterminated string"))) throw new ParseError("truncated JSON");
            }
            first = false;
        }
        return null;
    }

    static Map<String, Object> object(String text) {
        if (text == null) throw new ParseError("expected text, got NoneType");
        Matcher m = FENCE.matcher(text);
        List<String> bodies = new ArrayList<>();
        if (m.find()) bodies.add(m.group(1));
        bodies.add(text);
        for (String body : bodies) {
            Map<String, Object> v = firstObject(body);
            if (v != null) return v;
        }
        throw new ParseError("no JSON object in the output");
    }

    static Object top(String text, String key) {
        Map<String, Object> value = object(text);
        if (!value.containsKey(key)) {
            List<String> keys = new ArrayList<>(value.keySet());
            keys.sort(Py.CODE_POINT_ORDER);
            throw new ParseError("JSON object has no " + Py.repr(key) + " key (keys: "
                    + Py.repr(keys.subList(0, Math.min(5, keys.size()))) + ")");
        }
        return value.get(key);
    }

    /** Python's type name for a decoded JSON value. */
    static String typeName(Object v) {
        if (v == null) return "NoneType";
        if (v instanceof String) return "str";
        if (v instanceof Boolean) return "bool";
        if (v instanceof Long || v instanceof BigInteger) return "int";
        if (v instanceof Double) return "float";
        if (v instanceof List) return "list";
        if (v instanceof Map) return "dict";
        return v.getClass().getSimpleName();
    }

    /** {@code {"facts": [str, ...]}} -> the facts, whitespace-normalised, empty and duplicate ones dropped. */
    public static List<String> parseExtract(String text) {
        Object facts = top(text, "facts");
        if (!(facts instanceof List)) throw new ParseError("'facts' is a " + typeName(facts) + ", not a list");
        List<String> out = new ArrayList<>();
        for (Object f : (List<?>) facts) {
            if (!(f instanceof String)) throw new ParseError("a fact is a " + typeName(f) + ", not a string");
            String c = Py.collapse((String) f);
            if (!c.isEmpty() && !out.contains(c)) out.add(c);
        }
        return out;
    }

    /** {@code {"memory": [{"id", "text", "event", "old_memory"}, ...]}} -> the events. */
    public static List<UpdateEvent> parseUpdate(String text) {
        Object items = top(text, "memory");
        if (!(items instanceof List)) throw new ParseError("'memory' is a " + typeName(items) + ", not a list");
        List<UpdateEvent> out = new ArrayList<>();
        int n = 0;
        for (Object it : (List<?>) items) {
            if (!(it instanceof Map)) throw new ParseError("memory item " + n + " is a " + typeName(it) + ", not an object");
            Map<?, ?> item = (Map<?, ?>) it;
            Object event = item.get("event");
            if (!(event instanceof String) || !EVENTS.contains(upper(Py.strip((String) event))))
                throw new ParseError("memory item " + n + ": event " + Py.repr(event) + " is not one of " + Py.repr(EVENTS));
            String ev = upper(Py.strip((String) event));
            Object mid = item.get("id");
            if (mid instanceof Boolean || !(mid instanceof String || mid instanceof Long || mid instanceof BigInteger))
                throw new ParseError("memory item " + n + ": id " + Py.repr(mid) + " is not a string");
            Object t = item.containsKey("text") ? item.get("text") : "";
            if (!(t instanceof String)) throw new ParseError("memory item " + n + ": text is a " + typeName(t) + ", not a string");
            String txt = Py.collapse((String) t);
            if ((ev.equals("ADD") || ev.equals("UPDATE")) && txt.isEmpty())
                throw new ParseError("memory item " + n + ": " + ev + " without text");
            Object old = item.get("old_memory");
            if (old != null && !(old instanceof String))
                throw new ParseError("memory item " + n + ": old_memory is a " + typeName(old) + ", not a string");
            String oldClean = (old instanceof String && !Py.strip((String) old).isEmpty()) ? Py.collapse((String) old) : null;
            out.add(new UpdateEvent(Py.strip(Py.str(mid)), txt, ev, oldClean));
            n++;
        }
        return out;
    }

    /** Python's {@code str.upper()} (full Unicode case mapping, locale independent). */
    static String upper(String s) {
        return s.toUpperCase(java.util.Locale.ROOT);
    }
}
