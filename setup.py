"""Build hook for the C engine.

All metadata lives in pyproject.toml. This file exists only because cffi's setuptools
integration is the ``cffi_modules`` keyword of ``setup()``, which pyproject.toml cannot express.
"""

from setuptools import setup

setup(cffi_modules=["cffi_build/build_engine.py:ffibuilder"])
