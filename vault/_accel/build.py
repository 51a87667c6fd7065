"""cffi builder of vault._accel._lib (API mode, compiled when the package is installed:
setup.py names it in cffi_modules). Needs a C compiler and OpenSSL's headers (Debian:
libssl-dev, installed by `make setup`); links the system libcrypto for EVP ChaCha20-Poly1305.

    python vault/_accel/build.py      # builds it in place (the Makefile runs `pip install -e .`,
                                      # which builds _lib.abi3.so; an in-place build shadows it)
"""
from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef(
    """
    int tl_sha_ni(void);
    int tl_sha256_lanes(int n, const uint8_t *const *msgs, const size_t *lens, uint8_t *out);
    long tl_stream_seal(const uint8_t *key, uint64_t first, const uint8_t *plain, size_t len,
                        int final, uint8_t *out);
    long tl_stream_open(const uint8_t *key, uint64_t first, const uint8_t *ct, size_t count, uint8_t *out);
    int tl_write_block(const char *tmp, const char *final, const char *dir, const uint8_t *data, size_t len,
                       int direct, int sync);
    """
)
ffibuilder.set_source(
    "vault._accel._lib",
    (HERE / "_accel.c").read_text(),
    libraries=["crypto"],
    extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent.parent), verbose=False)
