package org.memlora.core;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Parsing of the extract and update outputs, rule for rule as runtimes/memory/parse.py: tolerant of a code fence,
 * prose around the JSON, integer ids, lower-case events and stray whitespace; strict on shape (one bad item rejects
 * the whole update); bounded by the same limits (lengths in code points, as Python counts), so that no output costs
 * more than linear time or escapes as anything but {@link ParseError}. The shared test vectors hold the Python results
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

    /** Where strict decoding failed: {@code truncated} when at the end of the text (trailing whitespace aside) or in an
     *  unterminated string, parse.py's test for a cut-off output. */
    static final class Stop extends RuntimeException {
        final boolean truncated;

        Stop(boolean truncated) {
            super(null, null, false, false);
            this.truncated = truncated;
        }
    }

    /**
     * {@code json.JSONDecoder().raw_decode(s, at)} as CPython's scanner reads: strict JSON plus NaN / Infinity /
     * -Infinity, objects as LinkedHashMap (a repeated key keeps its first place and its last value), integers as Long
     * or BigInteger, other numbers as Double; a failure is a {@link Stop}. Callers bound the nesting first
     * ({@link #tooDeep}). org.json cannot stand in: it takes single quotes, bare words and hex numbers, turns long
     * integers into doubles, refuses NaN in objects and does not say where a value ended or why it stopped.
     */
    static final class Reader {
        private static final Pattern NUMBER = Pattern.compile("-?(?:0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?");
        private static final Pattern HEX4 = Pattern.compile("[0-9a-fA-F]{4}");
        private static final String[] WORDS = {"null", "true", "false", "NaN", "Infinity", "-Infinity"};
        private static final Object[] VALUES = {null, true, false, Double.NaN, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY};

        private final String s;
        private final int n;
        int end; // the index after the value just read

        Reader(String s) {
            this.s = s;
            this.n = s.length();
        }

        private Stop stop(int pos) {
            return new Stop(pos >= Text.rstrip(s).length());
        }

        private boolean at(int i, char c) {
            return i < n && s.charAt(i) == c;
        }

        private int ws(int i) {
            while (i < n && " \t\n\r".indexOf(s.charAt(i)) >= 0) i++;
            return i;
        }

        Object value(int at) {
            if (at(at, '"')) return string(at);
            if (at(at, '{') || at(at, '[')) return container(at);
            for (int w = 0; w < WORDS.length; w++) {
                if (s.startsWith(WORDS[w], at)) {
                    end = at + WORDS[w].length();
                    return VALUES[w];
                }
            }
            Matcher m = NUMBER.matcher(s).region(at, n);
            if (!m.lookingAt()) throw stop(at);
            end = m.end();
            String lit = m.group();
            if (m.group(1) != null || m.group(2) != null) return Double.valueOf(lit);
            if (lit.length() > MAX_INT_CHARS)
                throw new ParseError("JSON integer of " + lit.length() + " characters (at most " + MAX_INT_CHARS + ")");
            return lit.length() <= 18 ? (Object) Long.valueOf(lit) : new BigInteger(lit);
        }

        /** An object or an array from its opening bracket. */
        private Object container(int open) {
            boolean isObject = s.charAt(open) == '{';
            char close = isObject ? '}' : ']';
            Map<String, Object> object = new LinkedHashMap<>();
            List<Object> array = new ArrayList<>();
            int j = ws(open + 1);
            boolean more = !at(j, close);
            while (more) {
                if (isObject) {
                    if (!at(j, '"')) throw stop(j);
                    String key = string(j);
                    j = ws(end);
                    if (!at(j, ':')) throw stop(j);
                    object.put(key, value(ws(j + 1)));
                } else {
                    array.add(value(j));
                }
                j = ws(end);
                more = at(j, ',');
                if (!more && !at(j, close)) throw stop(j);
                if (more) j = ws(j + 1);
            }
            end = j + 1;
            return isObject ? object : array;
        }

        /** A string from its opening quote, escapes decoded (a \\uXXXX surrogate pair joined, as Python joins it). */
        private String string(int quote) {
            StringBuilder sb = new StringBuilder();
            for (int j = quote + 1; ; ) {
                int k = j;
                while (k < n && s.charAt(k) != '"' && s.charAt(k) != '\\') {
                    if (s.charAt(k) < 0x20) throw stop(k); // a raw control character
                    k++;
                }
                if (k >= n) throw new Stop(true);
                sb.append(s, j, k);
                if (s.charAt(k) == '"') {
                    end = k + 1;
                    return sb.toString();
                }
                if (++k >= n) throw new Stop(true);
                int simple = "\"\\/bfnrt".indexOf(s.charAt(k));
                if (simple >= 0) {
                    sb.append("\"\\/\b\f\n\r\t".charAt(simple));
                    j = k + 1;
                    continue;
                }
                if (s.charAt(k) != 'u') throw stop(k - 1);
                if (k + 5 >= n) throw stop(k);
                char u = hex4(k + 1);
                j = k + 5;
                if (Character.isHighSurrogate(u) && j + 6 < n && s.startsWith("\\u", j)) {
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
            if (!HEX4.matcher(s).region(at, at + 4).matches()) throw stop(at - 1);
            return (char) Integer.parseInt(s.substring(at, at + 4), 16);
        }
    }

    /** The first JSON object among the first MAX_CANDIDATES '{' of the fenced block, then of the whole output. */
    @SuppressWarnings("unchecked")
    static Map<String, Object> object(String text) {
        if (text == null) throw new ParseError("expected text, got NoneType");
        if (len(text) > MAX_OUTPUT_CHARS)
            throw new ParseError("output of " + len(text) + " characters (at most " + MAX_OUTPUT_CHARS + ")");
        Matcher fence = FENCE.matcher(text);
        List<String> bodies = new ArrayList<>();
        if (fence.find()) bodies.add(fence.group(1));
        bodies.add(text);
        boolean capped = false;
        for (String body : bodies) {
            int tried = 0;
            for (int i = body.indexOf('{'); i >= 0; i = body.indexOf('{', i + 1), tried++) {
                if (tried == MAX_CANDIDATES) {
                    capped = true;
                    break;
                }
                if (tooDeep(body, i)) throw new ParseError("JSON nested deeper than " + MAX_DEPTH + " levels");
                try {
                    return (Map<String, Object>) new Reader(body).value(i);
                } catch (Stop e) {
                    if (tried == 0 && e.truncated) throw new ParseError("truncated JSON"); // no later '{' is tried
                }
            }
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

    /** {@code s}, refused when longer than {@code max} code points. */
    private static String bounded(String what, String s, int max) {
        if (len(s) > max) throw new ParseError(what + " of " + len(s) + " characters (at most " + max + ")");
        return s;
    }

    private static List<?> list(Object v, String key, int max) {
        if (!(v instanceof List)) throw new ParseError("'" + key + "' is " + JsonTree.kind(v) + ", not a list");
        List<?> items = (List<?>) v;
        if (items.size() > max) throw new ParseError("'" + key + "' has " + items.size() + " items (at most " + max + ")");
        return items;
    }

    /** {@code {"facts": [str, ...]}} -> the facts, whitespace-normalised, empty and duplicate ones dropped. */
    public static List<String> parseExtract(String text) {
        Set<String> out = new LinkedHashSet<>();
        for (Object f : list(top(text, "facts"), "facts", MAX_FACTS)) {
            if (!(f instanceof String)) throw new ParseError("a fact is " + JsonTree.kind(f) + ", not a string");
            String fact = bounded("a fact", Text.collapse((String) f), MAX_TEXT_CHARS);
            if (!fact.isEmpty()) out.add(fact);
        }
        return new ArrayList<>(out);
    }

    /** {@code {"memory": [{"id", "text", "event", "old_memory"}, ...]}} -> the events. */
    public static List<UpdateEvent> parseUpdate(String text) {
        List<UpdateEvent> out = new ArrayList<>();
        for (Object it : list(top(text, "memory"), "memory", MAX_EVENTS)) {
            String where = "memory item " + out.size();
            if (!(it instanceof Map)) throw new ParseError(where + " is " + JsonTree.kind(it) + ", not an object");
            Map<?, ?> item = (Map<?, ?>) it;
            Object event = item.get("event");
            String ev = event instanceof String ? Text.strip((String) event).toUpperCase(Locale.ROOT) : null;
            if (!EVENTS.contains(ev)) throw new ParseError(where + ": event " + JsonTree.quote(event) + " is not one of " + EVENTS);
            Object id = item.get("id");
            if (!(id instanceof String || id instanceof Long || id instanceof BigInteger))
                throw new ParseError(where + ": id " + JsonTree.quote(id) + " is not a string");
            String cleanId = bounded(where + ": id", Text.strip(id.toString()), MAX_ID_CHARS);
            Object t = item.containsKey("text") ? item.get("text") : "";
            if (!(t instanceof String)) throw new ParseError(where + ": text is " + JsonTree.kind(t) + ", not a string");
            String txt = Text.collapse((String) t);
            if ((ev.equals("ADD") || ev.equals("UPDATE")) && txt.isEmpty()) throw new ParseError(where + ": " + ev + " without text");
            bounded(where + ": text", txt, MAX_TEXT_CHARS);
            Object old = item.get("old_memory");
            if (old != null && !(old instanceof String))
                throw new ParseError(where + ": old_memory is " + JsonTree.kind(old) + ", not a string");
            String oldClean = old != null && !Text.strip((String) old).isEmpty()
                    ? bounded(where + ": old_memory", Text.collapse((String) old), MAX_TEXT_CHARS) : null;
            out.add(new UpdateEvent(cleanId, txt, ev, oldClean));
        }
        return out;
    }
}
