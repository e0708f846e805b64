"""The CPU a benchmark ran on, named precisely enough to tell two machines apart.

Cloud VMs often report a bare "AMD EPYC" or "Intel Xeon": the family, the model and the widest
vector instructions are what separate two such CPUs' timings (e.g. with or without AVX-512).
"""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_name(cpuinfo: str | None = None) -> str:
    """``"AMD EPYC (family 25, model 17, AVX-512 with bf16)"``; the platform's processor name
    where /proc/cpuinfo is unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return platform.processor() or platform.machine() or "unknown CPU"
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    flags = set(fields.get("flags", "").split())
    if "avx512f" in flags:
        vector = "AVX-512 with bf16" if "avx512_bf16" in flags else "AVX-512"
    elif "avx2" in flags:
        vector = "AVX2, no AVX-512"
    else:
        vector = ""
    details = [f"family {fields['cpu family']}" if "cpu family" in fields else "",
               f"model {fields['model']}" if "model" in fields else "", vector]  # fmt: skip
    details = [d for d in details if d]
    return f"{name} ({', '.join(details)})" if details else name
