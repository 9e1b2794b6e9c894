"""Compile the kernels for a GPU on any machine and read what the hardware would run.

Triton compiles for Hopper (``GPUTarget("cuda", 90, 32)``) without a GPU; the PTX shows whether the main loops
use 128-bit vector accesses (``ld.global.v4`` / ``st.global.v4``), and ``ptxas -v`` from the triton wheel
reports registers and spills. ``python -m kernels.codegen`` prints that for every kernel variant below;
tests/kernels/test_kernels_codegen.py asserts it.
"""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

import triton
import triton.language as tl

from .triton_common import sum_partials_kernel

# importlib: the package re-exports functions under the same names as these modules
clipped_update = importlib.import_module(".clipped_update", __package__)
global_norm = importlib.import_module(".global_norm", __package__)
lerp_momentum = importlib.import_module(".lerp_momentum", __package__)
scion_inner_product = importlib.import_module(".scion_inner_product", __package__)
scion_update = importlib.import_module(".scion_update", __package__)


@dataclass
class Variant:
    """One compiled configuration of a kernel: runtime argument types and compile-time constants."""
    name: str
    kernel: object
    signature: dict[str, str]
    constexprs: dict[str, object]
    num_warps: int
    streams_loaded: int  # tensors read in the main loop
    streams_stored: int  # tensors written in the main loop
    extra: dict = field(default_factory=dict)


def _sgd(dtype, m_dtype=tl.float32, nesterov=False):
    sig = dict(rows_ptr="*i64", norm_ptr="*fp32", lr_ptr="*fp32", weight_decay="fp32", momentum="fp32",
               gamma="fp32", delta="fp32", beta="fp32")
    consts = dict(RULE=2, HAS_MOMENTUM=True, NESTEROV=nesterov, COUPLED=False, P_DTYPE=dtype, G_DTYPE=dtype,
                  M_DTYPE=m_dtype, ALIGNED=True, BLOCK=clipped_update.BLOCK)
    return Variant(f"clipped_sgd dgclip+momentum p/g={dtype} m={m_dtype}", clipped_update._clipped_sgd_kernel,
                   sig, consts, clipped_update.NUM_WARPS, 3, 2)


def variants() -> list[Variant]:
    out = []
    for dtype in (tl.float32, tl.bfloat16):
        out.append(Variant(f"global_norm sum_squares {dtype}", global_norm._sum_squares_kernel,
                           dict(rows_ptr="*i64", partials_ptr="*fp32", first_row="i32"),
                           dict(DTYPE=dtype, ALIGNED=True, BLOCK=global_norm.BLOCK), global_norm.NUM_WARPS, 1, 0))
    out += [_sgd(tl.float32), _sgd(tl.bfloat16, nesterov=True)]
    out.append(Variant("lerp_momentum d=fp32 g=bf16 guarded", lerp_momentum._lerp_kernel,
                       dict(rows_ptr="*i64", guard_ptr="*fp32", keep="fp32", alpha="fp32"),
                       dict(HAS_GUARD=True, D_DTYPE=tl.float32, G_DTYPE=tl.bfloat16, ALIGNED=True,
                            BLOCK=lerp_momentum.BLOCK),
                       lerp_momentum.NUM_WARPS, 2, 1))
    out.append(Variant("scion_inner_product d=fp32 dir=bf16 x=fp32", scion_inner_product._inner_product_kernel,
                       dict(rows_ptr="*i64", radii_ptr="*fp32", partials_ptr="*fp32", first_row="i32"),
                       dict(HAS_PARAMS=True, D_DTYPE=tl.float32, V_DTYPE=tl.bfloat16, X_DTYPE=tl.float32,
                            ALIGNED=True, BLOCK=scion_inner_product.BLOCK), scion_inner_product.NUM_WARPS, 3, 0))
    out.append(Variant("scion_update x=fp32 dir=bf16 constrained", scion_update._scion_update_kernel,
                       dict(rows_ptr="*i64", radii_ptr="*fp32", scale_ptr="*fp32", lr="fp32"),
                       dict(CONSTRAINED=True, X_DTYPE=tl.float32, V_DTYPE=tl.bfloat16, ALIGNED=True,
                            BLOCK=scion_update.BLOCK), scion_update.NUM_WARPS, 2, 1))
    out.append(Variant("sum_partials (second stage)", sum_partials_kernel,
                       dict(partials_ptr="*fp32", out_ptr="*fp32", num_partials="i32"),
                       dict(SQRT=True, BLOCK=1024), 4, 0, 0))
    return out


def compile_ptx(variant: Variant, arch: int = 90) -> str:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    signature = dict(variant.signature, **{k: "constexpr" for k in variant.constexprs})
    source = ASTSource(fn=variant.kernel, signature=signature, constexprs=variant.constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": variant.num_warps})
    return compiled.asm["ptx"]


def loop_bodies(ptx: str) -> list[str]:
    """Text of every loop in the PTX: from a label to a later branch back to it."""
    lines = ptx.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^(\$L__\w+):", line.strip()))}
    bodies = []
    for j, line in enumerate(lines):
        m = re.search(r"\bbra(?:\.uni)?\s+(\$L__\w+);", line)
        if m and m.group(1) in labels and labels[m.group(1)] < j:
            bodies.append("\n".join(lines[labels[m.group(1)]:j + 1]))
    return bodies


def find_ptxas(ptx: str) -> str | None:
    """A ptxas from the triton wheel that accepts this PTX's ``.version`` (the newest one first)."""
    version = re.search(r"^\.version\s+(\d+)\.(\d+)", ptx, re.M)
    needed = (int(version.group(1)), int(version.group(2))) if version else (0, 0)
    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for name in ("ptxas-blackwell", "ptxas"):
        path = os.path.join(bin_dir, name)
        if not os.access(path, os.X_OK):
            continue
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        release = re.search(r"release (\d+)\.(\d+)", out)
        # CUDA 12.x ships PTX ISA 8.x, CUDA 13.x ships 9.x: the major ISA version is CUDA major - 4.
        if release and (int(release.group(1)) - 4, int(release.group(2))) >= needed:
            return path
    return None


def ptxas_report(ptx: str, arch: str = "sm_90a") -> dict | None:
    """Registers and spill bytes reported by ``ptxas -v``; None when no suitable ptxas is installed."""
    ptxas = find_ptxas(ptx)
    if ptxas is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, f"-arch={arch}", "-v", src, "-o", dst], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed: {proc.stderr[-2000:]}")
    log = proc.stderr + proc.stdout
    return dict(registers=int(re.search(r"Used (\d+) registers", log).group(1)),
                spill_stores=int(re.search(r"(\d+) bytes spill stores", log).group(1)),
                spill_loads=int(re.search(r"(\d+) bytes spill loads", log).group(1)))


def main() -> None:
    print(f"{'kernel variant':55s} {'v4 ld':>5s} {'v4 st':>5s} {'regs':>5s} {'spills':>6s}")
    for v in variants():
        ptx = compile_ptx(v)
        loops = "\n".join(loop_bodies(ptx))
        report = ptxas_report(ptx) or {}
        spills = report.get("spill_stores", -1) + report.get("spill_loads", 0)
        print(f"{v.name:55s} {loops.count('ld.global.v4'):5d} {loops.count('st.global.v4'):5d} "
              f"{report.get('registers', -1):5d} {spills:6d}")


if __name__ == "__main__":
    main()
