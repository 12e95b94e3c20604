package org.memlora.core;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;

/**
 * The few Python string semantics the shared logic relies on, so the phone behaves exactly like runtimes/ does:
 * {@code str.isspace}, {@code str.split()}, {@code str.strip()}, {@code repr()}, {@code str()} and code-point ordering
 * (Python sorts strings by code point, Java's {@code compareTo} by UTF-16 unit).
 */
public final class Py {
    private Py() {}

    /** Python's {@code str.isspace()} for one code point (Unicode 14 table, as CPython 3.11). */
    public static boolean isSpace(int cp) {
        if (cp >= 0x09 && cp <= 0x0d) return true;
        if (cp >= 0x1c && cp <= 0x20) return true;
        if (cp >= 0x2000 && cp <= 0x200a) return true;
        switch (cp) {
            case 0x85: case 0xa0: case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
                return true;
            default:
                return false;
        }
    }

    /** A regex character class matching exactly the code points of {@link #isSpace} (Python's {@code \s}). */
    public static final String SPACE_CLASS =
            "[\\x09-\\x0d\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

    /** {@code s.split()}: runs of whitespace separate, leading/trailing whitespace ignored. */
    public static List<String> split(String s) {
        List<String> out = new ArrayList<>();
        int i = 0, n = s.length();
        while (i < n) {
            while (i < n && isSpace(s.codePointAt(i))) i += Character.charCount(s.codePointAt(i));
            int start = i;
            while (i < n && !isSpace(s.codePointAt(i))) i += Character.charCount(s.codePointAt(i));
            if (i > start) out.add(s.substring(start, i));
        }
        return out;
    }

    /** {@code " ".join(s.split())}. */
    public static String collapse(String s) {
        return String.join(" ", split(s));
    }

    /** {@code s.strip()}. */
    public static String strip(String s) {
        int a = 0, b = s.length();
        while (a < b && isSpace(s.codePointAt(a))) a += Character.charCount(s.codePointAt(a));
        while (b > a && isSpace(s.codePointBefore(b))) b -= Character.charCount(s.codePointBefore(b));
        return s.substring(a, b);
    }

    public static String lstrip(String s) {
        int a = 0;
        while (a < s.length() && isSpace(s.codePointAt(a))) a += Character.charCount(s.codePointAt(a));
        return s.substring(a);
    }

    public static String rstrip(String s) {
        int b = s.length();
        while (b > 0 && isSpace(s.codePointBefore(b))) b -= Character.charCount(s.codePointBefore(b));
        return s.substring(0, b);
    }

    /** {@code s.splitlines()}: \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029 end a line. */
    public static List<String> splitlines(String s) {
        List<String> out = new ArrayList<>();
        int start = 0, i = 0;
        while (i < s.length()) {
            char c = s.charAt(i);
            boolean nl = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || (c >= 0x1c && c <= 0x1e) || c == 0x85
                    || c == 0x2028 || c == 0x2029;
            if (nl) {
                out.add(s.substring(start, i));
                i += (c == '\r' && i + 1 < s.length() && s.charAt(i + 1) == '\n') ? 2 : 1;
                start = i;
            } else i++;
        }
        if (start < s.length()) out.add(s.substring(start));
        return out;
    }

    /** {@code s.strip(chars)}. */
    public static String strip(String s, String chars) {
        int a = 0, b = s.length();
        while (a < b && chars.indexOf(s.charAt(a)) >= 0) a++;
        while (b > a && chars.indexOf(s.charAt(b - 1)) >= 0) b--;
        return s.substring(a, b);
    }

    /** Python's string order (by code point). */
    public static final Comparator<String> CODE_POINT_ORDER = (x, y) -> {
        int i = 0, j = 0;
        while (i < x.length() && j < y.length()) {
            int a = x.codePointAt(i), b = y.codePointAt(j);
            if (a != b) return Integer.compare(a, b);
            i += Character.charCount(a);
            j += Character.charCount(b);
        }
        return Integer.compare(x.length() - i, y.length() - j);
    };

    /** Python's {@code str(x)} for the values JSON and templates produce. */
    public static String str(Object v) {
        if (v instanceof String) return (String) v;
        return repr(v);
    }

    /** Python's {@code repr(x)} for None, bool, int, float, str, list and dict. */
    public static String repr(Object v) {
        if (v == null) return "None";
        if (v instanceof Boolean) return ((Boolean) v) ? "True" : "False";
        if (v instanceof Long || v instanceof Integer || v instanceof BigInteger) return v.toString();
        if (v instanceof Double || v instanceof Float) return floatRepr(((Number) v).doubleValue());
        if (v instanceof String) return strRepr((String) v);
        if (v instanceof List) {
            StringBuilder sb = new StringBuilder("[");
            boolean first = true;
            for (Object o : (List<?>) v) {
                if (!first) sb.append(", ");
                sb.append(repr(o));
                first = false;
            }
            return sb.append(']').toString();
        }
        if (v instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (!first) sb.append(", ");
                sb.append(repr(e.getKey())).append(": ").append(repr(e.getValue()));
                first = false;
            }
            return sb.append('}').toString();
        }
        return String.valueOf(v);
    }

    /** Python's float repr: shortest round-trip digits, exponent form outside [1e-4, 1e16). */
    public static String floatRepr(double d) {
        if (Double.isNaN(d)) return "nan";
        if (Double.isInfinite(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0) return (1 / d < 0) ? "-0.0" : "0.0";
        java.math.BigDecimal bd = new java.math.BigDecimal(Double.toString(d)).stripTrailingZeros();
        String digits = bd.unscaledValue().abs().toString();
        int exp = digits.length() - 1 - bd.scale(); // decimal exponent of the first digit
        String sign = d < 0 ? "-" : "";
        if (exp < -4 || exp >= 16) {
            String mant = digits.length() > 1 ? digits.charAt(0) + "." + digits.substring(1) : digits;
            return sign + mant + "e" + (exp < 0 ? "-" : "+") + (Math.abs(exp) < 10 ? "0" : "") + Math.abs(exp);
        }
        if (exp >= digits.length() - 1) { // an integral value
            StringBuilder sb = new StringBuilder(digits);
            for (int i = digits.length() - 1; i < exp; i++) sb.append('0');
            return sign + sb + ".0";
        }
        if (exp >= 0) return sign + digits.substring(0, exp + 1) + "." + digits.substring(exp + 1);
        StringBuilder sb = new StringBuilder("0.");
        for (int i = -1; i > exp; i--) sb.append('0');
        return sign + sb + digits;
    }

    /** Python's {@code str.isprintable()} for one code point. */
    static boolean isPrintable(int cp) {
        if (cp == ' ') return true;
        switch (Character.getType(cp)) {
            case Character.CONTROL: case Character.FORMAT: case Character.SURROGATE: case Character.PRIVATE_USE:
            case Character.UNASSIGNED: case Character.LINE_SEPARATOR: case Character.PARAGRAPH_SEPARATOR:
            case Character.SPACE_SEPARATOR:
                return false;
            default:
                return true;
        }
    }

    public static String strRepr(String s) {
        char quote = (s.indexOf('\'') >= 0 && s.indexOf('"') < 0) ? '"' : '\'';
        StringBuilder sb = new StringBuilder().append(quote);
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            i += Character.charCount(cp);
            if (cp == quote || cp == '\\') sb.append('\\').appendCodePoint(cp);
            else if (cp == '\t') sb.append("\\t");
            else if (cp == '\n') sb.append("\\n");
            else if (cp == '\r') sb.append("\\r");
            else if (cp < 0x20 || cp == 0x7f) sb.append(String.format("\\x%02x", cp));
            else if (cp < 0x7f || isPrintable(cp)) sb.appendCodePoint(cp);
            else if (cp <= 0xff) sb.append(String.format("\\x%02x", cp));
            else if (cp <= 0xffff) sb.append(String.format("\\u%04x", cp));
            else sb.append(String.format("\\U%08x", cp));
        }
        return sb.append(quote).toString();
    }
}
