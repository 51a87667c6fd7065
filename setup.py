"""Only for the native accelerator: setuptools builds vault/_accel/_lib from the cffi
builder named here (cffi_modules needs setup.py); everything else is in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["vault/_accel/build.py:ffibuilder"])
