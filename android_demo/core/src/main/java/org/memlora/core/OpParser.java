package org.memlora.core;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Parsing of the extract and update outputs, rule for rule as runtimes/memory/parse.py: tolerant of a code fence,
 * prose around the JSON, integer ids, lower-case events and stray whitespace; strict on shape (one bad item rejects
 * the whole update); bounded by the same limits (lengths in code points, as Python counts), so that no output costs
 * more than linear time or escapes as anything but {@link ParseError}. The shared test vectors hold the Python
 * results this class must reproduce.
 */
public final class OpParser {
    private OpParser() {}

    /** parse.MAX_OUTPUT_CHARS: a longer output is refused unread. */
    public static final int MAX_OUTPUT_CHARS = 32_768;
    /** parse.MAX_DEPTH: arrays / objects nested deeper are refused (checked before decoding). */
    public static final int MAX_DEPTH = 32;
    /** parse.MAX_CANDIDATES: how many '{' of a body are tried as the start of the JSON. */
    public static final int MAX_CANDIDATES = 16;
    /** parse.MAX_INT_CHARS: a longer JSON integer literal is refused. */
    public static final int MAX_INT_CHARS = 64;
    /** parse.MAX_FACTS: facts per extract output. */
    public static final int MAX_FACTS = 64;
    /** parse.MAX_EVENTS: events per update output. */
    public static final int MAX_EVENTS = 64;
    /** parse.MAX_TEXT_CHARS: a fact, an event's text or old_memory, after whitespace normalisation. */
    public static final int MAX_TEXT_CHARS = 1_000;
    /** parse.MAX_ID_CHARS: an event's id. */
    public static final int MAX_ID_CHARS = 32;

    public static final List<String> EVENTS = Arrays.asList("ADD", "UPDATE", "DELETE", "NONE");
    // Python: re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.S); \s is Python's Unicode whitespace and
    // $ matches at the end or before a final "\n" only (UNIX_LINES).
    private static final Pattern FENCE =
            Pattern.compile("```(?:json|JSON)?" + Py.SPACE_CLASS + "*\\n?(.*?)(?:```|$)", Pattern.DOTALL | Pattern.UNIX_LINES);

    static int len(String s) {
        return s.codePointCount(0, s.length());
    }

    /** parse._too_deep: whether the JSON value starting at {@code body[start]} nests deeper than MAX_DEPTH before it
     *  closes, strings and brackets tracked as the decoder reads them. */
    static boolean tooDeep(String body, int start) {
        int depth = 0;
        boolean inString = false;
        for (int i = start; i < body.length(); i++) {
            char c = body.charAt(i);
            if (inString) {
                if (c == '\\') i++;
                else if (c == '"') inString = false;
            } else if (c == '"') {
                inString = true;
            } else if (c == '{' || c == '[') {
                if (++depth > MAX_DEPTH) return true;
            } else if (c == '}' || c == ']') {
                if (--depth <= 0) return false;
            }
        }
        return false;
    }

    /** Result of {@link #firstObject}: the object (null when none decodes) and whether '{' were left untried. */
    static final class Found {
        final Map<String, Object> value;
        final boolean capped;

        Found(Map<String, Object> value, boolean capped) {
            this.value = value;
            this.capped = capped;
        }
    }

    /** The first JSON object in {@code body} that decodes among its first MAX_CANDIDATES '{'; ParseError("truncated
     *  JSON") when the first candidate is cut off. */
    static Found firstObject(String body) {
        boolean first = true;
        int rlen = Py.rstrip(body).length();
        int tried = 0;
        for (int i = body.indexOf('{'); i >= 0; i = body.indexOf('{', i + 1)) {
            if (tried == MAX_CANDIDATES) return new Found(null, true);
            tried++;
            if (tooDeep(body, i)) throw new ParseError("JSON nested deeper than " + MAX_DEPTH + " levels");
            try {
                return new Found(Json.obj(Json.rawDecode(body, i, MAX_INT_CHARS).value, "value"), false);
            } catch (Json.IntTooLong e) {
                throw new ParseError("JSON integer of " + e.length + " characters (at most " + MAX_INT_CHARS + ")");
            } catch (Json.DecodeError e) {
                if (first && (e.pos >= rlen || e.msg.startsWith("Unterminated string"))) throw new ParseError("truncated JSON");
            }
            first = false;
        }
        return new Found(null, false);
    }

    static Map<String, Object> object(String text) {
        if (text == null) throw new ParseError("expected text, got NoneType");
        if (len(text) > MAX_OUTPUT_CHARS)
            throw new ParseError("output of " + len(text) + " characters (at most " + MAX_OUTPUT_CHARS + ")");
        Matcher m = FENCE.matcher(text);
        List<String> bodies = new ArrayList<>();
        if (m.find()) bodies.add(m.group(1));
        bodies.add(text);
        boolean capped = false;
        for (String body : bodies) {
            Found f = firstObject(body);
            if (f.value != null) return f.value;
            capped |= f.capped;
        }
        if (capped) throw new ParseError("no JSON object in the output (only the first " + MAX_CANDIDATES + " '{' are tried)");
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
        List<?> items = (List<?>) facts;
        if (items.size() > MAX_FACTS) throw new ParseError("'facts' has " + items.size() + " items (at most " + MAX_FACTS + ")");
        List<String> out = new ArrayList<>();
        HashSet<String> seen = new HashSet<>();
        for (Object f : items) {
            if (!(f instanceof String)) throw new ParseError("a fact is a " + typeName(f) + ", not a string");
            String c = Py.collapse((String) f);
            if (len(c) > MAX_TEXT_CHARS) throw new ParseError("a fact of " + len(c) + " characters (at most " + MAX_TEXT_CHARS + ")");
            if (!c.isEmpty() && seen.add(c)) out.add(c);
        }
        return out;
    }

    /** {@code {"memory": [{"id", "text", "event", "old_memory"}, ...]}} -> the events. */
    public static List<UpdateEvent> parseUpdate(String text) {
        Object items = top(text, "memory");
        if (!(items instanceof List)) throw new ParseError("'memory' is a " + typeName(items) + ", not a list");
        int size = ((List<?>) items).size();
        if (size > MAX_EVENTS) throw new ParseError("'memory' has " + size + " items (at most " + MAX_EVENTS + ")");
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
            String id = Py.strip(Py.str(mid));
            if (len(id) > MAX_ID_CHARS)
                throw new ParseError("memory item " + n + ": id of " + len(id) + " characters (at most " + MAX_ID_CHARS + ")");
            Object t = item.containsKey("text") ? item.get("text") : "";
            if (!(t instanceof String)) throw new ParseError("memory item " + n + ": text is a " + typeName(t) + ", not a string");
            String txt = Py.collapse((String) t);
            if ((ev.equals("ADD") || ev.equals("UPDATE")) && txt.isEmpty())
                throw new ParseError("memory item " + n + ": " + ev + " without text");
            if (len(txt) > MAX_TEXT_CHARS)
                throw new ParseError("memory item " + n + ": text of " + len(txt) + " characters (at most " + MAX_TEXT_CHARS + ")");
            Object old = item.get("old_memory");
            if (old != null && !(old instanceof String))
                throw new ParseError("memory item " + n + ": old_memory is a " + typeName(old) + ", not a string");
            String oldClean = (old instanceof String && !Py.strip((String) old).isEmpty()) ? Py.collapse((String) old) : null;
            if (oldClean != null && len(oldClean) > MAX_TEXT_CHARS)
                throw new ParseError("memory item " + n + ": old_memory of " + len(oldClean) + " characters (at most " + MAX_TEXT_CHARS + ")");
            out.add(new UpdateEvent(id, txt, ev, oldClean));
            n++;
        }
        return out;
    }

    /** Python's {@code str.upper()} (full Unicode case mapping, locale independent). */
    static String upper(String s) {
        return s.toUpperCase(java.util.Locale.ROOT);
    }
}
