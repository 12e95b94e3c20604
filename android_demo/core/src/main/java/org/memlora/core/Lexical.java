package org.memlora.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;

/**
 * BM25 over the kept turns and reciprocal rank fusion with cosine ranks, as runtimes/memory/lexical.py: tokens are runs
 * of ASCII letters and digits, lower-cased, of 3 characters or more (the same on both sides to the bit).
 */
public final class Lexical {
    public static final double K1 = 1.2, B = 0.75;
    public static final int RRF_K = 60;

    private Lexical() {}

    public static List<String> tokens(String text) {
        List<String> out = new ArrayList<>();
        StringBuilder cur = new StringBuilder();
        for (int i = 0; i <= text.length(); i++) {
            char c = i < text.length() ? text.charAt(i) : ' ';
            if (c >= 'A' && c <= 'Z') c = (char) (c + ('a' - 'A'));
            if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
                cur.append(c);
            } else {
                if (cur.length() >= 3) out.add(cur.toString());
                cur.setLength(0);
            }
        }
        return out;
    }

    /** BM25 (k1 1.2, b 0.75, idf log(1 + (N - df + 0.5) / (df + 0.5))) of each doc for the query's tokens. */
    public static double[] bm25(String query, List<String> docs) {
        int n = docs.size();
        double[] out = new double[n];
        if (n == 0) return out;
        List<List<String>> toks = new ArrayList<>();
        Map<String, Integer> df = new HashMap<>();
        long total = 0;
        for (String d : docs) {
            List<String> t = tokens(d);
            toks.add(t);
            total += t.size();
            for (String w : new HashSet<>(t)) df.merge(w, 1, Integer::sum);
        }
        double avg = (double) total / n;
        if (avg == 0) avg = 1.0;
        List<String> q = tokens(query);
        for (int i = 0; i < n; i++) {
            Map<String, Integer> tf = new HashMap<>();
            for (String w : toks.get(i)) tf.merge(w, 1, Integer::sum);
            double s = 0.0;
            for (String w : q) {
                Integer f = tf.get(w);
                if (f != null) {
                    int d = df.get(w);
                    double idf = Math.log(1.0 + (n - d + 0.5) / (d + 0.5));
                    s += idf * f * (K1 + 1.0) / (f + K1 * (1.0 - B + B * toks.get(i).size() / avg));
                }
            }
            out[i] = s;
        }
        return out;
    }

    /** {index, fused score} of the k best by reciprocal rank fusion, best first; ties in index order. */
    public static List<double[]> fuse(double[] cosine, double[] lexical, int k) {
        int n = cosine.length;
        List<double[]> out = new ArrayList<>();
        if (n == 0 || k <= 0) return out;
        double[] rc = ranks(cosine), rl = ranks(lexical);
        for (int i = 0; i < n; i++) out.add(new double[] {i, 1.0 / (RRF_K + rc[i]) + 1.0 / (RRF_K + rl[i])});
        out.sort((a, b) -> Double.compare(b[1], a[1])); // stable: ties in index order
        return new ArrayList<>(out.subList(0, Math.min(k, n)));
    }

    /** 1-based rank of each score, highest first, equal scores in index order. */
    private static double[] ranks(double[] scores) {
        List<Integer> idx = new ArrayList<>();
        for (int i = 0; i < scores.length; i++) idx.add(i);
        Collections.sort(idx, (a, b) -> Double.compare(scores[b], scores[a]));
        double[] r = new double[scores.length];
        for (int p = 0; p < idx.size(); p++) r[idx.get(p)] = p + 1;
        return r;
    }
}
