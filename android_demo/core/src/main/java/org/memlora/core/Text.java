package org.memlora.core;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * The text rules the memory format shares with runtimes/memory (what the model sees and what is stored must be the
 * same text on both sides): whitespace is the 29 code points Python's {@code str.split()} splits on (Java's
 * {@code Character.isWhitespace} differs: no NBSP, no U+0085), a text is normalised as {@code " ".join(s.split())},
 * lines end where {@code str.splitlines()} ends them, and strings sort by code point.
 */
public final class Text {
    private Text() {}

    /** A regex class of exactly the whitespace code points (Python's {@code \s} in str patterns). */
    public static final String SPACE_CLASS =
            "[\\x09-\\x0d\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

    public static boolean isSpace(int cp) {
        return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x85
                || cp == 0xa0 || cp == 0x1680 || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
    }

    /** Unicode White_Space (Rust's {@code char::is_whitespace}, what Hugging Face tokenizers strips and splits on):
     *  Python's whitespace but U+001C..U+001F. */
    public static boolean isWhiteSpace(int cp) {
        return isSpace(cp) && (cp < 0x1c || cp > 0x1f);
    }

    /** Whitespace runs become one space; leading and trailing whitespace goes. */
    public static String collapse(String s) {
        StringBuilder sb = new StringBuilder(s.length());
        boolean gap = false;
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            i += Character.charCount(cp);
            if (isSpace(cp)) gap = sb.length() > 0;
            else {
                if (gap) sb.append(' ');
                gap = false;
                sb.appendCodePoint(cp);
            }
        }
        return sb.toString();
    }

    public static String strip(String s) {
        int a = 0;
        while (a < s.length() && isSpace(s.codePointAt(a))) a += Character.charCount(s.codePointAt(a));
        return rstrip(s.substring(a));
    }

    public static String rstrip(String s) {
        int b = s.length();
        while (b > 0 && isSpace(s.codePointBefore(b))) b -= Character.charCount(s.codePointBefore(b));
        return s.substring(0, b);
    }

    /** Lines, ended by \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, U+2028 or U+2029. */
    public static List<String> lines(String s) {
        List<String> out = new ArrayList<>();
        int start = 0;
        for (int i = 0; i < s.length(); ) {
            char c = s.charAt(i);
            if (c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || (c >= 0x1c && c <= 0x1e) || c == 0x85 || c == 0x2028 || c == 0x2029) {
                out.add(s.substring(start, i));
                i += (c == '\r' && i + 1 < s.length() && s.charAt(i + 1) == '\n') ? 2 : 1;
                start = i;
            } else i++;
        }
        if (start < s.length()) out.add(s.substring(start));
        return out;
    }

    /** By code point (Java's {@code compareTo} orders by UTF-16 unit, which puts U+E000..U+FFFF after emoji). */
    public static final Comparator<String> CODE_POINT_ORDER = (x, y) -> {
        for (int i = 0, j = 0; i < x.length() && j < y.length(); ) {
            int a = x.codePointAt(i), b = y.codePointAt(j);
            if (a != b) return Integer.compare(a, b);
            i += Character.charCount(a);
            j += Character.charCount(b);
        }
        return Integer.compare(x.codePointCount(0, x.length()), y.codePointCount(0, y.length()));
    };
}
