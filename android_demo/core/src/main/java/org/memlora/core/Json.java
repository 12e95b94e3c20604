package org.memlora.core;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * JSON exactly as Python's {@code json} module reads and writes it, so that model outputs are accepted or refused by
 * the same rules on the phone as in runtimes/memory/parse.py (which relies on {@code raw_decode} and on the error
 * positions), and so that text the store writes ({@code json.dumps}) is byte-identical.
 *
 * <p>Values: object = {@code LinkedHashMap<String,Object>} (a repeated key keeps its first position, last value),
 * array = {@code ArrayList<Object>}, string = {@code String}, integer = {@code Long} (or {@code BigInteger} beyond
 * 64 bits), real = {@code Double}, true/false = {@code Boolean}, null = {@code null}. Like Python it accepts
 * {@code NaN}, {@code Infinity} and {@code -Infinity}. Error messages and positions are CPython's (C scanner).
 *
 * <p>Nesting: CPython's scanner recurses and stops with a RecursionError near its recursion limit (about 1000
 * levels); this one stops with a {@link DecodeError} ("maximum nesting depth exceeded") beyond {@link #MAX_NESTING}
 * levels, before a thread's stack could overflow. Model outputs never get that far: OpParser refuses more than
 * {@code OpParser.MAX_DEPTH} levels before decoding.
 */
public final class Json {
    private Json() {}

    /** Arrays / objects nested deeper than this are a DecodeError (a StackOverflowError otherwise). */
    public static final int MAX_NESTING = 512;

    /** An integer literal longer than the limit given to {@link #rawDecode(String, int, int)} (runtimes.memory.parse
     *  refuses those through json's parse_int hook, at the same point of the scan). */
    public static final class IntTooLong extends IllegalArgumentException {
        public final int length;

        IntTooLong(int length) {
            super("JSON integer of " + length + " characters");
            this.length = length;
        }
    }

    /** Python's {@code JSONDecodeError}: {@code msg} and {@code pos} (a UTF-16 index into the document). */
    public static final class DecodeError extends IllegalArgumentException {
        public final String msg;
        public final int pos;

        DecodeError(String msg, String doc, int pos) {
            super(errmsg(msg, doc, pos));
            this.msg = msg;
            this.pos = pos;
        }
    }

    /** Python's message: '%s: line %d column %d (char %d)' (positions counted in code points, as Python does). */
    static String errmsg(String msg, String doc, int pos) {
        int p = Math.min(pos, doc.length());
        int line = 1;
        for (int i = 0; i < p; i++) if (doc.charAt(i) == '\n') line++;
        int nl = doc.lastIndexOf('\n', p - 1);
        int col = doc.codePointCount(nl + 1, p) + 1;
        return msg + ": line " + line + " column " + col + " (char " + (doc.codePointCount(0, p) + (pos - p)) + ")";
    }

    /** Result of {@link #rawDecode}: the value and the index just after it. */
    public static final class Decoded {
        public final Object value;
        public final int end;

        Decoded(Object value, int end) {
            this.value = value;
            this.end = end;
        }
    }

    /** {@code json.loads(s)}. */
    public static Object parse(String s) {
        int idx = skipWs(s, 0);
        Decoded d = rawDecode(s, idx);
        int end = skipWs(s, d.end);
        if (end != s.length()) throw new DecodeError("Extra data", s, end);
        return d.value;
    }

    /** {@code json.JSONDecoder().raw_decode(s, idx)}. */
    public static Decoded rawDecode(String s, int idx) {
        return new Scanner(s, 0).scan(idx);
    }

    /** {@link #rawDecode(String, int)} that throws {@link IntTooLong} on an integer literal longer than
     *  {@code maxIntChars} characters (0: no limit), as {@code json.JSONDecoder(parse_int=...)} with a hook that
     *  raises. */
    public static Decoded rawDecode(String s, int idx, int maxIntChars) {
        return new Scanner(s, maxIntChars).scan(idx);
    }

    private static boolean isWs(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
    }

    private static int skipWs(String s, int i) {
        while (i < s.length() && isWs(s.charAt(i))) i++;
        return i;
    }

    private static final class Scanner {
        final String s;
        final int maxIntChars;
        int depth = 0;

        Scanner(String s, int maxIntChars) {
            this.s = s;
            this.maxIntChars = maxIntChars;
        }

        void enter(int pos) {
            if (++depth > MAX_NESTING) throw err("maximum nesting depth exceeded", pos);
        }

        char at(int i) {
            return i < s.length() ? s.charAt(i) : '\0';
        }

        boolean has(int i) {
            return i < s.length();
        }

        DecodeError err(String msg, int pos) {
            return new DecodeError(msg, s, pos);
        }

        Decoded scan(int idx) {
            if (!has(idx)) throw err("Expecting value", idx);
            char c = s.charAt(idx);
            if (c == '"') return string(idx + 1);
            if (c == '{') {
                enter(idx);
                Decoded d = object(idx + 1);
                depth--;
                return d;
            }
            if (c == '[') {
                enter(idx);
                Decoded d = array(idx + 1);
                depth--;
                return d;
            }
            if (c == 'n' && s.startsWith("null", idx)) return new Decoded(null, idx + 4);
            if (c == 't' && s.startsWith("true", idx)) return new Decoded(Boolean.TRUE, idx + 4);
            if (c == 'f' && s.startsWith("false", idx)) return new Decoded(Boolean.FALSE, idx + 5);
            Decoded num = number(idx);
            if (num != null) return num;
            if (c == 'N' && s.startsWith("NaN", idx)) return new Decoded(Double.NaN, idx + 3);
            if (c == 'I' && s.startsWith("Infinity", idx)) return new Decoded(Double.POSITIVE_INFINITY, idx + 8);
            if (c == '-' && s.startsWith("-Infinity", idx)) return new Decoded(Double.NEGATIVE_INFINITY, idx + 9);
            throw err("Expecting value", idx);
        }

        static boolean digit(char c) {
            return c >= '0' && c <= '9';
        }

        /** NUMBER_RE = (-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)? ; null when it does not match. */
        Decoded number(int idx) {
            int i = idx;
            if (at(i) == '-') i++;
            if (at(i) == '0') i++;
            else if (digit(at(i)) && has(i)) {
                while (has(i) && digit(at(i))) i++;
            } else return null;
            int intEnd = i;
            boolean real = false;
            if (at(i) == '.' && has(i + 1) && digit(at(i + 1))) {
                i += 1;
                while (has(i) && digit(at(i))) i++;
                real = true;
            }
            if ((at(i) == 'e' || at(i) == 'E') && has(i)) {
                int j = i + 1;
                if (at(j) == '+' || at(j) == '-') j++;
                if (has(j) && digit(at(j))) {
                    while (has(j) && digit(at(j))) j++;
                    i = j;
                    real = true;
                }
            }
            String text = s.substring(idx, real ? i : intEnd);
            if (real) return new Decoded(Double.parseDouble(text), i);
            if (maxIntChars > 0 && text.length() > maxIntChars) throw new IntTooLong(text.length());
            BigInteger big = new BigInteger(text);
            Object v = big.bitLength() < 64 ? (Object) big.longValue() : big;
            return new Decoded(v, intEnd);
        }

        Decoded string(int end) {
            int begin = end - 1;
            StringBuilder sb = new StringBuilder();
            while (true) {
                int i = end;
                while (has(i)) {
                    char c = s.charAt(i);
                    if (c == '"' || c == '\\' || c < 0x20) break;
                    i++;
                }
                if (!has(i)) throw err("Unterminated string starting at", begin);
                sb.append(s, end, i);
                char term = s.charAt(i);
                end = i + 1;
                if (term == '"') break;
                if (term != '\\') throw err("Invalid control character at", i);
                if (!has(end)) throw err("Unterminated string starting at", begin);
                char esc = s.charAt(end);
                if (esc != 'u') {
                    char ch;
                    switch (esc) {
                        case '"': ch = '"'; break;
                        case '\\': ch = '\\'; break;
                        case '/': ch = '/'; break;
                        case 'b': ch = '\b'; break;
                        case 'f': ch = '\f'; break;
                        case 'n': ch = '\n'; break;
                        case 'r': ch = '\r'; break;
                        case 't': ch = '\t'; break;
                        default: throw err("Invalid \\escape", end - 1);
                    }
                    sb.append(ch);
                    end += 1;
                } else {
                    int uni = hex4(end + 1, end);
                    end += 5;
                    if (uni >= 0xd800 && uni <= 0xdbff && s.startsWith("\\u", end)) {
                        int uni2 = hex4(end + 2, end + 1);
                        if (uni2 >= 0xdc00 && uni2 <= 0xdfff) {
                            sb.append((char) uni).append((char) uni2);
                            end += 6;
                            continue;
                        }
                    }
                    sb.append((char) uni);
                }
            }
            return new Decoded(sb.toString(), end);
        }

        int hex4(int i, int errPos) {
            if (i + 4 > s.length()) throw err("Invalid \\uXXXX escape", errPos);
            int v = 0;
            for (int k = i; k < i + 4; k++) {
                int d = Character.digit(s.charAt(k), 16);
                if (d < 0 || s.charAt(k) > 'f') throw err("Invalid \\uXXXX escape", errPos);
                v = v * 16 + d;
            }
            return v;
        }

        Decoded object(int end) {
            Map<String, Object> pairs = new LinkedHashMap<>();
            char next = at(end);
            if (next != '"' || !has(end)) {
                end = skipWs(s, end);
                next = at(end);
                if (next == '}' && has(end)) return new Decoded(pairs, end + 1);
                if (next != '"' || !has(end)) throw err("Expecting property name enclosed in double quotes", end);
            }
            end += 1;
            while (true) {
                Decoded key = string(end);
                end = key.end;
                if (at(end) != ':' || !has(end)) {
                    end = skipWs(s, end);
                    if (at(end) != ':' || !has(end)) throw err("Expecting ':' delimiter", end);
                }
                end += 1;
                end = skipWs(s, end);
                Decoded val = scanValue(end);
                pairs.put((String) key.value, val.value);
                end = skipWs(s, val.end);
                char c = has(end) ? s.charAt(end) : '\0';
                boolean eof = !has(end);
                end += 1;
                if (!eof && c == '}') break;
                if (eof || c != ',') throw err("Expecting ',' delimiter", end - 1);
                end = skipWs(s, end);
                boolean quote = has(end) && s.charAt(end) == '"';
                end += 1;
                if (!quote) throw err("Expecting property name enclosed in double quotes", end - 1);
            }
            return new Decoded(pairs, end);
        }

        Decoded scanValue(int idx) {
            return scan(idx);
        }

        Decoded array(int end) {
            List<Object> values = new ArrayList<>();
            end = skipWs(s, end);
            if (has(end) && s.charAt(end) == ']') return new Decoded(values, end + 1);
            while (true) {
                Decoded v = scanValue(end);
                values.add(v.value);
                end = skipWs(s, v.end);
                boolean eof = !has(end);
                char c = eof ? '\0' : s.charAt(end);
                end += 1;
                if (!eof && c == ']') break;
                if (eof || c != ',') throw err("Expecting ',' delimiter", end - 1);
                end = skipWs(s, end);
            }
            return new Decoded(values, end);
        }
    }

    // ------------------------------------------------------------------------------------------------ encoding

    /** {@code json.dumps(v)} (separators ", " and ": ", ensure_ascii). */
    public static String dumps(Object v) {
        return dumps(v, -1, false, true);
    }

    /** {@code json.dumps(v, indent=indent, sort_keys=sortKeys, ensure_ascii=ensureAscii)}; indent < 0 = None. */
    public static String dumps(Object v, int indent, boolean sortKeys, boolean ensureAscii) {
        StringBuilder sb = new StringBuilder();
        write(sb, v, indent, sortKeys, ensureAscii, 0);
        return sb.toString();
    }

    private static void newline(StringBuilder sb, int indent, int level) {
        sb.append('\n');
        for (int i = 0; i < indent * level; i++) sb.append(' ');
    }

    private static void write(StringBuilder sb, Object v, int indent, boolean sortKeys, boolean ascii, int level) {
        if (v == null) sb.append("null");
        else if (v instanceof Boolean) sb.append(((Boolean) v) ? "true" : "false");
        else if (v instanceof String) quote(sb, (String) v, ascii);
        else if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            if (Double.isNaN(d)) sb.append("NaN");
            else if (Double.isInfinite(d)) sb.append(d > 0 ? "Infinity" : "-Infinity");
            else sb.append(Py.floatRepr(d));
        } else if (v instanceof Number) sb.append(v.toString());
        else if (v instanceof Map) {
            Map<?, ?> m = (Map<?, ?>) v;
            if (m.isEmpty()) {
                sb.append("{}");
                return;
            }
            Map<?, ?> items = m;
            if (sortKeys) {
                TreeMap<String, Object> t = new TreeMap<>(Py.CODE_POINT_ORDER);
                for (Map.Entry<?, ?> e : m.entrySet()) t.put(String.valueOf(e.getKey()), e.getValue());
                items = t;
            }
            sb.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : items.entrySet()) {
                if (!first) sb.append(indent >= 0 ? "," : ", ");
                if (indent >= 0) newline(sb, indent, level + 1);
                quote(sb, String.valueOf(e.getKey()), ascii);
                sb.append(": ");
                write(sb, e.getValue(), indent, sortKeys, ascii, level + 1);
                first = false;
            }
            if (indent >= 0) newline(sb, indent, level);
            sb.append('}');
        } else if (v instanceof List || v instanceof Object[] || v instanceof float[] || v instanceof long[]
                || v instanceof double[] || v instanceof int[]) {
            List<Object> list = asList(v);
            if (list.isEmpty()) {
                sb.append("[]");
                return;
            }
            sb.append('[');
            boolean first = true;
            for (Object o : list) {
                if (!first) sb.append(indent >= 0 ? "," : ", ");
                if (indent >= 0) newline(sb, indent, level + 1);
                write(sb, o, indent, sortKeys, ascii, level + 1);
                first = false;
            }
            if (indent >= 0) newline(sb, indent, level);
            sb.append(']');
        } else throw new IllegalArgumentException("Object of type " + v.getClass().getSimpleName() + " is not JSON serializable");
    }

    private static List<Object> asList(Object v) {
        List<Object> out = new ArrayList<>();
        if (v instanceof List) out.addAll((List<?>) v);
        else if (v instanceof Object[]) for (Object o : (Object[]) v) out.add(o);
        else if (v instanceof float[]) for (float f : (float[]) v) out.add((double) f);
        else if (v instanceof double[]) for (double f : (double[]) v) out.add(f);
        else if (v instanceof long[]) for (long f : (long[]) v) out.add(f);
        else if (v instanceof int[]) for (int f : (int[]) v) out.add((long) f);
        return out;
    }

    static void quote(StringBuilder sb, String s, boolean ascii) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                case '\b': sb.append("\\b"); break;
                case '\f': sb.append("\\f"); break;
                default:
                    if (c < 0x20 || (ascii && c > 0x7e)) sb.append(String.format("\\u%04x", (int) c));
                    else sb.append(c);
            }
        }
        sb.append('"');
    }

    // ------------------------------------------------------------------------------------------------ access helpers

    @SuppressWarnings("unchecked")
    public static Map<String, Object> obj(Object v, String what) {
        if (!(v instanceof Map)) throw new IllegalArgumentException(what + " is not a JSON object");
        return (Map<String, Object>) v;
    }

    @SuppressWarnings("unchecked")
    public static List<Object> arr(Object v, String what) {
        if (!(v instanceof List)) throw new IllegalArgumentException(what + " is not a JSON array");
        return (List<Object>) v;
    }
}
