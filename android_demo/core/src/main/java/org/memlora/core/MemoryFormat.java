package org.memlora.core;

import java.time.DateTimeException;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.LocalTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeFormatterBuilder;
import java.time.format.ResolverStyle;
import java.time.format.TextStyle;
import java.time.temporal.ChronoField;
import java.time.temporal.TemporalAccessor;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * What the model sees, as runtimes/memory/prompts.py renders it: turns, facts and memories (temporary ids "0",
 * "1", ... mapped back by the returned id map) and the dates shown with memories, put into the bundle's op prompts.
 */
public final class MemoryFormat {
    private MemoryFormat() {}

    public static final String NO_MEMORIES = "(none)";

    /** Text plus the temporary-id -> row-id map of {@link #formatMemories}. */
    public static final class Formatted {
        public final String text;
        public final Map<String, Long> idMap;

        Formatted(String text, Map<String, Long> idMap) {
            this.text = text;
            this.idMap = idMap;
        }
    }

    /** Chat messages plus the id map (update prompt). */
    public static final class UpdatePrompt {
        public final List<ChatMessage> messages;
        public final Map<String, Long> idMap;

        UpdatePrompt(List<ChatMessage> messages, Map<String, Long> idMap) {
            this.messages = messages;
            this.idMap = idMap;
        }
    }

    // ------------------------------------------------------------------------------------------------ dates

    /** A parsed date: local date-time and, for ISO input that carried one, its UTC offset (else null). */
    public static final class Parsed {
        public final LocalDateTime dateTime;
        public final ZoneOffset offset;

        Parsed(LocalDateTime dateTime, ZoneOffset offset) {
            this.dateTime = dateTime;
            this.offset = offset;
        }
    }

    // runtimes/memory/prompts.py LOCOMO_DATE_FORMATS, read as strptime reads them: case-insensitive, impossible dates
    // (31 February) refused; a whitespace run where the format has a space (the text is collapsed first).
    private static final DateTimeFormatter[] LOCOMO = {
        locomo("h:m a 'on' d MMMM, uuuu"), locomo("h:m a 'on' d MMM, uuuu"), locomo("d MMMM uuuu"), locomo("d MMMM, uuuu"),
        locomo("uuuu-M-d"),
    };

    private static final Pattern STRPTIME_DIGITS = Pattern.compile("(?:[^0-9]|(?<![0-9])(?:[0-9]{1,2}|[0-9]{4})(?![0-9]))*");

    private static DateTimeFormatter locomo(String pattern) {
        return new DateTimeFormatterBuilder().parseCaseInsensitive().appendPattern(pattern).toFormatter(Locale.ENGLISH)
                .withResolverStyle(ResolverStyle.STRICT);
    }

    // Python 3.11 datetime.fromisoformat, for the forms dates take here: YYYY-MM-DD or YYYYMMDD, then optionally any
    // one separator character and HH[:MM[:SS[.ffffff]]] (or HHMM[SS]), then optionally Z or +-HH[:MM].
    private static final Pattern ISO = Pattern.compile(
            "([0-9]{4})-?([0-9]{2})-?([0-9]{2})(?:.([0-9]{2})(?::?([0-9]{2})(?::?([0-9]{2})(?:[.,]([0-9]{1,6}))?)?)?"
                    + "(Z|[+-][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2})?)?)?)?", Pattern.DOTALL);

    private static int num(String digits) {
        return digits == null ? 0 : Integer.parseInt(digits);
    }

    private static Parsed fromIso(String s) {
        Matcher m = ISO.matcher(s);
        // The date part must be consistently basic or extended.
        if (!m.matches() || (s.charAt(4) == '-') != (s.length() > 7 && s.charAt(7) == '-')) return null;
        int micros = m.group(7) == null ? 0 : Integer.parseInt((m.group(7) + "00000").substring(0, 6));
        try {
            LocalDateTime dt = LocalDateTime.of(num(m.group(1)), num(m.group(2)), num(m.group(3)), num(m.group(4)), num(m.group(5)),
                    num(m.group(6)), micros * 1000);
            return new Parsed(dt, m.group(8) == null ? null : ZoneOffset.of(m.group(8)));
        } catch (DateTimeException e) {
            return null;
        }
    }

    /** {@code parse_date}: a LoCoMo session date ("1:56 pm on 8 May, 2023") or an ISO string; null when unreadable. */
    public static Parsed parseDate(String value) {
        if (value == null) return null;
        String s = Text.strip(value);
        Parsed iso = fromIso(s);
        if (iso != null) return iso;
        // strptime reads %I %M %d as 1-2 digits and %Y as exactly 4; java.time's patterns take longer runs
        if (!STRPTIME_DIGITS.matcher(Text.collapse(s)).matches()) return null;
        for (DateTimeFormatter f : LOCOMO) {
            try {
                TemporalAccessor t = f.parse(Text.collapse(s));
                LocalTime time = t.isSupported(ChronoField.HOUR_OF_DAY) ? LocalTime.from(t) : LocalTime.MIDNIGHT;
                return new Parsed(LocalDate.from(t).atTime(time), null);
            } catch (DateTimeException e) {
                // not this format, or not a date: the next format is tried (Python's ValueError)
            }
        }
        return null;
    }

    /** {@code to_iso}: ISO 8601 to the second; an unreadable date is kept verbatim. */
    public static String toIso(String value) {
        Parsed p = parseDate(value);
        if (p == null) return value;
        return isoSeconds(p.dateTime, p.offset);
    }

    /** Python's {@code isoformat(timespec="seconds")}. */
    public static String isoSeconds(LocalDateTime dt, ZoneOffset offset) {
        String s = String.format(Locale.ROOT, "%04d-%02d-%02dT%02d:%02d:%02d", dt.getYear(), dt.getMonthValue(),
                dt.getDayOfMonth(), dt.getHour(), dt.getMinute(), dt.getSecond());
        if (offset == null) return s;
        int total = offset.getTotalSeconds();
        int a = Math.abs(total);
        String off = String.format(Locale.ROOT, "%s%02d:%02d", total < 0 ? "-" : "+", a / 3600, (a / 60) % 60);
        if (a % 60 != 0) off += String.format(Locale.ROOT, ":%02d", a % 60);
        return s + off;
    }

    /** The store's "now": local time to the second, as Python's {@code datetime.now().isoformat(timespec="seconds")}. */
    public static String now() {
        return isoSeconds(LocalDateTime.now(), null);
    }

    /** {@code display_date}: "8 May 2023"; null -> "unknown date"; unreadable -> verbatim. */
    public static String displayDate(String value) {
        if (value == null) return "unknown date";
        Parsed p = parseDate(value);
        if (p == null) return value;
        LocalDate d = p.dateTime.toLocalDate();
        return d.getDayOfMonth() + " " + d.getMonth().getDisplayName(TextStyle.FULL, Locale.ENGLISH) + " " + d.getYear();
    }

    // ------------------------------------------------------------------------------------------------ texts

    /** "Speaker: text" per turn; a shared photo is described by its caption. */
    public static String formatTurns(List<Turn> turns) {
        List<String> lines = new ArrayList<>();
        for (Turn t : turns) {
            String text = Text.collapse(t.text == null ? "" : t.text);
            if (t.blipCaption != null && !t.blipCaption.isEmpty()) text = Text.strip(text + " [shares a photo: " + t.blipCaption + "]");
            else if (t.sharedImage) text = Text.strip(text + " [shares a photo]"); // pixels kept (MemLoRA-V), no caption
            lines.add(t.speaker + ": " + text);
        }
        return String.join("\n", lines);
    }

    public static String formatFacts(List<String> facts) {
        if (facts.isEmpty()) return NO_MEMORIES;
        List<String> lines = new ArrayList<>();
        for (String f : facts) lines.add("- " + f);
        return String.join("\n", lines);
    }

    /** Without dates (update prompt) "0: text" lines; with dates (generate prompt) "[8 May 2023] text" lines. */
    public static Formatted formatMemories(List<Memory> memories, boolean withDates) {
        Map<String, Long> idMap = new LinkedHashMap<>();
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < memories.size(); i++) {
            Memory m = memories.get(i);
            idMap.put(String.valueOf(i), m.id);
            String text = Text.collapse(m.text == null ? "" : m.text);
            if (withDates) {
                // Python: `updated_at or created_at` (an empty created_at stays "", None means "unknown date").
                String date = (m.updatedAt != null && !m.updatedAt.isEmpty()) ? m.updatedAt : m.createdAt;
                lines.add("[" + displayDate(date) + "] " + text);
            } else lines.add(i + ": " + text);
        }
        return new Formatted(lines.isEmpty() ? NO_MEMORIES : String.join("\n", lines), idMap);
    }

    public static List<ChatMessage> extractMessages(List<Turn> turns, String date, OpPrompt prompt) {
        Map<String, String> f = new LinkedHashMap<>();
        f.put("date", String.valueOf(date));
        f.put("turns", formatTurns(turns));
        return prompt.messages(f);
    }

    public static UpdatePrompt updateMessages(List<String> facts, List<Memory> memories, OpPrompt prompt) {
        Formatted fm = formatMemories(memories, false);
        Map<String, String> f = new LinkedHashMap<>();
        f.put("memories", fm.text);
        f.put("facts", formatFacts(facts));
        return new UpdatePrompt(prompt.messages(f), fm.idMap);
    }

    public static List<ChatMessage> generateMessages(String question, List<Memory> memories, OpPrompt prompt) {
        Map<String, String> f = new LinkedHashMap<>();
        f.put("memories", formatMemories(memories, true).text);
        f.put("question", Text.strip(question));
        return prompt.messages(f);
    }
}
