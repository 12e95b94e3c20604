"""memlora-profile: latency, memory and size of every memory operation of a bundle, on this host (constrained
like a named phone, with a roofline projection for it) or on a real phone over adb. See docs/profiler.md."""

from __future__ import annotations


class ProfileError(Exception):
    """The profile cannot be made (bad target, no device, missing data); the CLI prints one line for it."""
