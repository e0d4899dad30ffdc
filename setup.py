"""Build hook for the one compiled module; all metadata lives in pyproject.toml.

``fedrx.secagg._bitpack_native`` (secagg/_bitpack_native.c) holds the m-bit pack and
unpack-add kernels of secure aggregation. It is optional: without a C compiler the build
goes on and fedrx.secagg.bitpack uses its numpy implementation (same wire format, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fedrx.secagg._bitpack_native",
            sources=["secagg/_bitpack_native.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
