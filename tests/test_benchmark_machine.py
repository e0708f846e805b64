"""Benchmarks name the CPU with its family, model and widest vector instructions."""

from __future__ import annotations

from benchmarks.machine import cpu_name

BLOCK = """processor\t: {n}
vendor_id\t: AuthenticAMD
cpu family\t: {family}
model\t\t: {model}
model name\t: {name}
flags\t\t: {flags}
"""


def cpuinfo(name: str, family: int, model: int, flags: str, processors: int = 2) -> str:
    return "\n".join(
        BLOCK.format(n=n, name=name, family=family, model=model, flags=flags)
        for n in range(processors)
    )


def test_two_cpus_with_one_model_name_are_told_apart() -> None:
    zen2 = cpuinfo("AMD EPYC", 23, 49, "fpu sse2 avx avx2 fma")
    zen4 = cpuinfo("AMD EPYC", 25, 17, "fpu sse2 avx avx2 avx512f avx512dq avx512_bf16")
    assert cpu_name(zen2) == "AMD EPYC (family 23, model 49, AVX2, no AVX-512)"
    assert cpu_name(zen4) == "AMD EPYC (family 25, model 17, AVX-512 with bf16)"


def test_avx512_without_bf16_and_missing_fields() -> None:
    assert cpu_name(cpuinfo("Intel Xeon", 6, 85, "avx2 avx512f")) == (
        "Intel Xeon (family 6, model 85, AVX-512)"
    )
    assert cpu_name("model name\t: Some CPU\n") == "Some CPU"
