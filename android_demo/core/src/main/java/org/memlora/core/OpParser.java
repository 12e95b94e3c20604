package org.memlora.core;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Parsing of the extract and update outputs, rule for rule as runtimes/memory/parse.py: tolerant of a code fence,
 * prose around the JSON, integer ids, lower-case events and stray whitespace; strict on shape (one bad item rejects
 * the whole update); bounded by the same limits (lengths in code points, as Python counts), so that no output costs
 * more than linear time or escapes as anything but {@link ParseError}. The JSON is read by {@link Reader}, strict as
 * Python's json module is (org.json would take unquoted words, single quotes, hex numbers): which output is accepted,
 * and where a cut-off one is called truncated, decides what is stored. The shared test vectors hold the Python results
 * (accepted or refused, and the parsed facts and events) that this class must reproduce.
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
            Pattern.compile("```(?:json|JSON)?" + Text.SPACE_CLASS + "*\\n?(.*?)(?:```|$)", Pattern.DOTALL | Pattern.UNIX_LINES);

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

    /** Where strict decoding stopped: the index the decoder reports and whether it was inside an unterminated string. */
    static final class Stop extends RuntimeException {
        final int pos;
        final boolean unterminated;

        Stop(int pos, boolean unterminated) {
            super(null, null, false, false);
            this.pos = pos;
            this.unterminated = unterminated;
        }
    }

    /** An integer literal longer than MAX_INT_CHARS (parse.py refuses those through json's parse_int hook). */
    static final class IntTooLong extends RuntimeException {
        final int length;

        IntTooLong(int length) {
            super(null, null, false, false);
            this.length = length;
        }
    }

    /**
     * {@code json.JSONDecoder().raw_decode(s, at)} as CPython's scanner reads: strict JSON plus NaN / Infinity /
     * -Infinity, objects as LinkedHashMap (a repeated key keeps its first place and its last value), integers as Long
     * or BigInteger, other numbers as Double; a failure is a {@link Stop} at the index the scanner reports. Callers
     * bound the nesting first ({@link #tooDeep}).
     */
    static final class Reader {
        final String s;
        final int n;
        int end; // the index after the value just read

        Reader(String s) {
            this.s = s;
            this.n = s.length();
        }

        private int ws(int i) {
            while (i < n && (s.charAt(i) == ' ' || s.charAt(i) == '\t' || s.charAt(i) == '\n' || s.charAt(i) == '\r')) i++;
            return i;
        }

        private static boolean digit(char c) {
            return c >= '0' && c <= '9';
        }

        Object value(int at) {
            if (at >= n) throw new Stop(at, false);
            switch (s.charAt(at)) {
                case '"': return string(at + 1);
                case '{': return object(at + 1);
                case '[': return array(at + 1);
                default:
            }
            String[] words = {"null", "true", "false", "NaN", "Infinity", "-Infinity"};
            Object[] values = {null, Boolean.TRUE, Boolean.FALSE, Double.NaN, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY};
            for (int w = 0; w < words.length; w++) {
                if (s.startsWith(words[w], at)) {
                    end = at + words[w].length();
                    return values[w];
                }
            }
            int j = at;
            if (s.charAt(j) == '-' && ++j >= n) throw new Stop(at, false);
            if (s.charAt(j) >= '1' && s.charAt(j) <= '9') while (++j < n && digit(s.charAt(j))) { /* integer digits */ }
            else if (s.charAt(j) == '0') j++;
            else throw new Stop(at, false);
            boolean real = false;
            if (j < n - 1 && s.charAt(j) == '.' && digit(s.charAt(j + 1))) {
                real = true;
                for (j += 2; j < n && digit(s.charAt(j)); ) j++;
            }
            if (j < n - 1 && (s.charAt(j) == 'e' || s.charAt(j) == 'E')) {
                int e = j++;
                if (j < n - 1 && (s.charAt(j) == '-' || s.charAt(j) == '+')) j++;
                while (j < n && digit(s.charAt(j))) j++;
                if (digit(s.charAt(j - 1))) real = true;
                else j = e;
            }
            end = j;
            String lit = s.substring(at, j);
            if (real) return Double.parseDouble(lit);
            if (lit.length() > MAX_INT_CHARS) throw new IntTooLong(lit.length());
            return lit.length() <= 18 ? (Object) Long.parseLong(lit) : new BigInteger(lit);
        }

        private String string(int start) {
            StringBuilder sb = new StringBuilder();
            for (int j = start; ; ) {
                int k = j;
                while (k < n && s.charAt(k) != '"' && s.charAt(k) != '\\') {
                    if (s.charAt(k) < 0x20) throw new Stop(k, false); // a raw control character
                    k++;
                }
                if (k >= n) throw new Stop(start - 1, true);
                sb.append(s, j, k);
                if (s.charAt(k) == '"') {
                    end = k + 1;
                    return sb.toString();
                }
                if (++k >= n) throw new Stop(start - 1, true);
                char c = s.charAt(k);
                if (c != 'u') {
                    int at = "\"\\/bfnrt".indexOf(c);
                    if (at < 0) throw new Stop(k - 1, false);
                    sb.append("\"\\/\b\f\n\r\t".charAt(at));
                    j = k + 1;
                    continue;
                }
                if (k + 5 >= n) throw new Stop(k, false);
                char u = hex4(k + 1);
                j = k + 5;
                if (Character.isHighSurrogate(u) && j + 6 < n && s.charAt(j) == '\\' && s.charAt(j + 1) == 'u') {
                    char low = hex4(j + 2);
                    if (Character.isLowSurrogate(low)) {
                        sb.append(u);
                        u = low;
                        j += 6;
                    }
                }
                sb.append(u);
            }
        }

        private char hex4(int at) {
            int v = 0;
            for (int i = at; i < at + 4; i++) {
                int d = Character.digit(s.charAt(i), 16);
                if (d < 0 || s.charAt(i) > 'f') throw new Stop(at - 1, false);
                v = v * 16 + d;
            }
            return (char) v;
        }

        private Map<String, Object> object(int start) {
            Map<String, Object> m = new LinkedHashMap<>();
            int j = ws(start);
            if (j < n && s.charAt(j) == '}') {
                end = j + 1;
                return m;
            }
            while (true) {
                if (j >= n || s.charAt(j) != '"') throw new Stop(j, false);
                String key = string(j + 1);
                j = ws(end);
                if (j >= n || s.charAt(j) != ':') throw new Stop(j, false);
                m.put(key, value(ws(j + 1)));
                j = ws(end);
                if (j < n && s.charAt(j) == '}') {
                    end = j + 1;
                    return m;
                }
                if (j >= n || s.charAt(j) != ',') throw new Stop(j, false);
                j = ws(j + 1);
            }
        }

        private List<Object> array(int start) {
            List<Object> l = new ArrayList<>();
            int j = ws(start);
            if (j < n && s.charAt(j) == ']') {
                end = j + 1;
                return l;
            }
            while (true) {
                l.add(value(j));
                j = ws(end);
                if (j < n && s.charAt(j) == ']') {
                    end = j + 1;
                    return l;
                }
                if (j >= n || s.charAt(j) != ',') throw new Stop(j, false);
                j = ws(j + 1);
            }
        }
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
        int rlen = Text.rstrip(body).length();
        int tried = 0;
        for (int i = body.indexOf('{'); i >= 0; i = body.indexOf('{', i + 1)) {
            if (tried == MAX_CANDIDATES) return new Found(null, true);
            tried++;
            if (tooDeep(body, i)) throw new ParseError("JSON nested deeper than " + MAX_DEPTH + " levels");
            try {
                @SuppressWarnings("unchecked")
                Map<String, Object> value = (Map<String, Object>) new Reader(body).value(i);
                return new Found(value, false);
            } catch (IntTooLong e) {
                throw new ParseError("JSON integer of " + e.length + " characters (at most " + MAX_INT_CHARS + ")");
            } catch (Stop e) {
                if (first && (e.pos >= rlen || e.unterminated)) throw new ParseError("truncated JSON");
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
            keys.sort(Text.CODE_POINT_ORDER);
            throw new ParseError("JSON object has no '" + key + "' key (keys: " + keys.subList(0, Math.min(5, keys.size())) + ")");
        }
        return value.get(key);
    }

    /** A decoded JSON value's type, for messages. */
    static String typeName(Object v) {
        if (v == null) return "null";
        if (v instanceof String) return "string";
        if (v instanceof Boolean) return "boolean";
        if (v instanceof List) return "list";
        if (v instanceof Map) return "object";
        return "number";
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
            String c = Text.collapse((String) f);
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
            if (!(event instanceof String) || !EVENTS.contains(upper(Text.strip((String) event))))
                throw new ParseError("memory item " + n + ": event " + quote(event) + " is not one of " + EVENTS);
            String ev = upper(Text.strip((String) event));
            Object mid = item.get("id");
            if (mid instanceof Boolean || !(mid instanceof String || mid instanceof Long || mid instanceof BigInteger))
                throw new ParseError("memory item " + n + ": id " + quote(mid) + " is not a string");
            String id = Text.strip(mid.toString());
            if (len(id) > MAX_ID_CHARS)
                throw new ParseError("memory item " + n + ": id of " + len(id) + " characters (at most " + MAX_ID_CHARS + ")");
            Object t = item.containsKey("text") ? item.get("text") : "";
            if (!(t instanceof String)) throw new ParseError("memory item " + n + ": text is a " + typeName(t) + ", not a string");
            String txt = Text.collapse((String) t);
            if ((ev.equals("ADD") || ev.equals("UPDATE")) && txt.isEmpty())
                throw new ParseError("memory item " + n + ": " + ev + " without text");
            if (len(txt) > MAX_TEXT_CHARS)
                throw new ParseError("memory item " + n + ": text of " + len(txt) + " characters (at most " + MAX_TEXT_CHARS + ")");
            Object old = item.get("old_memory");
            if (old != null && !(old instanceof String))
                throw new ParseError("memory item " + n + ": old_memory is a " + typeName(old) + ", not a string");
            String oldClean = (old instanceof String && !Text.strip((String) old).isEmpty()) ? Text.collapse((String) old) : null;
            if (oldClean != null && len(oldClean) > MAX_TEXT_CHARS)
                throw new ParseError("memory item " + n + ": old_memory of " + len(oldClean) + " characters (at most " + MAX_TEXT_CHARS + ")");
            out.add(new UpdateEvent(id, txt, ev, oldClean));
            n++;
        }
        return out;
    }

    /** A value in a message: strings JSON-quoted (one line whatever they hold). */
    static String quote(Object v) {
        return v instanceof String ? org.json.JSONObject.quote((String) v) : String.valueOf(v);
    }

    /** Python's {@code str.upper()} (full Unicode case mapping, locale independent). */
    static String upper(String s) {
        return s.toUpperCase(java.util.Locale.ROOT);
    }
}
