/* TwinLedger vault accelerator: the two hot loops of seal, in one GIL-free call each.
 *
 * Why by hand (see vault/_accel/__init__.py): no maintained library offers either through
 * a public API.
 *   - tl_sha256_lanes: SHA-256 of up to 4 independent messages at once with the x86 SHA
 *     extensions. One SHA-256 stream is bound by the latency of sha256rnds2; interleaving
 *     independent messages fills the unit (256 MiB as 1 MiB leaves on one core of these
 *     machines: 0.14 s one at a time with OpenSSL, 0.08 s four at a time). OpenSSL has the
 *     same idea internally (sha256_multi_block) but does not export it. The CIDs of a
 *     seal's leaves are exactly such independent messages. SHA-256 is public and keyless
 *     here (it hashes ciphertext), so there is no secret to leak through timing.
 *   - tl_stream_seal: a run of consecutive age STREAM chunks (ChaCha20-Poly1305 through
 *     OpenSSL's EVP interface, nonce = 11-byte big-endian counter || last flag) in one call
 *     instead of one Python call per 64 KiB chunk.
 * Both are checked against hashlib / cryptography by tests/vault/test_accel.py, and
 * vault/_accel/__init__.py runs a known-answer test before it uses them.
 */
#include <stdint.h>
#include <string.h>
#include <cpuid.h>
#include <immintrin.h>
#include <openssl/evp.h>

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
static const uint32_t IV256[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define MAX_LANES 4
#define SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

static int sha_ni, avx; /* set once by tl_sha_ni() (CPUID traps to the hypervisor in a VM) */

/* 1 if this CPU has the SHA extensions (and the SSSE3/SSE4.1 the kernel also uses). */
int tl_sha_ni(void) {
    unsigned a, b, c, d;
    sha_ni = avx = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
        return 0;
    avx = (c & bit_AVX) && (c & bit_OSXSAVE);
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    sha_ni = (b & bit_SHA) != 0;
    return sha_ni;
}

/* The SHA extensions exist only in legacy SSE encoding. After AVX or AVX-512 code that
 * left the upper halves of the vector registers dirty (OpenSSL's ChaCha20 in the same
 * process does), each such instruction merges with those upper bits: on these machines
 * SHA-256 ran at 40% of its speed. vzeroupper marks them clean. */
__attribute__((target("avx"))) static void clean_upper(void) { _mm256_zeroupper(); }

/* The state of one lane in the SHA-NI register layout: s0 = ABEF, s1 = CDGH. */
typedef struct { __m128i s0, s1; } lane_t;

SHA_TARGET static lane_t lane_load(const uint32_t h[8]) {
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1); /* CDAB */
    __m128i u = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); /* EFGH */
    lane_t l = {_mm_alignr_epi8(t, u, 8), _mm_blend_epi16(u, t, 0xF0)};
    return l;
}

SHA_TARGET static void lane_store(lane_t l, uint32_t h[8]) {
    __m128i t = _mm_shuffle_epi32(l.s0, 0x1B);
    __m128i u = _mm_shuffle_epi32(l.s1, 0xB1);
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(t, u, 0xF0));
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(u, t, 8));
}

/* `blocks` 64-byte blocks of each of N messages, the lanes' instructions interleaved.
 * Message schedule, four words at a time (W_i = words 4i..4i+3, i >= 4):
 *   W_i = msg2(msg1(W_{i-4}, W_{i-3}) + alignr(W_{i-1}, W_{i-2}, 4), W_{i-1}). */
#define DEFINE_BLOCKS(N)                                                                     \
    SHA_TARGET static void blocks_x##N(lane_t *st, const uint8_t **p, size_t blocks) {       \
        const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);  \
        lane_t s[N];                                                                          \
        const uint8_t *q[N];                                                                  \
        for (int l = 0; l < N; l++) { s[l] = st[l]; q[l] = p[l]; }                            \
        while (blocks--) {                                                                    \
            __m128i w[N][4];                                                                  \
            lane_t saved[N];                                                                  \
            for (int l = 0; l < N; l++) saved[l] = s[l];                                      \
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) {                           \
                __m128i k = _mm_loadu_si128((const __m128i *)&K256[4 * i]);                   \
                _Pragma("GCC unroll 4") for (int l = 0; l < N; l++) {                         \
                    if (i < 4) {                                                              \
                        w[l][i] = _mm_shuffle_epi8(                                           \
                            _mm_loadu_si128((const __m128i *)(q[l] + 16 * i)), mask);         \
                    } else {                                                                  \
                        __m128i x = _mm_sha256msg1_epu32(w[l][i & 3], w[l][(i + 1) & 3]);     \
                        x = _mm_add_epi32(x, _mm_alignr_epi8(w[l][(i + 3) & 3],               \
                                                             w[l][(i + 2) & 3], 4));          \
                        w[l][i & 3] = _mm_sha256msg2_epu32(x, w[l][(i + 3) & 3]);             \
                    }                                                                         \
                    __m128i m = _mm_add_epi32(w[l][i & 3], k);                                \
                    s[l].s1 = _mm_sha256rnds2_epu32(s[l].s1, s[l].s0, m);                     \
                    s[l].s0 = _mm_sha256rnds2_epu32(s[l].s0, s[l].s1,                         \
                                                    _mm_shuffle_epi32(m, 0x0E));              \
                }                                                                             \
            }                                                                                 \
            for (int l = 0; l < N; l++) {                                                     \
                s[l].s0 = _mm_add_epi32(s[l].s0, saved[l].s0);                                \
                s[l].s1 = _mm_add_epi32(s[l].s1, saved[l].s1);                                \
                q[l] += 64;                                                                   \
            }                                                                                 \
        }                                                                                     \
        for (int l = 0; l < N; l++) { st[l] = s[l]; p[l] = q[l]; }                            \
    }
DEFINE_BLOCKS(1)
DEFINE_BLOCKS(2)
DEFINE_BLOCKS(3)
DEFINE_BLOCKS(4)

SHA_TARGET static void blocks_n(int n, lane_t *st, const uint8_t **p, size_t blocks) {
    switch (n) {
    case 1: blocks_x1(st, p, blocks); break;
    case 2: blocks_x2(st, p, blocks); break;
    case 3: blocks_x3(st, p, blocks); break;
    default: blocks_x4(st, p, blocks); break;
    }
}

/* SHA-256 of n (1..4) messages: digest l (32 bytes) of msgs[l] (lens[l] bytes) goes to
 * out + 32 * l. The full blocks all lanes have in common run interleaved; each lane's
 * remaining blocks and its padding (0x80, zeros, 64-bit big-endian bit length) run alone.
 * Returns 0, or -1 if n is out of range or the CPU lacks the SHA extensions. */
SHA_TARGET int tl_sha256_lanes(int n, const uint8_t *const *msgs, const size_t *lens, uint8_t *out) {
    if (n < 1 || n > MAX_LANES || !sha_ni)
        return -1;
    if (avx)
        clean_upper();
    lane_t st[MAX_LANES] = {{{0}}};
    const uint8_t *p[MAX_LANES] = {0};
    size_t common = SIZE_MAX;
    for (int l = 0; l < n; l++) {
        st[l] = lane_load(IV256);
        p[l] = msgs[l];
        if (lens[l] / 64 < common) common = lens[l] / 64;
    }
    blocks_n(n, st, p, common);
    for (int l = 0; l < n; l++) {
        size_t rest = lens[l] - common * 64;
        blocks_x1(&st[l], &p[l], rest / 64);
        rest %= 64;
        uint8_t pad[128] = {0};
        memcpy(pad, p[l], rest);
        pad[rest] = 0x80;
        size_t padded = rest < 56 ? 64 : 128;
        uint64_t bits = (uint64_t)lens[l] * 8;
        for (int i = 0; i < 8; i++) pad[padded - 1 - i] = (uint8_t)(bits >> (8 * i));
        const uint8_t *pp = pad;
        blocks_x1(&st[l], &pp, padded / 64);
        uint32_t h[8];
        lane_store(st[l], h);
        for (int i = 0; i < 8; i++) {
            out[32 * l + 4 * i + 0] = (uint8_t)(h[i] >> 24);
            out[32 * l + 4 * i + 1] = (uint8_t)(h[i] >> 16);
            out[32 * l + 4 * i + 2] = (uint8_t)(h[i] >> 8);
            out[32 * l + 4 * i + 3] = (uint8_t)h[i];
        }
    }
    return 0;
}

/* Encrypt the age STREAM chunks first, first + 1, ... covering len plaintext bytes
 * (every chunk 65536 bytes but the last, which has 1..65536, or 0 when len == 0) under the
 * 32-byte payload key. Chunk j's nonce is j as 11 bytes big-endian, then 0x01 if it is the
 * run's last chunk and `final`, else 0x00. out receives each chunk's ciphertext followed by
 * its 16-byte tag (len + 16 * chunks bytes). Returns the bytes written, or < 0 on an
 * OpenSSL failure (nothing usable is in out then). The 88-bit counter's top 3 bytes stay 0:
 * 2^64 chunks of 64 KiB is far past any file. */
long tl_stream_seal(const uint8_t *key, uint64_t first, const uint8_t *plain, size_t len, int final,
                    uint8_t *out) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    long written = 0;
    size_t off = 0;
    uint64_t j = first;
    if (ctx == NULL)
        return -1;
    if (EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, NULL) != 1) {
        written = -2;
        goto done;
    }
    do {
        size_t n = len - off > 65536 ? 65536 : len - off;
        uint8_t nonce[12] = {0};
        int outl = 0, finl = 0;
        for (int i = 0; i < 8; i++) nonce[10 - i] = (uint8_t)(j >> (8 * i)); /* bytes 0-2 stay 0 */
        nonce[11] = (final && off + n == len) ? 1 : 0;
        if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
            (n && EVP_EncryptUpdate(ctx, out + written, &outl, plain + off, (int)n) != 1) ||
            (size_t)outl != n || EVP_EncryptFinal_ex(ctx, out + written + outl, &finl) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, out + written + n) != 1) {
            written = -3;
            goto done;
        }
        written += (long)n + 16;
        off += n;
        j++;
    } while (off < len);
done:
    EVP_CIPHER_CTX_free(ctx);
    return written;
}
