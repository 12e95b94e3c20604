"""`memlora-export --install`: put the bundle (and the demo app, when built) on a phone over adb.

`preflight()` runs before the export so a missing adb or phone is reported at once, not after minutes of lowering;
`install()` runs after it: `adb push` of the bundle to /data/local/tmp/memlora (where the app and its benchmark entry
point read it) and `adb install -r` of android_demo's debug APK when `./build.sh android` has built it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import MemloraError

DEVICE_DIR = "/data/local/tmp/memlora"
APP_ID = "org.memlora.demo"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_APK = REPO / "android_demo" / "app" / "build" / "outputs" / "apk" / "debug" / "app-debug.apk"


class InstallError(MemloraError):
    """adb, a phone or the APK is missing, or adb failed."""


@dataclass
class Device:
    adb: str
    serial: str


def find_adb() -> str:
    """$ADB, adb on PATH, or the SDK's platform-tools/adb."""
    cands = [os.environ.get("ADB"), shutil.which("adb")]
    for sdk in (os.environ.get("ANDROID_HOME"), os.environ.get("ANDROID_SDK_ROOT")):
        if sdk:
            cands.append(str(Path(sdk) / "platform-tools" / "adb"))
    for c in cands:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise InstallError("--install needs adb, which was not found: install Android's platform-tools (Debian: apt-get "
                       "install adb; or the SDK's platform-tools) and put adb on PATH, or set ADB=/path/to/adb")


def _run(cmd: list[str], timeout: float = 60, what: str = "adb") -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InstallError(f"{what} timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    except OSError as e:
        raise InstallError(f"cannot run {cmd[0]}: {e.strerror}") from None
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise InstallError(f"{what} failed (exit {r.returncode}): {' '.join(cmd[1:])}: {msg[-1] if msg else 'no output'}")
    return r.stdout


def parse_devices(out: str) -> list[tuple[str, str]]:
    """`adb devices` output -> [(serial, state)], state as adb prints it (device, unauthorized, offline, ...)."""
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            rows.append((parts[0], parts[1]))
    return rows


def preflight(serial: str | None = None) -> Device:
    """The phone to install on: adb present and exactly one usable device (or the one `serial` / $ANDROID_SERIAL names)."""
    adb = find_adb()
    rows = parse_devices(_run([adb, "devices"], what="adb devices"))
    serial = serial or os.environ.get("ANDROID_SERIAL")
    if serial:
        rows = [r for r in rows if r[0] == serial]
        if not rows:
            raise InstallError(f"no device {serial!r} is attached (adb devices lists none by that serial)")
    if not rows:
        raise InstallError("--install found no Android device: connect a phone by USB with USB debugging on "
                           "(Settings > Developer options), accept this computer's key on the phone, and check `adb devices`")
    ready = [s for s, state in rows if state == "device"]
    if not ready:
        s, state = rows[0]
        hint = {"unauthorized": "accept the USB debugging prompt on the phone", "offline": "reconnect the USB cable or "
                "run `adb kill-server`"}.get(state, "see `adb devices`")
        raise InstallError(f"device {s} is {state}: {hint}")
    if len(ready) > 1:
        raise InstallError(f"{len(ready)} devices attached ({', '.join(ready)}): choose one with --serial or ANDROID_SERIAL")
    return Device(adb=adb, serial=ready[0])


def install(dev: Device, bundle: str | Path, apk: str | Path | None = None, device_dir: str = DEVICE_DIR) -> dict[str, str]:
    """Push the bundle's files to `device_dir` (replacing what was there) and install the APK if it exists."""
    bundle = Path(bundle)
    if not (bundle / "manifest.json").is_file():
        raise InstallError(f"{bundle} is not a bundle (no manifest.json)")
    a = [dev.adb, "-s", dev.serial]
    _run([*a, "shell", f"rm -rf {device_dir} && mkdir -p {device_dir}"], what="adb shell")
    for f in sorted(bundle.iterdir()):
        if f.is_file():
            _run([*a, "push", str(f), f"{device_dir}/{f.name}"], timeout=1800, what="adb push")
    done = {"bundle": f"{dev.serial}:{device_dir}"}
    apk_path = Path(apk) if apk else DEFAULT_APK
    if apk_path.is_file():
        _run([*a, "install", "-r", str(apk_path)], timeout=600, what="adb install")
        done["app"] = APP_ID
    elif apk:
        raise InstallError(f"APK {apk_path} not found")
    else:
        done["app"] = f"not installed: {apk_path} is not built (./build.sh android)"
    return done
