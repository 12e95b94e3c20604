#!/usr/bin/env python3
"""Helpers of android-check.sh (stdlib only): what the Gradle build would feed the tools, read from the same files.

  config APP_DIR                 shell assignments: versions (gradle/libs.versions.toml) and the app's settings
                                 (app/build.gradle.kts), each from the one place the Gradle build reads it
  manifest APP_DIR OUT           the merged manifest AGP would hand aapt2: package, versionCode/Name and <uses-sdk>
                                 added to app/src/main/AndroidManifest.xml
  buildconfig APP_DIR OUT_DIR    BuildConfig.java as AGP writes it for the debug variant (buildConfigField included)
  apk LINKED DEX_DIR LIB_DIR OUT the unsigned APK: aapt2's linked resources + classes*.dex + lib/<abi>/*.so
  badging APP_DIR BADGING        checks `aapt dump badging` output against the settings
  components APP_DIR CLASSES     every class the manifest names exists in CLASSES, or is declared in a file the
                                 check does not compile (printed)
"""
import os
import re
import shlex
import shutil
import sys
import tomllib
import zipfile

NOT_COMPILED = ["Executorch.kt"]  # calls org.pytorch.executorch.*: not in any registry the check reaches


def catalog(app):
    with open(os.path.join(app, "..", "gradle", "libs.versions.toml"), "rb") as f:
        return tomllib.load(f)["versions"]


def _norm(key):
    return re.sub(r"[-_.]", ".", key)


def settings(app):
    """The app's build settings; each comes from the version catalog when build.gradle.kts reads it from there."""
    versions = catalog(app)
    by_accessor = {_norm(k): k for k in versions}
    with open(os.path.join(app, "build.gradle.kts"), encoding="utf-8") as f:
        gradle = f.read()

    def value(name):
        m = re.search(rf"^\s*{name}\s*=\s*(.+)$", gradle, re.M)
        if not m:
            sys.exit(f"android_check: app/build.gradle.kts sets no {name}")
        expr = m.group(1).strip()
        lit = re.fullmatch(r'"([^"]*)"|(\d+)', expr)
        if lit:
            return lit.group(1) if lit.group(1) is not None else lit.group(2)
        ref = re.fullmatch(r"libs\.versions\.([\w.]+)\.get\(\)(?:\.toInt\(\))?", expr)
        if ref and ref.group(1) in by_accessor:
            return versions[by_accessor[ref.group(1)]]
        sys.exit(f"android_check: cannot read {name} = {expr} in app/build.gradle.kts (a literal or libs.versions.X.get())")

    jvm = re.search(r"jvmTarget\.set\(JvmTarget\.fromTarget\(libs\.versions\.([\w.]+)\.get\(\)\)\)", gradle)
    if not jvm or jvm.group(1) not in by_accessor:
        sys.exit("android_check: app/build.gradle.kts must set jvmTarget from the version catalog")
    fields = re.findall(r'buildConfigField\("String",\s*"(\w+)",\s*"\\"\$\{libs\.versions\.([\w.]+)\.get\(\)\}\\""\)', gradle)
    if len(fields) != gradle.count("buildConfigField(") or any(a not in by_accessor for _, a in fields):
        sys.exit('android_check: a buildConfigField in app/build.gradle.kts is not of the form '
                 'buildConfigField("String", "NAME", "\\"${libs.versions.X.get()}\\""): teach android_check.py it')
    abis = re.findall(r'abiFilters\s*\+=\s*"([^"]+)"', gradle)
    return {
        "NAMESPACE": value("namespace"),
        "APP_ID": value("applicationId"),
        "COMPILE_SDK": value("compileSdk"),
        "MIN_SDK": value("minSdk"),
        "TARGET_SDK": value("targetSdk"),
        "VERSION_CODE": value("versionCode"),
        "VERSION_NAME": value("versionName"),
        "JVM_TARGET": versions[by_accessor[jvm.group(1)]],
        "ABIS": " ".join(abis),
        "FIELDS": " ".join(f"{n}={versions[by_accessor[a]]}" for n, a in fields),
        "KOTLIN": versions["kotlin"],
        "ORT_NPM": versions["check-onnxruntime-npm"],
        "ORT_CHECK": versions["check-onnxruntime"],
        "MOBSF": versions["check-mobsf"],
        "BUNDLETOOL": versions["check-bundletool"],
        "DEB_SUITE": versions["check-debian-suite"],
        "DEB_VERSION": versions["check-android-platform"],
        "NOT_COMPILED": " ".join(NOT_COMPILED),
    }


def cmd_config(app):
    for k, v in settings(app).items():
        print(f"{k}={shlex.quote(str(v))}")


def cmd_manifest(app, out):
    s = settings(app)
    with open(os.path.join(app, "src", "main", "AndroidManifest.xml"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"<manifest\b[^>]*>", text)
    if not m:
        sys.exit("android_check: AndroidManifest.xml has no <manifest> element")
    if re.search(r"\spackage\s*=", m.group(0)):
        sys.exit("android_check: AndroidManifest.xml sets package=; AGP 8 takes it from namespace in build.gradle.kts")
    # Added on the start tag's own line, so that the line numbers in aapt2's messages are the source file's.
    head = (m.group(0)[:-1] + f' package="{s["APP_ID"]}" android:versionCode="{s["VERSION_CODE"]}" '
            f'android:versionName="{s["VERSION_NAME"]}"><uses-sdk android:minSdkVersion="{s["MIN_SDK"]}" '
            f'android:targetSdkVersion="{s["TARGET_SDK"]}" />')
    with open(out, "w", encoding="utf-8") as f:
        f.write(text[:m.start()] + head + text[m.end():])


def cmd_buildconfig(app, out_dir):
    s = settings(app)
    lines = ["/**", " * Automatically generated file. DO NOT MODIFY", " */", f"package {s['NAMESPACE']};", "",
             "public final class BuildConfig {",
             '  public static final boolean DEBUG = Boolean.parseBoolean("true");',
             f'  public static final String APPLICATION_ID = "{s["APP_ID"]}";',
             '  public static final String BUILD_TYPE = "debug";',
             f"  public static final int VERSION_CODE = {int(s['VERSION_CODE'])};",
             f'  public static final String VERSION_NAME = "{s["VERSION_NAME"]}";']
    for field in s["FIELDS"].split():
        name, v = field.split("=", 1)
        lines += ["  // Field from default config.", f'  public static final String {name} = "{v}";']
    lines.append("}")
    d = os.path.join(out_dir, *s["NAMESPACE"].split("."))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "BuildConfig.java"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def cmd_apk(linked, dex_dir, lib_dir, out):
    shutil.copyfile(linked, out)
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(os.listdir(dex_dir)):
            if name.endswith(".dex"):
                z.write(os.path.join(dex_dir, name), name)
        for abi in sorted(os.listdir(lib_dir)):
            for so in sorted(os.listdir(os.path.join(lib_dir, abi))):
                z.write(os.path.join(lib_dir, abi, so), f"lib/{abi}/{so}")


def cmd_badging(app, path):
    s = settings(app)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    want = {
        "package": rf"^package: name='{re.escape(s['APP_ID'])}' versionCode='{s['VERSION_CODE']}' "
                   rf"versionName='{re.escape(s['VERSION_NAME'])}'",
        "minSdk": rf"^sdkVersion:'{s['MIN_SDK']}'$",
        "targetSdk": rf"^targetSdkVersion:'{s['TARGET_SDK']}'$",
        "launcher": rf"^launchable-activity: name='{re.escape(s['NAMESPACE'])}\.MainActivity'",
        "ABIs": rf"^native-code: {' '.join(repr(a) for a in s['ABIS'].split())}$",
    }
    bad = [k for k, rx in want.items() if not re.search(rx, text, re.M)]
    if bad:
        sys.exit(f"android_check: aapt dump badging disagrees with the build settings on {', '.join(bad)}:\n{text}")
    print("; ".join(re.search(rx, text, re.M).group(0).strip() for rx in want.values()))


def cmd_components(app, classes):
    s = settings(app)
    with open(os.path.join(app, "src", "main", "AndroidManifest.xml"), encoding="utf-8") as f:
        text = re.sub(r"<!--.*?-->", "", f.read(), flags=re.S)
    src = os.path.join(app, "src", "main", "java", *s["NAMESPACE"].split("."))
    missing, elsewhere = [], []
    for tag, name in re.findall(r"<(application|activity|service|receiver|provider)\b[^>]*?android:name=\"([^\"]+)\"", text):
        fqn = s["NAMESPACE"] + name if name.startswith(".") else name
        if os.path.isfile(os.path.join(classes, *fqn.split(".")) + ".class"):
            continue
        simple = fqn.rsplit(".", 1)[-1]
        declared = [f for f in NOT_COMPILED
                    if re.search(rf"^class {simple}\b", open(os.path.join(src, f), encoding="utf-8").read(), re.M)]
        (elsewhere if declared else missing).append(f"{tag} {fqn}" + (f" ({declared[0]})" if declared else ""))
    if missing:
        sys.exit("android_check: the manifest names classes the app does not have: " + ", ".join(missing))
    print(", ".join(elsewhere) if elsewhere else "none")


if __name__ == "__main__":
    cmds = {"config": cmd_config, "manifest": cmd_manifest, "buildconfig": cmd_buildconfig, "apk": cmd_apk,
            "badging": cmd_badging, "components": cmd_components}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
