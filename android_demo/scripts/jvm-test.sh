#!/usr/bin/env bash
# `./build.sh android-test`: compile the app's shared JVM module (android_demo/core) with javac and run its JUnit 4
# tests against the shared test vectors that the Python side writes (python -m tests.jvm_vectors) and the
# committed hostile bundle manifests (tests/data/hostile_manifests.json, also run by tests/test_manifest_closed_world.py).
# Needs a JDK (javac >= 11) and Debian's junit4, libhamcrest-java, libxerial-sqlite-jdbc-java and libandroid-json-java
# (AOSP's org.json, which Android itself ships); no Gradle, no SDK.
#   usage: android_demo/scripts/jvm-test.sh PYTHON
# Env: MEMLORA_VECTORS_BUNDLE=DIR records that exported bundle's manifest instead of the cached tiny export.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${1:?usage: jvm-test.sh PYTHON}"
OUT=build/android-core
JARS=(/usr/share/java/junit4.jar /usr/share/java/hamcrest-core.jar /usr/share/java/sqlite-jdbc.jar /usr/share/java/com.android.json.jar)
PKGS=(junit4 libhamcrest-java libxerial-sqlite-jdbc-java libandroid-json-java)

missing=()
for tool in javac java; do command -v "$tool" >/dev/null || missing+=("$tool (apt-get install -y openjdk-17-jdk-headless)"); done
for i in "${!JARS[@]}"; do [ -f "${JARS[$i]}" ] || missing+=("${JARS[$i]} (apt-get install -y ${PKGS[$i]})"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "android-test: missing:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi
CP=$(IFS=:; echo "${JARS[*]}")

echo "android-test: writing the shared test vectors (tests.jvm_vectors)" >&2
bundle_args=()
[ -n "${MEMLORA_VECTORS_BUNDLE:-}" ] && bundle_args=(--bundle "$MEMLORA_VECTORS_BUNDLE")
"$PY" -m tests.jvm_vectors "$OUT/vectors" "${bundle_args[@]}"

echo "android-test: compiling android_demo/core (javac --release 11)" >&2
rm -rf "$OUT/classes" "$OUT/test-classes"
mkdir -p "$OUT/classes" "$OUT/test-classes"
JFLAGS=(--release 11 -encoding UTF-8 -Xlint:all,-serial,-fallthrough)
javac "${JFLAGS[@]}" -cp "$CP" -d "$OUT/classes" $(find android_demo/core/src/main/java -name '*.java' | sort)
javac "${JFLAGS[@]}" -cp "$OUT/classes:$CP" -d "$OUT/test-classes" $(find android_demo/core/src/test/java -name '*.java' | sort)

tests=$(cd android_demo/core/src/test/java && find . -name '*Test.java' | sed 's|^\./||; s|\.java$||; s|/|.|g' | sort)
set +e
java -Dmemlora.vectors="$OUT/vectors" -Dmemlora.hostile=tests/data/hostile_manifests.json -cp "$OUT/classes:$OUT/test-classes:$CP" org.junit.runner.JUnitCore $tests | tee "$OUT/junit.log"
rc=${PIPESTATUS[0]}
set -e
run=$(sed -n 's/^OK (\([0-9]*\) tests)$/\1/p; s/^Tests run: \([0-9]*\),.*/\1/p' "$OUT/junit.log" | tail -1)
failed=$(sed -n 's/^Tests run: [0-9]*,  Failures: \([0-9]*\)$/\1/p' "$OUT/junit.log" | tail -1)
failed=${failed:-0}
echo "android-test: $(( ${run:-0} - failed )) passed, $failed failed"
exit "$rc"
