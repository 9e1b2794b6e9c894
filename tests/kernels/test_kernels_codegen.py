"""GPU properties checked without a GPU: the kernels compiled for Hopper (sm_90) use 128-bit vector loads and
stores in their main loops and spill no registers (ptxas -v from the triton wheel)."""
from __future__ import annotations

import re

import pytest

import optim.kernel_api  # noqa: F401  loads kernels/ as clipgpt_kernels
from clipgpt_kernels.codegen import compile_ptx, loop_bodies, ptxas_report, variants

pytest.importorskip("triton.backends.nvidia", reason="the triton wheel has no NVIDIA backend to compile with")

VARIANTS = variants()


@pytest.fixture(scope="module")
def ptx_by_name():
    return {v.name: compile_ptx(v, arch=90) for v in VARIANTS}


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.streams_loaded], ids=lambda v: v.name)
def test_main_loop_uses_16_byte_vector_accesses(variant, ptx_by_name):
    loops = loop_bodies(ptx_by_name[variant.name])
    assert loops, "no loop found in the PTX"
    main = max(loops, key=lambda body: body.count("ld.global.v4"))
    assert main.count("ld.global.v4") >= variant.streams_loaded
    assert main.count("st.global.v4") >= variant.streams_stored
    scalar = re.findall(r"(?:ld|st)\.global\.(?:b16|b32|f32|u16)\b", main)
    assert not scalar, f"scalar global accesses in the main loop: {scalar[:4]}"


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_no_register_spills(variant, ptx_by_name):
    report = ptxas_report(ptx_by_name[variant.name])
    if report is None:
        pytest.skip("no ptxas in the triton wheel that accepts this PTX version")
    assert report["spill_stores"] == 0 and report["spill_loads"] == 0, report
    assert report["registers"] <= 128, report  # leaves room for >= 2 x 256-thread programs per SM


def test_loop_finder_on_a_handwritten_ptx():
    ptx = "$L__BB0_1:\n ld.global.v4.b32 {%r1,%r2,%r3,%r4}, [%rd1];\n @%p1 bra $L__BB0_1;\n$L__BB0_2:\n ret;"
    assert loop_bodies(ptx) == ["$L__BB0_1:\n ld.global.v4.b32 {%r1,%r2,%r3,%r4}, [%rd1];\n @%p1 bra $L__BB0_1;"]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_divisions_and_square_roots_round_to_nearest(variant, ptx_by_name):
    """γ/‖g‖ and the norm's square root match torch's IEEE results: no approximate div.full / sqrt.approx."""
    ptx = ptx_by_name[variant.name]
    assert not re.search(r"\bdiv\.(?:full|approx)\.f32", ptx), "approximate division"
    assert not re.search(r"\bsqrt\.approx\.", ptx), "approximate square root"
    if variant.name.startswith("clipped_sgd"):
        assert "div.rn.f32" in ptx
    if variant.name.startswith("sum_partials"):
        assert "sqrt.rn.f32" in ptx


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.name.startswith("clipped_sgd")], ids=lambda v: v.name)
def test_clipped_update_loads_everything_before_its_first_store(variant, ptx_by_name):
    """The momentum store comes after the parameter load: one memory round trip per iteration, not two."""
    main = max(loop_bodies(ptx_by_name[variant.name]), key=lambda body: body.count("ld.global.v4"))
    accesses = re.findall(r"\b(ld|st)\.global", main)
    assert "st" in accesses and "ld" not in accesses[accesses.index("st"):], accesses
