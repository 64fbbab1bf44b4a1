"""Memory figures: resident set after an import, in a fresh interpreter, and this
process's peak.

The probe runs the same snippet for every module it measures, so the figures
differ only by what the import itself loads. RSS is read from
``/proc/self/status`` (current VmRSS) where it exists, else from
``getrusage`` (peak, which right after the imports is the current size).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import TypedDict

__all__ = ["ImportFootprint", "MemoryReport", "import_footprint", "memory_report", "peak_rss_mb"]

MB = 1024 * 1024
#: modules ``import icefloe`` must leave unloaded (DESIGN.md: lazy web stack)
HEAVY_MODULES = ("starlette", "uvicorn")

_PROBE = """\
import sys
import {module}


def rss_bytes():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


loaded = [m for m in {heavy!r} if m in sys.modules]
print(rss_bytes(), ",".join(loaded))
"""


@dataclass(frozen=True, slots=True)
class ImportFootprint:
    """One module imported alone in a fresh interpreter."""

    #: resident set size right after the import, in MB
    rss_mb: float
    #: which of :data:`HEAVY_MODULES` the import pulled in
    heavy_loaded: tuple[str, ...]


class MemoryReport(TypedDict):
    """The ``memory`` section of the report."""

    rss_after_import_mb: float
    rss_bare_asyncio_mb: float
    import_overhead_mb: float
    peak_rss_mb: float
    starlette_uvicorn_absent: bool


def _probe_once(module: str) -> ImportFootprint:
    code = _PROBE.format(module=module, heavy=HEAVY_MODULES)
    with tempfile.TemporaryDirectory() as cwd:  # nothing in cwd can shadow a module
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    rss, _, loaded = out.strip().partition(" ")
    return ImportFootprint(int(rss) / MB, tuple(filter(None, loaded.split(","))))


def import_footprint(module: str, repeats: int = 3) -> ImportFootprint:
    """Median RSS over ``repeats`` fresh interpreters that only ``import module``."""
    probes = [_probe_once(module) for _ in range(repeats)]
    loaded = tuple(sorted({name for p in probes for name in p.heavy_loaded}))
    return ImportFootprint(statistics.median(p.rss_mb for p in probes), loaded)


def peak_rss_mb() -> float:
    """Peak resident set of this process so far (``ru_maxrss``), in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def memory_report() -> MemoryReport:
    """Import footprints of icefloe and bare asyncio, and this process's peak RSS."""
    icefloe = import_footprint("icefloe")
    bare = import_footprint("asyncio")
    return MemoryReport(
        rss_after_import_mb=round(icefloe.rss_mb, 1),
        rss_bare_asyncio_mb=round(bare.rss_mb, 1),
        import_overhead_mb=round(icefloe.rss_mb - bare.rss_mb, 1),
        peak_rss_mb=round(peak_rss_mb(), 1),
        starlette_uvicorn_absent=not icefloe.heavy_loaded,
    )
