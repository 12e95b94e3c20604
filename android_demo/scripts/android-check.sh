#!/usr/bin/env bash
# `./build.sh android-check`: build the demo app as far as the registries reachable here allow (PyPI, npm, Debian),
# without the Android SDK, Gradle or Maven, and fail on anything the Gradle build would reject.
#   1. Tools, fetched once into $MEMLORA_ANDROID_TOOLS (default ~/.cache/memlora/android-tools), each download checked
#      against its sha256 in android-check.sha256; versions from android_demo/gradle/libs.versions.toml:
#      kotlinc (npm kotlin-compiler, the app's Kotlin version); ONNX Runtime's Android library (npm
#      com.github.asus4.onnxruntime: onnxruntime.aar); aapt2 and D8 (bundletool-all) and apksigner.jar from PyPI's
#      mobsf wheel; Debian's android-platform-frameworks-base source (core/api/current.txt) and android-framework-res
#      (framework-res.apk), through apt with a private sources list. Debian's aapt and zipalign, and the sqlite-jdbc
#      jar :core uses, are apt-installed when missing (as root; otherwise the command to run is printed).
#   2. Android API stubs: stubgen/stubgen.py turns current.txt into Java stubs (real signatures and constants, bodies
#      `throw new RuntimeException("Stub!")`), javac makes android-stubs.jar; cached by the inputs' checksums.
#   3. The app as AGP would build it: the merged manifest (android_check.py) and res/ compiled and linked by aapt2
#      against framework-res.apk, giving R.java; BuildConfig.java for the debug variant; :core compiled by javac;
#      every Kotlin file but Executorch.kt (ExecuTorch's Java API is in no reachable registry) compiled by kotlinc
#      with -Werror against the stubs, ORT's classes.jar, :core, R and BuildConfig. aapt2 warnings fail it too.
#   4. APK (skip: --no-apk): D8 (debug, min-api = minSdk), aapt2's output + classes.dex + lib/<abi>/ from the aar,
#      zipalign, apksigner with a throw-away key, then `aapt dump badging` checked against the build settings, and
#      every class the manifest names looked up in the compiled classes.
#   5. Self-test (skip: --no-self-test): copies of the app with one fault each must fail: a manifest comment holding
#      "--", a layout naming a missing string, wrong calls into the Android API, ORT and :core, a deprecated call
#      (a warning, fatal under -Werror).
# Output: build/android-check/ (the APK is a check artefact: no ExecuTorch classes or libraries, ORT 1.29.0's .so).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SCRIPTS=android_demo/scripts
TOOLS="${MEMLORA_ANDROID_TOOLS:-$HOME/.cache/memlora/android-tools}"
OUT="$ROOT/build/android-check"
PINS="$ROOT/$SCRIPTS/android-check.sha256"
APK_STEP=1
SELF_TEST=1
for a in "$@"; do
  case "$a" in
    --no-apk) APK_STEP=0 ;;
    --no-self-test) SELF_TEST=0 ;;
    *) echo "usage: android-check.sh [--no-apk] [--no-self-test]" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
log() { echo "android-check: $*" >&2; }
die() { echo "android-check: FAILED: $*" >&2; exit 1; }
elapsed() { echo "$(( $(date +%s) - T0 ))s"; }

eval "$(python3 "$SCRIPTS/android_check.py" config android_demo/app)"
DEB_UPSTREAM=${DEB_VERSION#*:}; DEB_UPSTREAM=${DEB_UPSTREAM%-*}   # 1:14~beta1-3 -> 14~beta1
DEB_FILEVER=${DEB_VERSION#*:}                                     # 14~beta1-3

# ---------------------------------------------------------------------------------------------------------- tools
for tool in java javac jar keytool python3 npm; do
  command -v "$tool" >/dev/null || die "$tool not found (JDK 17: apt-get install -y openjdk-17-jdk-headless; npm: apt-get install -y npm)"
done
need=()
command -v aapt >/dev/null || need+=(aapt)
command -v zipalign >/dev/null || need+=(zipalign)
[ -f /usr/share/java/sqlite-jdbc.jar ] || need+=(libxerial-sqlite-jdbc-java)
# org.json is part of Android, but not of the API file the stubs come from: Debian's libandroid-json-java is AOSP's
# own org.json, used at compile time only (never dexed into the APK: the platform provides it).
JSON_JAR=/usr/share/java/com.android.json.jar
[ -f "$JSON_JAR" ] || need+=(libandroid-json-java)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages: apt-get install -y ${need[*]}"
  log "apt-get install ${need[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } >/dev/null
fi
sqlite_deb=$(dpkg-query -W -f '${Version}' libxerial-sqlite-jdbc-java 2>/dev/null || true)
SQLITE_VERSION=$(sed -n 's/^sqlite-jdbc = "\(.*\)"/\1/p' android_demo/gradle/libs.versions.toml)
[ "${sqlite_deb%%+*}" = "$SQLITE_VERSION" ] ||
  die "Debian's libxerial-sqlite-jdbc-java is ${sqlite_deb:-absent}, the app pins sqlite-jdbc $SQLITE_VERSION"

mkdir -p "$TOOLS/downloads"
DL="$TOOLS/downloads"

verify() {  # verify FILE: its sha256 is the one pinned for its name
  local name want got
  name=$(basename "$1")
  want=$(awk -v n="$name" '$2 == n {print $1}' "$PINS")
  [ -n "$want" ] || die "no sha256 pinned for $name in $PINS (versions come from libs.versions.toml)"
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$want" ] || { rm -f "$1"; die "$name: sha256 $got, pinned $want (file removed)"; }
}

fetch_npm() {  # fetch_npm PACKAGE VERSION -> $DL/PACKAGE-VERSION.tgz
  local f="$DL/$1-$2.tgz"
  if [ ! -f "$f" ]; then
    log "npm pack $1@$2"
    (cd "$DL" && npm pack --silent "$1@$2" >/dev/null) || die "npm pack $1@$2"
  fi
  verify "$f"
  echo "$f"
}

APT_DIR="$TOOLS/apt"
apt_private() {  # apt-get / apt-cache with a private sources list and state: the system's apt setup is not touched
  local tool=$1; shift
  "$tool" -o Dir::Etc::SourceList="$APT_DIR/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache" -o Acquire::Languages=none "$@"
}
apt_ready=0
apt_update() {
  [ "$apt_ready" = 1 ] && return
  command -v apt-get >/dev/null || die "apt-get not found: the Android API and platform resources come from Debian"
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
  local key=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$key" ] || die "$key missing (apt-get install -y debian-archive-keyring)"
  printf 'deb [signed-by=%s] http://deb.debian.org/debian %s main\ndeb-src [signed-by=%s] http://deb.debian.org/debian %s main\n' \
    "$key" "$DEB_SUITE" "$key" "$DEB_SUITE" > "$APT_DIR/sources.list"
  log "apt-get update (private list: Debian $DEB_SUITE)"
  apt_private apt-get -q update > "$APT_DIR/update.log" 2>&1 || { cat "$APT_DIR/update.log" >&2; die "apt-get update"; }
  apt_ready=1
}

# kotlinc
KOTLINC_HOME="$TOOLS/kotlinc-$KOTLIN"
if [ ! -f "$KOTLINC_HOME/.ok" ]; then
  tgz=$(fetch_npm kotlin-compiler "$KOTLIN")
  rm -rf "$KOTLINC_HOME" "$KOTLINC_HOME.tmp" && mkdir -p "$KOTLINC_HOME.tmp"
  tar -xzf "$tgz" -C "$KOTLINC_HOME.tmp" --strip-components=1 package
  chmod +x "$KOTLINC_HOME.tmp"/bin/*
  grep -qx "$KOTLIN-release-[0-9]*" "$KOTLINC_HOME.tmp/build.txt" || die "kotlin-compiler $KOTLIN: build.txt says $(cat "$KOTLINC_HOME.tmp/build.txt")"
  touch "$KOTLINC_HOME.tmp/.ok" && mv "$KOTLINC_HOME.tmp" "$KOTLINC_HOME"
fi
KOTLINC="$KOTLINC_HOME/bin/kotlinc"
STDLIB="$KOTLINC_HOME/lib/kotlin-stdlib.jar"

# ONNX Runtime's Android library: classes.jar (the Java API) and jni/<abi>/*.so
ORT_HOME="$TOOLS/onnxruntime-android-$ORT_CHECK"
if [ ! -f "$ORT_HOME/.ok" ]; then
  tgz=$(fetch_npm com.github.asus4.onnxruntime "$ORT_NPM")
  rm -rf "$ORT_HOME" "$ORT_HOME.tmp" && mkdir -p "$ORT_HOME.tmp"
  tar -xzf "$tgz" -C "$ORT_HOME.tmp" --strip-components=3 package/Plugins/Android/onnxruntime.aar
  (cd "$ORT_HOME.tmp" && unzip -q onnxruntime.aar classes.jar 'jni/*' && rm onnxruntime.aar)
  grep -aq "$ORT_CHECK" "$ORT_HOME.tmp/jni/arm64-v8a/libonnxruntime.so" || die "onnxruntime.aar of npm $ORT_NPM is not ORT $ORT_CHECK"
  touch "$ORT_HOME.tmp/.ok" && mv "$ORT_HOME.tmp" "$ORT_HOME"
fi
ORT_JAR="$ORT_HOME/classes.jar"

# aapt2, D8, apksigner
MOBSF_HOME="$TOOLS/mobsf-$MOBSF"
if [ ! -f "$MOBSF_HOME/.ok" ]; then
  whl="$DL/mobsf-$MOBSF-py3-none-any.whl"
  if [ ! -f "$whl" ]; then
    pip=(python3 -m pip)
    "${pip[@]}" --version >/dev/null 2>&1 || pip=("$ROOT/${MEMLORA_VENV:-.venv}/bin/python" -m pip)
    "${pip[@]}" --version >/dev/null 2>&1 || die "no pip (apt-get install -y python3-pip, or ./build.sh setup)"
    log "pip download mobsf==$MOBSF"
    "${pip[@]}" download -q --no-deps --python-version 3.12 --only-binary=:all: -d "$DL" "mobsf==$MOBSF" >/dev/null
  fi
  verify "$whl"
  rm -rf "$MOBSF_HOME" "$MOBSF_HOME.tmp" && mkdir -p "$MOBSF_HOME.tmp"
  unzip -q -j "$whl" "mobsf/StaticAnalyzer/tools/bundletool-all-$BUNDLETOOL.jar" mobsf/StaticAnalyzer/tools/apksigner.jar -d "$MOBSF_HOME.tmp"
  mv "$MOBSF_HOME.tmp/bundletool-all-$BUNDLETOOL.jar" "$MOBSF_HOME.tmp/bundletool-all.jar"
  unzip -q -j "$MOBSF_HOME.tmp/bundletool-all.jar" linux/aapt2 -d "$MOBSF_HOME.tmp" && chmod +x "$MOBSF_HOME.tmp/aapt2"
  touch "$MOBSF_HOME.tmp/.ok" && mv "$MOBSF_HOME.tmp" "$MOBSF_HOME"
fi
AAPT2="$MOBSF_HOME/aapt2"
BUNDLETOOL="$MOBSF_HOME/bundletool-all.jar"
APKSIGNER="$MOBSF_HOME/apksigner.jar"

# The Android API signature file and the platform resources
PLATFORM="$TOOLS/android-platform-$DEB_FILEVER"
if [ ! -f "$PLATFORM/.ok" ]; then
  rm -rf "$PLATFORM" "$PLATFORM.tmp" && mkdir -p "$PLATFORM.tmp"
  orig="$DL/android-platform-frameworks-base_$DEB_UPSTREAM.orig.tar.xz"
  deb="$DL/android-framework-res_${DEB_FILEVER}_all.deb"
  if [ ! -f "$orig" ]; then
    apt_update
    log "apt-get source --download-only android-platform-frameworks-base=$DEB_VERSION"
    mkdir -p "$DL/src.tmp"
    # The .dsc may fail to download (a mirror's 404 on '~'); only the orig tarball is used, checked just below.
    (cd "$DL/src.tmp" && apt_private apt-get -q source --download-only "android-platform-frameworks-base=$DEB_VERSION") \
      > "$DL/src.log" 2>&1 || true
    [ -f "$DL/src.tmp/$(basename "$orig")" ] || { cat "$DL/src.log" >&2; die "apt-get source android-platform-frameworks-base=$DEB_VERSION"; }
    mv "$DL/src.tmp/$(basename "$orig")" "$orig" && rm -rf "$DL/src.tmp"
  fi
  verify "$orig"
  if [ ! -f "$deb" ]; then
    apt_update
    log "apt-get download android-framework-res=$DEB_VERSION"
    mkdir -p "$DL/deb.tmp"
    (cd "$DL/deb.tmp" && apt_private apt-get -q download "android-framework-res=$DEB_VERSION") > "$DL/deb.log" 2>&1 ||
      { cat "$DL/deb.log" >&2; die "apt-get download android-framework-res=$DEB_VERSION"; }
    mv "$DL"/deb.tmp/android-framework-res_*_all.deb "$deb" && rm -rf "$DL/deb.tmp"   # apt names it with %3a for ':'
  fi
  verify "$deb"
  log "extracting core/api/current.txt and framework-res.apk"
  tar -xJf "$orig" -C "$PLATFORM.tmp" --strip-components=3 ./core/api/current.txt
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$PLATFORM.tmp" --strip-components=4 ./usr/share/android-framework-res/framework-res.apk
  touch "$PLATFORM.tmp/.ok" && mv "$PLATFORM.tmp" "$PLATFORM"
fi
FRAMEWORK_RES="$PLATFORM/framework-res.apk"
log "tools ready in $TOOLS ($(elapsed))"

# ---------------------------------------------------------------------------------------------------------- stubs
api_sum=$(cat "$PLATFORM/current.txt" "$SCRIPTS/stubgen/stubgen.py" | sha256sum | cut -c1-16)
jdk_ver=$(javac -version 2>&1 | tr -dc '0-9.')
STUBS="$TOOLS/stubs/android-stubs-$DEB_FILEVER-$api_sum-jdk$jdk_ver.jar"
if [ ! -f "$STUBS" ]; then
  log "generating the Android API stubs from current.txt (stubgen.py + javac, about a minute)"
  s="$TOOLS/stubs/work" && rm -rf "$s" && mkdir -p "$s/src" "$s/classes"
  java_home=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
  jimage list "$java_home/lib/modules" | sed -n 's/^ *\(.*\)\.class$/\1/p' | grep -v -e module-info -e '\$[0-9]' | tr '/$' '..' | sort -u > "$s/jdk-classes.txt"
  python3 "$SCRIPTS/stubgen/stubgen.py" "$PLATFORM/current.txt" "$s/jdk-classes.txt" "$s/src"
  (cd "$s/src" && find . -name '*.java' | sort > ../sources.txt &&
    javac -J-Xmx1500m -nowarn -proc:none -encoding UTF-8 -d ../classes @../sources.txt > ../javac.log 2>&1) ||
    { head -50 "$s/javac.log" >&2; die "the generated stubs do not compile (stubgen.py)"; }
  jar --create --file "$STUBS.tmp" -C "$s/classes" . && mv "$STUBS.tmp" "$STUBS" && rm -rf "$s"
fi
log "Android API stubs: $(basename "$STUBS") ($(elapsed))"

# ---------------------------------------------------------------------------------------------------------- :core
rm -rf "$OUT" && mkdir -p "$OUT/core-classes"
log "javac android_demo/core (--release 11, against the Android API and org.json)"
javac --release 11 -encoding UTF-8 -nowarn -cp "$STUBS:$JSON_JAR" -d "$OUT/core-classes" $(find android_demo/core/src/main/java -name '*.java' | sort) ||
  die ":core does not compile"
CORE="$OUT/core-classes"

# ---------------------------------------------------------------------------------------------------------- the app
# check_app APP_DIR WORK: resources, R, BuildConfig and Kotlin of the app in APP_DIR (a copy in the self-test).
check_app() {
  local app=$1 w=$2 kt=() f skip n
  mkdir -p "$w/gen" "$w/gen-classes" "$w/classes"
  python3 "$SCRIPTS/android_check.py" manifest "$app" "$w/AndroidManifest.xml" || return 1
  "$AAPT2" compile --dir "$app/src/main/res" -o "$w/res.zip" > "$w/aapt2.log" 2>&1 &&
    "$AAPT2" link -o "$w/linked.apk" -I "$FRAMEWORK_RES" --manifest "$w/AndroidManifest.xml" --java "$w/gen" \
      "$w/res.zip" >> "$w/aapt2.log" 2>&1 || { sed "s|$w/||" "$w/aapt2.log" >&2; echo "aapt2: resources or manifest rejected" >&2; return 1; }
  if [ -s "$w/aapt2.log" ]; then sed "s|$w/||" "$w/aapt2.log" >&2; echo "aapt2: warnings (errors here)" >&2; return 1; fi
  python3 "$SCRIPTS/android_check.py" buildconfig "$app" "$w/gen" || return 1
  javac --release "$JVM_TARGET" -encoding UTF-8 -d "$w/gen-classes" $(find "$w/gen" -name '*.java') || return 1
  for f in $(find "$app/src/main/java" -name '*.kt' | sort); do
    skip=0
    for n in $NOT_COMPILED; do [ "$(basename "$f")" = "$n" ] && skip=1; done
    if [ "$skip" = 0 ]; then
      if grep -vE '^\s*(\*|//|/\*)' "$f" | grep -q 'org\.pytorch\.executorch'; then  # code, not a comment
        echo "$f calls ExecuTorch's API: move that code into ${NOT_COMPILED// /, } (the only files not compiled here)" >&2
        return 1
      fi
      kt+=("$f")
    fi
  done
  "$KOTLINC" -Werror -jvm-target "$JVM_TARGET" -no-reflect \
    -cp "$STUBS:$JSON_JAR:$ORT_JAR:$CORE:$w/gen-classes" -d "$w/classes" "${kt[@]}" > "$w/kotlinc.log" 2>&1 ||
    { cat "$w/kotlinc.log" >&2; echo "kotlinc: the app's Kotlin does not compile (warnings are errors)" >&2; return 1; }
  echo "${#kt[@]}" > "$w/kotlin-files"
}

log "aapt2 compile + link (framework-res.apk of $DEB_VERSION), R + BuildConfig, kotlinc $KOTLIN -Werror"
APPW="$OUT/app"
check_app android_demo/app "$APPW" || die "the app does not build (above)"
for n in $NOT_COMPILED; do [ -f "android_demo/app/src/main/java/${NAMESPACE//.//}/$n" ] || die "$n listed as not compiled but absent"; done
log "app: resources linked, $(cat "$APPW/kotlin-files") Kotlin files compiled; not compiled: $NOT_COMPILED ($(elapsed))"

# ---------------------------------------------------------------------------------------------------------- APK
if [ "$APK_STEP" = 1 ]; then
  d8() { java -Xmx1500m -cp "$BUNDLETOOL" com.android.tools.r8.D8 "$@" 2>&1 | grep -v "^Info: Unexpected error while reading .*kotlin.Metadata" || true; }
  java_home=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
  d8_ver=$(java -cp "$BUNDLETOOL" com.android.tools.r8.D8 --version 2>&1 | head -1 | sed 's/ (build.*//')
  libs=("$STDLIB" "$ORT_JAR" /usr/share/java/sqlite-jdbc.jar)
  lib_sum=$( (sha256sum "${libs[@]}" | cut -d' ' -f1; echo "$d8_ver $MIN_SDK") | sha256sum | cut -c1-16)
  LIBDEX="$TOOLS/dex/libs-$lib_sum"
  if [ ! -f "$LIBDEX/.ok" ]; then
    log "D8: kotlin-stdlib, onnxruntime, sqlite-jdbc (cached afterwards)"
    rm -rf "$LIBDEX" && mkdir -p "$LIBDEX"
    d8 --intermediate --debug --min-api "$MIN_SDK" --lib "$STUBS" --lib "$java_home" --output "$LIBDEX" "${libs[@]}" > "$OUT/d8-libs.log"
    [ -f "$LIBDEX/classes.dex" ] || { cat "$OUT/d8-libs.log" >&2; die "D8 (libraries)"; }
    touch "$LIBDEX/.ok"
  fi
  log "$d8_ver: app + :core, merged with the libraries (min-api $MIN_SDK)"
  mkdir -p "$OUT/dex-app" "$OUT/dex"
  d8 --intermediate --debug --min-api "$MIN_SDK" --lib "$STUBS" --lib "$JSON_JAR" --lib "$java_home" \
    --classpath "$STDLIB" --classpath "$ORT_JAR" --classpath /usr/share/java/sqlite-jdbc.jar \
    --output "$OUT/dex-app" $(find "$APPW/classes" "$APPW/gen-classes" "$CORE" -name '*.class') > "$OUT/d8-app.log"
  [ -f "$OUT/dex-app/classes.dex" ] || { cat "$OUT/d8-app.log" >&2; die "D8 (app)"; }
  d8 --debug --min-api "$MIN_SDK" --output "$OUT/dex" "$OUT"/dex-app/*.dex "$LIBDEX"/*.dex > "$OUT/d8-merge.log"
  [ -f "$OUT/dex/classes.dex" ] || { cat "$OUT/d8-merge.log" >&2; die "D8 (merge)"; }
  if grep -qiE '^(warning|error)' "$OUT/d8-app.log" "$OUT/d8-merge.log"; then cat "$OUT/d8-app.log" "$OUT/d8-merge.log" >&2; die "D8 warnings"; fi

  log "APK: linked resources + dex + lib/{$ABIS} from onnxruntime.aar; zipalign; apksigner (throw-away key)"
  mkdir -p "$OUT/lib"
  for abi in $ABIS; do cp -r "$ORT_HOME/jni/$abi" "$OUT/lib/$abi"; done
  python3 "$SCRIPTS/android_check.py" apk "$APPW/linked.apk" "$OUT/dex" "$OUT/lib" "$OUT/unsigned.apk"
  zipalign -p -f 4 "$OUT/unsigned.apk" "$OUT/aligned.apk"
  keytool -genkeypair -keystore "$OUT/throwaway.p12" -storetype PKCS12 -storepass android -keypass android \
    -alias check -keyalg RSA -keysize 2048 -validity 1 -dname "CN=memlora android-check" >/dev/null 2>&1
  APK="$OUT/memlora-demo-check.apk"
  java -jar "$APKSIGNER" sign --ks "$OUT/throwaway.p12" --ks-pass pass:android --ks-key-alias check \
    --min-sdk-version "$MIN_SDK" --out "$APK" "$OUT/aligned.apk"
  java -jar "$APKSIGNER" verify --min-sdk-version "$MIN_SDK" "$APK" || die "apksigner verify"
  zipalign -c -p 4 "$APK" || die "zipalign -c"
  aapt dump badging "$APK" > "$OUT/badging.txt" 2>&1 || { cat "$OUT/badging.txt" >&2; die "aapt dump badging"; }
  badging=$(python3 "$SCRIPTS/android_check.py" badging android_demo/app "$OUT/badging.txt") || die "badging (above)"
  log "aapt dump badging: $badging"
  elsewhere=$(python3 "$SCRIPTS/android_check.py" components android_demo/app "$APPW/classes") || die "manifest components"
  log "manifest components all compiled except: $elsewhere"
  log "APK: ${APK#"$ROOT"/} ($(( $(stat -c %s "$APK") / 1024 )) KiB; a check artefact: no ExecuTorch, ORT $ORT_CHECK) ($(elapsed))"
fi

# ---------------------------------------------------------------------------------------------------------- self-test
if [ "$SELF_TEST" = 1 ]; then
  # Each fault_* function breaks the copy of the app it is run in (cwd: its app/); the copy must then fail check_app
  # with the given message.
  src="src/main/java/${NAMESPACE//.//}"
  fault_manifest_comment() {  # the bug this check was written for
    sed -i 's|</manifest>|    <!-- adb shell am start --es bundle /data/local/tmp/memlora -->\n</manifest>|' src/main/AndroidManifest.xml
  }
  fault_missing_resource() {
    cat > src/main/res/layout/self_test.xml <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<TextView xmlns:android="http://schemas.android.com/apk/res/android" android:layout_width="wrap_content"
    android:layout_height="wrap_content" android:text="@string/does_not_exist" />
XML
  }
  fault_wrong_calls() {  # a misspelt method on an Android class, on ORT's API and on :core
    cat > "$src/SelfTest.kt" <<KT
package $NAMESPACE

class SelfTestActivity : android.app.Activity() {
    fun f(o: ai.onnxruntime.OrtSession.RunOptions) {
        setContentVeiw(R.layout.activity_main)
        o.addActiveLoraAdapters(null)
        org.memlora.core.Manifest.loadd(java.io.File("x"), false)
    }
}
KT
  }
  fault_deprecated_call() {  # compiles, with a warning
    printf 'package %s\n\nfun selfTest(v: android.view.View) = v.setBackgroundDrawable(null)\n' "$NAMESPACE" > "$src/SelfTest.kt"
  }
  expect_failure() {  # expect_failure FAULT PATTERN...: every PATTERN must be in the failing check's output
    local fault=$1 w="$OUT/self-test/$1" p; shift
    rm -rf "$w" && mkdir -p "$w/android_demo"
    cp -r android_demo/app android_demo/gradle "$w/android_demo/"
    rm -rf "$w/android_demo/app/build"
    (cd "$w/android_demo/app" && "fault_$fault")
    if (check_app "$w/android_demo/app" "$w/work") > "$w/output.log" 2>&1; then
      die "self-test $fault: the check passed an app with that fault"
    fi
    for p in "$@"; do
      grep -qF "$p" "$w/output.log" || { cat "$w/output.log" >&2; die "self-test $fault: failed, but without '$p'"; }
    done
    log "self-test: $fault -> fails: $(grep -m1 -F "$1" "$w/output.log" | sed "s|$w/||g; s|${w#"$ROOT"/}/||g" | cut -c1-140)"
  }
  expect_failure manifest_comment "not well-formed"
  expect_failure missing_resource "string/does_not_exist"
  expect_failure wrong_calls "unresolved reference 'setContentVeiw'" "unresolved reference 'addActiveLoraAdapters'" \
    "unresolved reference 'loadd'"
  expect_failure deprecated_call "warnings found and -Werror specified" "'fun setBackgroundDrawable"
  log "self-test: 4 faulty copies of the app, each failed the check ($(elapsed))"
fi

log "OK: manifest + resources linked, Kotlin compiled with -Werror$([ "$APK_STEP" = 1 ] && echo ", APK assembled, signed and checked")$([ "$SELF_TEST" = 1 ] && echo ", self-test passed") in $(elapsed)"
echo "android-check: $(( 1 + 4 * SELF_TEST )) passed, 0 failed"   # the app, and each faulty copy failing as it must
