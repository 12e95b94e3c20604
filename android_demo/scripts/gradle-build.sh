#!/usr/bin/env bash
# `./build.sh android`: Gradle build of android_demo -> app/build/outputs/apk/debug/app-debug.apk.
# Needs JDK 17+, an Android SDK with platforms;android-35 and build-tools (ANDROID_HOME, ANDROID_SDK_ROOT or
# android_demo/local.properties sdk.dir), Gradle >= 8.11.1 (android_demo/gradlew with its wrapper jar, or `gradle` on
# PATH) and access to Google's Maven and Maven Central. Without them: says exactly what is missing, exits 1.
#   usage: android_demo/scripts/gradle-build.sh [extra gradle args]
set -euo pipefail
cd "$(dirname "$0")/.."
GRADLE_MIN=8.11.1
COMPILE_SDK=$(sed -n 's/^compile-sdk = "\(.*\)"/\1/p' gradle/libs.versions.toml)   # the one place for versions
missing=()

vge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }   # version $1 >= $2

if command -v java >/dev/null; then
  jv=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ "${jv:-0}" -ge 17 ] || missing+=("JDK 17 or newer (found java ${jv:-?}; e.g. apt-get install -y openjdk-17-jdk-headless)")
else
  missing+=("JDK 17 or newer (java not found; e.g. apt-get install -y openjdk-17-jdk-headless)")
fi

sdk="${ANDROID_HOME:-${ANDROID_SDK_ROOT:-}}"
if [ -z "$sdk" ] && [ -f local.properties ]; then sdk=$(sed -n 's/^sdk\.dir=//p' local.properties | tail -1); fi
if [ -z "$sdk" ] || [ ! -d "$sdk" ]; then
  missing+=("the Android SDK (set ANDROID_HOME, or sdk.dir=... in android_demo/local.properties; Android Studio installs it, or the command-line tools' sdkmanager)")
else
  [ -d "$sdk/platforms/android-$COMPILE_SDK" ] || missing+=("SDK platform android-$COMPILE_SDK in $sdk (sdkmanager \"platforms;android-$COMPILE_SDK\")")
  ls -d "$sdk"/build-tools/3[5-9]* >/dev/null 2>&1 || missing+=("SDK build-tools 35 or newer in $sdk (sdkmanager \"build-tools;35.0.0\")")
fi

gradle_cmd=()
if [ -x gradlew ] && [ -f gradle/wrapper/gradle-wrapper.jar ]; then
  gradle_cmd=(./gradlew)
elif command -v gradle >/dev/null; then
  gv=$(gradle --version 2>/dev/null | sed -n 's/^Gradle \([0-9.]*\).*/\1/p' | head -1)
  if vge "${gv:-0}" "$GRADLE_MIN"; then gradle_cmd=(gradle); else
    missing+=("Gradle >= $GRADLE_MIN (found gradle ${gv:-?} on PATH; Debian's gradle package is 4.4, too old: install from gradle.org, or let Android Studio sync the project, or run 'gradle wrapper --gradle-version $GRADLE_MIN' with a recent Gradle)")
  fi
else
  missing+=("Gradle >= $GRADLE_MIN (no android_demo/gradlew wrapper jar and no gradle on PATH: open android_demo in Android Studio, or install Gradle and run 'gradle wrapper --gradle-version $GRADLE_MIN' in android_demo)")
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "build.sh android: cannot build the APK here; missing:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  echo "(Without any of these: ./build.sh android-test tests the app's shared logic, ./build.sh android-check links its" >&2
  echo " resources and compiles its Kotlin against the Android API. See docs/android.md.)" >&2
  exit 1
fi

[ -n "${ANDROID_HOME:-}${ANDROID_SDK_ROOT:-}" ] && export ANDROID_HOME="${ANDROID_HOME:-$ANDROID_SDK_ROOT}"
"${gradle_cmd[@]}" --console=plain :app:assembleDebug "$@"
apk=app/build/outputs/apk/debug/app-debug.apk
[ -f "$apk" ] || { echo "build.sh android: Gradle finished but $apk is missing" >&2; exit 1; }
echo "android_demo/$apk"
