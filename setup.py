"""Builds the compiled kernels; everything else is declared in pyproject.toml.

Two small C extensions, no numpy headers (they take buffers), so a fresh machine needs only a C compiler:
- metrictank.chunk._codec: the Gorilla/SeriesLong chunk codec (whole batches of chunks per call);
- metrictank.tank._tank: the per-point tank kernel (ring, incremental encoding, rollups) over columnar state.
"""

from setuptools import Extension, setup

_FLAGS = ["-O3", "-std=c11", "-fno-strict-aliasing"]

setup(
    ext_modules=[
        Extension("metrictank.chunk._codec", sources=["metrictank/chunk/_codec.c"], extra_compile_args=_FLAGS),
        Extension("metrictank.tank._tank", sources=["metrictank/tank/_tank.c"], extra_compile_args=_FLAGS),
    ]
)
