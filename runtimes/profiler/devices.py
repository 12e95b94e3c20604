"""Named phone profiles: a flagship, a mid-range and a low-end phone, with the figures the roofline needs.

Every figure says where it comes from (`basis`): "spec" = read off the cited public spec sheet; "derived" = computed
from spec figures by the formula given; "assumed" = not published by the vendor, a stated assumption you should
replace when you know better (e.g. with a STREAM run on the phone). Bandwidths are theoretical DRAM peaks
(bus width x transfer rate); real phones reach 50-70% of them.

Peak int8 throughput is the CPU's (ExecuTorch's XNNPACK backend runs on the CPU), for the cores the profile's
thread count uses: sum over those cores of clock x int8 ops/cycle. Ops/cycle per core = 128-bit NEON pipes x
(16 int8 MACs per SDOT, or 32 per SMMLA on cores with the Armv8.6 I8MM extension) x 2 ops per MAC, pipe counts from
Arm's Software Optimization Guides for each core. NPU TOPS are not used: the bundle does not run on the NPU.

Sources:
[pixel8]  Google Pixel 8 tech specs, https://store.google.com/product/pixel_8_specs (Tensor G3, 8 GB LPDDR5X RAM)
[g3clk]   Tensor G3 shipped clocks 1x Cortex-X3 2.91 GHz, 4x A715 2.37 GHz, 4x A510 1.70 GHz:
          https://www.phonearena.com/news/tensor-g3-specs-leaked_id151181 (device-info readout, Oct 2023)
[a54]     Samsung Galaxy A54 5G specs, https://www.samsung.com/levant/smartphones/galaxy-a54-5g/specs/
          (Exynos 1380, 8 GB RAM)
[e1380]   Samsung Exynos 1380, https://semiconductor.samsung.com/processor/mobile-processor/exynos-1380/
          (4x Cortex-A78 2.4 GHz + 4x Cortex-A55 2.0 GHz; LPDDR4X / LPDDR5)
[redmi12c] Xiaomi Redmi 12C specs, https://www.mi.com/global/product/redmi-12c/specs (Helio G85, 3/4 GB RAM)
[g85]     MediaTek Helio G85, https://www.mediatek.com/products/smartphones/mediatek-helio-g85
          (2x Cortex-A75 2.0 GHz + 6x Cortex-A55 1.8 GHz; LPDDR4X up to 1800 MHz)
[armsog]  Arm Software Optimization Guides (Cortex-X3, Cortex-A715, Cortex-A78, Cortex-A75),
          https://developer.arm.com/documentation — ASIMD pipe counts and SDOT/SMMLA throughput.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from . import ProfileError

# int8 ops per cycle per core (2 x MACs): 128-bit ASIMD pipes x MACs per instruction per pipe [armsog].
INT8_OPS_PER_CYCLE = {
    "cortex-x3": 4 * 32 * 2,   # 4 ASIMD pipes, SMMLA (I8MM): 32 MACs each
    "cortex-a715": 2 * 32 * 2,  # 2 ASIMD pipes, SMMLA
    "cortex-a78": 2 * 16 * 2,   # 2 ASIMD pipes, SDOT only (Armv8.2: no I8MM)
    "cortex-a75": 2 * 8 * 2,    # 2 64-bit ASIMD pipes, SDOT on 64-bit vectors
}


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    basis: str  # "spec" | "derived" | "assumed"
    source: str  # citation key(s) from the module docstring, or the formula


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    tier: str  # "flagship" | "mid-range" | "low-end"
    soc: str
    big_cores: tuple[tuple[str, float], ...]  # (core, GHz) for each core the profile's threads run on, fastest first
    threads: int
    ram_gb: Figure
    mem_bandwidth_gbs: Figure
    notes: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)

    @property
    def peak_int8_gops(self) -> Figure:
        used = self.big_cores[: self.threads]
        gops = sum(ghz * INT8_OPS_PER_CYCLE[core] for core, ghz in used)
        formula = " + ".join(f"{ghz} GHz x {INT8_OPS_PER_CYCLE[core]} ({core})" for core, ghz in used)
        return Figure(round(gops, 1), "GOPS", "derived", formula)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["big_cores"] = [list(c) for c in self.big_cores]
        d["peak_int8_gops"] = asdict(self.peak_int8_gops)
        return d


PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (
    DeviceProfile(
        name="pixel-8", tier="flagship", soc="Google Tensor G3",
        big_cores=(("cortex-x3", 2.91), ("cortex-a715", 2.37), ("cortex-a715", 2.37), ("cortex-a715", 2.37)),
        threads=4,
        ram_gb=Figure(8, "GB", "spec", "pixel8"),
        # Google does not publish the bus; 4x16-bit LPDDR5X-8533 like other 2023 flagship SoCs.
        mem_bandwidth_gbs=Figure(68.3, "GB/s", "assumed", "pixel8 (LPDDR5X) x assumed 64-bit bus at 8533 MT/s"),
        notes="4 threads on the X3 + three A715 cores (the ExecuTorch Android demo's default of 4 threads).",
        sources=("pixel8", "g3clk", "armsog")),
    DeviceProfile(
        name="galaxy-a54", tier="mid-range", soc="Samsung Exynos 1380",
        big_cores=(("cortex-a78", 2.4),) * 4,
        threads=4,
        ram_gb=Figure(8, "GB", "spec", "a54"),
        mem_bandwidth_gbs=Figure(34.1, "GB/s", "assumed", "e1380 (LPDDR4X) x assumed 64-bit bus at 4266 MT/s"),
        notes="4 threads on the four A78 cores.",
        sources=("a54", "e1380", "armsog")),
    DeviceProfile(
        name="redmi-12c", tier="low-end", soc="MediaTek Helio G85",
        big_cores=(("cortex-a75", 2.0),) * 2,
        threads=2,
        ram_gb=Figure(4, "GB", "spec", "redmi12c"),
        mem_bandwidth_gbs=Figure(14.4, "GB/s", "derived", "g85: LPDDR4X 1800 MHz = 3600 MT/s x assumed 32-bit bus"),
        notes="2 threads on the two A75 cores; the A55 cores are left to the OS.",
        sources=("redmi12c", "g85", "armsog")),
)}

TIERS = {p.tier: p.name for p in PROFILES.values()}


def get(name: str) -> DeviceProfile:
    """A profile by name (pixel-8, galaxy-a54, redmi-12c) or tier (flagship, mid-range, low-end)."""
    key = TIERS.get(name, name)
    if key not in PROFILES:
        raise ProfileError(f"unknown device profile {name!r}; known: {sorted(PROFILES)} or tiers {sorted(TIERS)}")
    return PROFILES[key]
