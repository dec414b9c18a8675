"""Builds the compiled kernels; everything else is declared in pyproject.toml.

Small C extensions, no numpy or librdkafka headers (they take buffers; librdkafka's functions are looked up
at run time in the copy confluent_kafka loaded), so a fresh machine needs only a C compiler:
- metrictank.chunk._codec: the Gorilla/SeriesLong chunk codec (whole batches of chunks per call);
- metrictank.tank._tank: the per-point tank kernel (ring, incremental encoding, rollups) over columnar state;
- metrictank.index._keytable: the index's key table probed for a whole batch, the GIL released;
- metrictank.index._tree: the new leaves of a batch set in the path tree;
- metrictank.schema._mdata: MetricData messages of the common (Go) shape decoded without msgpack's dict;
- metrictank.schema._points: wire points (arrays and single) written into point records in one pass;
- metrictank.input._rdbatch: whole-batch Kafka consumption as flat buffers, the GIL released.
"""

from setuptools import Extension, setup

_FLAGS = ["-O3", "-std=c11", "-fno-strict-aliasing"]

setup(
    ext_modules=[
        Extension(
            "metrictank.chunk._codec", sources=["metrictank/chunk/_codec.c"], extra_compile_args=_FLAGS
        ),
        Extension("metrictank.tank._tank", sources=["metrictank/tank/_tank.c"], extra_compile_args=_FLAGS),
        Extension(
            "metrictank.index._keytable", sources=["metrictank/index/_keytable.c"], extra_compile_args=_FLAGS
        ),
        Extension("metrictank.index._tree", sources=["metrictank/index/_tree.c"], extra_compile_args=_FLAGS),
        Extension(
            "metrictank.schema._mdata", sources=["metrictank/schema/_mdata.c"], extra_compile_args=_FLAGS
        ),
        Extension(
            "metrictank.schema._points", sources=["metrictank/schema/_points.c"], extra_compile_args=_FLAGS
        ),
        Extension(
            "metrictank.input._rdbatch",
            sources=["metrictank/input/_rdbatch.c"],
            extra_compile_args=_FLAGS,
            libraries=["dl", "pthread"],
        ),
    ]
)
