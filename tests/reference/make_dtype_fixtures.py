#!/usr/bin/env python3
"""Write tests/data/dtype/conversions.safetensors: torch's dtype conversions for test_weights.c.

Usage:
    python3 tests/reference/make_dtype_fixtures.py --out tests/data/dtype

For each stored dtype S in (F32, BF16, F16) the file holds a source tensor `src_S` of edge values
(ties at each target's rounding boundary, subnormals of every format, values past the f16 range,
+-inf, NaN, negative zero, the largest finite values) and, for each in-memory dtype D, `S_to_D` =
`src_S.to(D)` as torch computes it. test_weights.c loads every `src_S` as every D through the
engine's weight loader and compares bit for bit (a NaN may be any NaN). Only torch and safetensors
are needed (PyPI); the values are fixed, so a rerun reproduces the file exactly.
"""

import argparse
import os

import torch
from safetensors.torch import save_file

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def f32_bits(bits):
    return torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)


def u16_bits(bits, dtype):
    return torch.tensor(bits, dtype=torch.int32).to(torch.int16).view(dtype)


def sources():
    inf, nan = float("inf"), float("nan")
    f32 = torch.tensor(
        [0.0, -0.0, 1.0, -1.0, 0.1, -2.5, 3.14159265, 1e-3, 123456.789,
         # bf16 ties (8 significant bits): 1 + 2^-8 rounds down to even, 1 + 3 * 2^-8 up
         1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1 + 2**-8 + 2**-20, 1 + 2**-8 - 2**-20,
         # f16 ties (11 significant bits)
         1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-20, 2048 + 1, 2048 + 3,
         # f16 range: largest finite, the last value that rounds to it, the first that overflows
         65504.0, 65519.996, 65520.0, -65520.0, 1e5, -1e5, 3.0e38, -3.4028235e38,
         # f16 subnormals and underflow: 2^-24 is the smallest, 2^-25 ties to 0, 3 * 2^-25 to 2^-23
         2**-14, 2**-15, 2**-24, 2**-25, 3 * 2**-25, 2**-25 + 2**-40, 2**-26, -(2**-24), 6.0e-8,
         inf, -inf, nan],
        dtype=torch.float32)
    # f32 subnormals (kept by bf16, flushed to zero by f16) and bit patterns around a bf16 tie
    f32 = torch.cat([f32, f32_bits([0x00000001, 0x80000001, 0x007FFFFF, 0x00400000, 0x00008000,
                                     0x00018000, 0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x7F7F8000,
                                     0x7F7F7FFF, 0xFFC00000, 0x7FC00001, 0x7F800001])])
    torch.manual_seed(7)
    f32 = torch.cat([f32, torch.randn(24) * 10, torch.randn(8) * 1e-6])

    bf16 = torch.cat([
        u16_bits([0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x3F80, 0xBF80, 0x3F81,
                  0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7F81,
                  0x477F, 0x4780, 0x4781, 0xC780,  # around 65504 / 65536: f16 overflow
                  0x3380, 0x33C0, 0x3300, 0x3340, 0x3440, 0x33A0, 0x3870],  # f16 subnormal ties
                 torch.bfloat16),
        (torch.randn(24) * 100).to(torch.bfloat16)])

    f16 = torch.cat([
        u16_bits([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                  0x7E00, 0xFE00, 0x7C01,
                  0x3C00, 0x3C04, 0x3C0C, 0x3C05, 0x3C03, 0xBC04, 0x3C02, 0x3C06,  # bf16 ties
                  0x0003, 0x0203, 0x5A5A, 0x1234],
                 torch.float16),
        (torch.randn(24) * 100).to(torch.float16)])
    return {"F32": f32, "BF16": bf16, "F16": f16}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/data/dtype")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tensors = {}
    for s, src in sources().items():
        assert src.dtype == DTYPES[s]
        tensors[f"src_{s}"] = src.contiguous()
        for d, dt in DTYPES.items():
            tensors[f"{s}_to_{d}"] = src.to(dt).clone()  # .to(same dtype) returns src itself
    path = os.path.join(args.out, "conversions.safetensors")
    save_file(tensors, path, metadata={"torch": torch.__version__,
                                       "generator": "tests/reference/make_dtype_fixtures.py"})
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
