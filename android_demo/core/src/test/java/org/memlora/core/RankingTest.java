package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.nio.file.Files;
import java.util.List;
import java.util.Map;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** Cosine retrieval over real all-MiniLM-L6-v2 embeddings ranks as store.search does in Python. */
public class RankingTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    @Test
    public void ranksLikePython() throws Exception {
        Map<String, Object> v = Vectors.obj(Vectors.load("ranking.json"));
        File db = new File(tmp.getRoot(), "ranking.sqlite");
        Files.copy(new File(Vectors.dir(), (String) v.get("db")).toPath(), db.toPath());
        int n = 0;
        try (MemoryStore store = new MemoryStore(db.getPath())) {
            for (Object o : Vectors.arr(v.get("cases"))) {
                Map<String, Object> c = Vectors.obj(o);
                String what = c.get("query") + " k=" + c.get("k") + " owner=" + c.get("owner");
                List<MemoryStore.Scored> got = store.search(Vectors.floats(c.get("embedding")), ((Long) c.get("k")).intValue(), (String) c.get("owner"));
                List<Object> ids = Vectors.arr(c.get("ids")), scores = Vectors.arr(c.get("scores"));
                assertEquals(what, ids.size(), got.size());
                for (int i = 0; i < ids.size(); i++) {
                    double want = ((Number) scores.get(i)).doubleValue();
                    assertEquals(what + " score " + i, want, got.get(i).score, 1e-5);
                    boolean tie = (i > 0 && Math.abs(want - ((Number) scores.get(i - 1)).doubleValue()) < 1e-6)
                            || (i + 1 < ids.size() && Math.abs(want - ((Number) scores.get(i + 1)).doubleValue()) < 1e-6);
                    if (!tie) assertEquals(what + " rank " + i, ((Long) ids.get(i)).longValue(), got.get(i).memory.id);
                }
                n++;
            }
        }
        assertTrue(n >= 20);
    }
}
