"""Comparing with numbers produced by another program on another machine.

The sd-scripts reference values in the tests were computed once, on one CPU. torch's float32
kernels (randn's vectorised Box-Muller, exp/log/sqrt, reductions) take a different instruction
path on AVX2 and AVX-512 machines and can round the last bit differently, so the same formula
gives values a few units in the last place apart. Those comparisons allow exactly that much; the
reproducibility promise (same machine, same bytes) is tested with exact equality elsewhere.
"""

import pytest

#: a few float32 ulps (float32 has 24 bits: one ulp is about 6e-8 relative)
FLOAT32_REL = 1e-6


def float32_close(expected):
    """`actual == float32_close(expected)`: equal up to float32 rounding, for a number or a list."""
    return pytest.approx(expected, rel=FLOAT32_REL, abs=1e-7)
