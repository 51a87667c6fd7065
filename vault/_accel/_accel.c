/* TwinLedger vault accelerator: the two hot loops of seal, in one GIL-free call each.
 *
 * Why by hand (see vault/_accel/__init__.py): no maintained library offers either through
 * a public API.
 *   - tl_sha256_lanes: SHA-256 of up to 16 independent messages at once. One SHA-256
 *     stream is bound by the latency of sha256rnds2; interleaving up to 4 messages with the
 *     x86 SHA extensions fills that unit, and with AVX-512 16 messages run side by side, one
 *     per 32-bit lane of the vector registers (256 MiB as 1 MiB leaves on one core: one at a
 *     time with OpenSSL 0.14-0.24 s, 4 interleaved with SHA-NI 0.08-0.12 s, 16 lanes of
 *     AVX-512 0.07 s on the Intel machines here). OpenSSL has the same idea internally
 *     (sha256_multi_block, AVX2 at most) but does not export it. The CIDs of a seal's leaves
 *     are exactly such independent messages. SHA-256 is public and keyless here (it hashes
 *     ciphertext), so there is no secret to leak through timing.
 *   - tl_stream_seal / tl_stream_open: a run of consecutive age STREAM chunks
 *     (ChaCha20-Poly1305 through OpenSSL's EVP interface, nonce = 11-byte big-endian
 *     counter || last flag) in one call instead of one Python call per 64 KiB chunk: each
 *     such call drops and retakes the GIL, and with other threads busy in Python a thread
 *     can wait a switch interval (5 ms) to get it back, 4,096 times per 256 MiB.
 * Both are checked against hashlib / cryptography by tests/vault/test_accel.py, and
 * vault/_accel/__init__.py runs a known-answer test before it uses them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* O_DIRECT (Python.h, included first by cffi, defines it too) */
#endif
#include <stdint.h>
#include <string.h>
#include <cpuid.h>
#include <immintrin.h>
#include <openssl/evp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

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

#define MAX_LANES 16 /* what tl_sha256_lanes takes; SHA-NI interleaves up to NI_LANES */
#define NI_LANES 4
#define SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))
#define X16_TARGET __attribute__((target("avx512f,avx512bw")))

/* Set once by tl_sha_ni() (CPUID traps to the hypervisor in a VM). */
static int sha_ni, avx, x16;

static unsigned long long xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

/* How many messages tl_sha256_lanes hashes at once on this CPU: 0 without the SHA
 * extensions (or the SSSE3/SSE4.1 they come with), 4 with them, 16 when AVX-512F/BW is
 * there too and the OS saves the zmm registers (XCR0: SSE, AVX, opmask, zmm state). */
int tl_sha_ni(void) {
    unsigned a, b, c, d;
    sha_ni = avx = x16 = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
        return 0;
    int osxsave = (c & bit_OSXSAVE) != 0;
    unsigned long long xcr = osxsave ? xcr0() : 0;
    avx = (c & bit_AVX) && osxsave && (xcr & 0x6) == 0x6;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    sha_ni = (b & bit_SHA) != 0;
    x16 = sha_ni && avx && (b & bit_AVX512F) && (b & bit_AVX512BW) && (xcr & 0xE6) == 0xE6;
    return x16 ? MAX_LANES : sha_ni ? NI_LANES : 0;
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


/* 16 messages, one per 32-bit lane of the zmm registers: the textbook SHA-256 round
 * (FIPS 180-4 6.2.2) on 16 lanes at once, Ch/Maj/Sigma as ternary-logic ops. Each block
 * loads 64 bytes of every message and transposes them (16 x 16 words) into W[0..15]. */
#define V_ROR _mm512_ror_epi32
#define V_ADD _mm512_add_epi32
#define V_XOR3(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0x96)
#define V_S0(a) V_XOR3(V_ROR(a, 2), V_ROR(a, 13), V_ROR(a, 22))
#define V_S1(e) V_XOR3(V_ROR(e, 6), V_ROR(e, 11), V_ROR(e, 25))
#define V_CH(e, f, g) _mm512_ternarylogic_epi32(e, f, g, 0xCA)
#define V_MAJ(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0xE8)
#define V_s0(x) V_XOR3(V_ROR(x, 7), V_ROR(x, 18), _mm512_srli_epi32(x, 3))
#define V_s1(x) V_XOR3(V_ROR(x, 17), V_ROR(x, 19), _mm512_srli_epi32(x, 10))
#define V_RND(a, b, c, d, e, f, g, h, t)                                                       \
    do {                                                                                       \
        if ((t) >= 16)                                                                         \
            w[(t) & 15] = V_ADD(V_ADD(V_s1(w[((t) - 2) & 15]), w[((t) - 7) & 15]),             \
                                V_ADD(V_s0(w[((t) - 15) & 15]), w[(t) & 15]));                 \
        __m512i t1 = V_ADD(V_ADD(h, V_S1(e)),                                                  \
                           V_ADD(V_CH(e, f, g), V_ADD(w[(t) & 15], _mm512_set1_epi32((int)K256[t])))); \
        d = V_ADD(d, t1);                                                                      \
        h = V_ADD(t1, V_ADD(V_S0(a), V_MAJ(a, b, c)));                                         \
    } while (0)

X16_TARGET static void x16_words(__m512i w[16], const uint8_t *const p[16], size_t off) {
    __m512i r[16], t[16], u[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512((const void *)(p[i] + off));
    for (int k = 0; k < 8; k++) { /* per 128-bit lane q: words 4q..4q+3 of rows 2k, 2k+1 */
        t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) { /* u[4k + m], lane q: word 4q + m of rows 4k..4k+3 */
        u[4 * k + 0] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
        u[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
    }
    const __m512i bswap = _mm512_broadcast_i32x4(_mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL));
    for (int m = 0; m < 4; m++) { /* a 4 x 4 transpose of 128-bit lanes, then big-endian */
        __m512i v0 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0x44);
        __m512i v1 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0xEE);
        __m512i v2 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0x44);
        __m512i v3 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0xEE);
        w[0 + m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4(v0, v2, 0x88), bswap);
        w[4 + m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4(v0, v2, 0xDD), bswap);
        w[8 + m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4(v1, v3, 0x88), bswap);
        w[12 + m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4(v1, v3, 0xDD), bswap);
    }
}

/* `blocks` 64-byte blocks of each of 16 messages; state[i][l] is word i of lane l. */
X16_TARGET static void blocks_x16(uint32_t state[8][16], const uint8_t *const p[16], size_t blocks) {
    __m512i a = _mm512_loadu_si512(state[0]), b = _mm512_loadu_si512(state[1]),
            c = _mm512_loadu_si512(state[2]), d = _mm512_loadu_si512(state[3]),
            e = _mm512_loadu_si512(state[4]), f = _mm512_loadu_si512(state[5]),
            g = _mm512_loadu_si512(state[6]), h = _mm512_loadu_si512(state[7]);
    for (size_t n = 0; n < blocks; n++) {
        __m512i w[16];
        x16_words(w, p, 64 * n);
        __m512i sa = a, sb = b, sc = c, sd = d, se = e, sf = f, sg = g, sh = h;
        for (int t = 0; t < 64; t += 8) {
            V_RND(a, b, c, d, e, f, g, h, t);
            V_RND(h, a, b, c, d, e, f, g, t + 1);
            V_RND(g, h, a, b, c, d, e, f, t + 2);
            V_RND(f, g, h, a, b, c, d, e, t + 3);
            V_RND(e, f, g, h, a, b, c, d, t + 4);
            V_RND(d, e, f, g, h, a, b, c, t + 5);
            V_RND(c, d, e, f, g, h, a, b, t + 6);
            V_RND(b, c, d, e, f, g, h, a, t + 7);
        }
        a = V_ADD(a, sa); b = V_ADD(b, sb); c = V_ADD(c, sc); d = V_ADD(d, sd);
        e = V_ADD(e, se); f = V_ADD(f, sf); g = V_ADD(g, sg); h = V_ADD(h, sh);
    }
    _mm512_storeu_si512(state[0], a); _mm512_storeu_si512(state[1], b);
    _mm512_storeu_si512(state[2], c); _mm512_storeu_si512(state[3], d);
    _mm512_storeu_si512(state[4], e); _mm512_storeu_si512(state[5], f);
    _mm512_storeu_si512(state[6], g); _mm512_storeu_si512(state[7], h);
    _mm256_zeroupper(); /* the SHA-NI tails come next: legacy SSE */
}

SHA_TARGET static void blocks_n(int n, lane_t *st, const uint8_t **p, size_t blocks) {
    switch (n) {
    case 1: blocks_x1(st, p, blocks); break;
    case 2: blocks_x2(st, p, blocks); break;
    case 3: blocks_x3(st, p, blocks); break;
    default: blocks_x4(st, p, blocks); break;
    }
}

/* The padding block(s) of lane l (its last len % 64 bytes at p, 0x80, zeros, the 64-bit
 * big-endian bit length), then its digest to out. */
SHA_TARGET static void finish_lane(lane_t *st, const uint8_t *p, size_t len, uint8_t *out) {
    size_t rest = len % 64;
    uint8_t pad[128] = {0};
    memcpy(pad, p, rest);
    pad[rest] = 0x80;
    size_t padded = rest < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) pad[padded - 1 - i] = (uint8_t)(bits >> (8 * i));
    const uint8_t *pp = pad;
    blocks_x1(st, &pp, padded / 64);
    uint32_t h[8];
    lane_store(*st, h);
    for (int i = 0; i < 8; i++) {
        out[4 * i + 0] = (uint8_t)(h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h[i] >> 8);
        out[4 * i + 3] = (uint8_t)h[i];
    }
}

/* Up to 4 messages with SHA-NI: the blocks all lanes still have run interleaved; a lane
 * whose full blocks are done drops out and the others go on together. */
SHA_TARGET static void lanes_ni(int n, lane_t *st, const uint8_t **p, const size_t *left) {
    size_t done = 0;
    for (;;) {
        int idx[NI_LANES], k = 0;
        size_t step = SIZE_MAX;
        for (int l = 0; l < n; l++)
            if (left[l] > done) {
                idx[k++] = l;
                if (left[l] - done < step) step = left[l] - done;
            }
        if (k == 0)
            return;
        lane_t s[NI_LANES];
        const uint8_t *q[NI_LANES];
        for (int i = 0; i < k; i++) { s[i] = st[idx[i]]; q[i] = p[idx[i]]; }
        blocks_n(k, s, q, step);
        for (int i = 0; i < k; i++) { st[idx[i]] = s[i]; p[idx[i]] = q[i]; }
        done += step;
    }
}

/* 5..16 messages with AVX-512 the same way: lanes that are done (or unused) read along
 * with a live lane, and their results are dropped. */
X16_TARGET static void lanes_x16(int n, lane_t *st, const uint8_t **p, const size_t *left) {
    uint32_t state[8][16] __attribute__((aligned(64))) = {{0}};
    const uint8_t *q[16];
    size_t done = 0;
    for (int l = 0; l < n; l++) {
        uint32_t h[8];
        lane_store(st[l], h);
        for (int i = 0; i < 8; i++) state[i][l] = h[i];
    }
    for (;;) {
        int live = -1;
        size_t step = SIZE_MAX;
        for (int l = 0; l < n; l++)
            if (left[l] > done) {
                live = l;
                if (left[l] - done < step) step = left[l] - done;
            }
        if (live < 0)
            break;
        for (int l = 0; l < 16; l++) q[l] = (l < n && left[l] > done) ? p[l] : p[live];
        blocks_x16(state, q, step);
        for (int l = 0; l < n; l++)
            if (left[l] > done) p[l] += 64 * step;
        done += step;
        for (int l = 0; l < n; l++) /* keep the lanes that just finished */
            if (left[l] == done) {
                uint32_t h[8];
                for (int i = 0; i < 8; i++) h[i] = state[i][l];
                st[l] = lane_load(h);
            }
    }
}

/* SHA-256 of n (1..16) messages: digest l (32 bytes) of msgs[l] (lens[l] bytes) goes to
 * out + 32 * l. Their full blocks run side by side (AVX-512 when there are more than 4 and
 * the CPU has it, else SHA-NI in groups of 4); each lane's padding runs alone.
 * Returns 0, or -1 if n is out of range or the CPU lacks the SHA extensions. */
SHA_TARGET int tl_sha256_lanes(int n, const uint8_t *const *msgs, const size_t *lens, uint8_t *out) {
    if (n < 1 || n > MAX_LANES || !sha_ni)
        return -1;
    if (avx)
        clean_upper();
    lane_t st[MAX_LANES];
    const uint8_t *p[MAX_LANES];
    size_t left[MAX_LANES];
    for (int l = 0; l < n; l++) {
        st[l] = lane_load(IV256);
        p[l] = msgs[l];
        left[l] = lens[l] / 64;
    }
    if (n > NI_LANES && x16) {
        lanes_x16(n, st, p, left);
    } else {
        for (int g = 0; g < n; g += NI_LANES)
            lanes_ni(n - g < NI_LANES ? n - g : NI_LANES, st + g, p + g, left + g);
    }
    for (int l = 0; l < n; l++)
        finish_lane(&st[l], p[l], lens[l], out + 32 * l);
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

/* Decrypt `count` consecutive non-final age STREAM chunks first, first + 1, ... (each
 * 65552 bytes of ciphertext and tag, back to back in ct) into out (65536 bytes each) under
 * the 32-byte payload key: tl_stream_seal's inverse for the chunks that more ciphertext
 * follows. Returns how many authenticated before the first that did not: count when all
 * did; else that chunk's index, and its plaintext and what follows in out are garbage
 * (the caller opens that chunk again on its own to say why, and releases nothing past
 * it). < 0 on an OpenSSL failure. OpenSSL compares the tags in constant time. */
long tl_stream_open(const uint8_t *key, uint64_t first, const uint8_t *ct, size_t count, uint8_t *out) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    long done = 0;
    if (ctx == NULL)
        return -1;
    if (EVP_DecryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, NULL) != 1) {
        done = -2;
        goto end;
    }
    for (size_t k = 0; k < count; k++) {
        const uint8_t *chunk = ct + k * 65552;
        uint8_t *plain = out + k * 65536;
        uint8_t nonce[12] = {0}, tag[16];
        uint64_t j = first + k;
        int outl = 0, finl = 0;
        for (int i = 0; i < 8; i++) nonce[10 - i] = (uint8_t)(j >> (8 * i)); /* last flag 0 */
        memcpy(tag, chunk + 65536, 16);
        if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
            EVP_DecryptUpdate(ctx, plain, &outl, chunk, 65536) != 1 || outl != 65536 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag) != 1) {
            done = -3;
            goto end;
        }
        if (EVP_DecryptFinal_ex(ctx, plain + outl, &finl) != 1)
            break; /* this chunk did not authenticate (as a non-final chunk) */
        done++;
    }
end:
    EVP_CIPHER_CTX_free(ctx);
    return done;
}

static int write_all(int fd, const uint8_t *data, size_t len) {
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (n == 0)
            return -EIO; /* no progress: never loop on it */
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_path(const char *dir) {
    int fd = open(dir, O_RDONLY | O_CLOEXEC | O_DIRECTORY);
    if (fd < 0) return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    return rc;
}

/* One block file as FilesystemBlockstore.put writes it, in one call without the GIL:
 * create `tmp` (O_EXCL), switch it to O_DIRECT when `direct`, write `len` bytes, fsync it
 * if `sync`, rename it to `final`, then fsync the directory `dir` if `sync`. A filesystem
 * or a buffer that refuses O_DIRECT (EINVAL) gets the page cache instead. Returns 0, 1 when
 * O_DIRECT was refused (the caller stops asking), or -errno after removing `tmp`.
 * O_DIRECT is set by fcntl after the open, not passed to open(): a filesystem without it
 * (ramfs, tmpfs before Linux 6.6) fails the open with EINVAL only after it has created
 * the file, so a second O_EXCL open of the same name would find it there (EEXIST). */
int tl_write_block(const char *tmp, const char *final, const char *dir, const uint8_t *data, size_t len,
                   int direct, int sync) {
    int refused = 0, rc = 0, fl;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0)
        return -errno;
    if (direct) {
        if ((fl = fcntl(fd, F_GETFL)) < 0)
            rc = -errno;
        else if (fcntl(fd, F_SETFL, fl | O_DIRECT) < 0) {
            if (errno == EINVAL) { /* this filesystem has no O_DIRECT */
                refused = 1;
                direct = 0;
            } else
                rc = -errno;
        }
    }
    if (rc == 0)
        rc = write_all(fd, data, len);
    if (rc == -EINVAL && direct) { /* memory or size not aligned: through the page cache */
        if (ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET) < 0 || (fl = fcntl(fd, F_GETFL)) < 0
            || fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
            rc = -errno;
        else
            rc = write_all(fd, data, len);
    }
    if (rc == 0 && sync && fsync(fd))
        rc = -errno;
    if (rc == 0 && rename(tmp, final))
        rc = -errno;
    if (rc) {
        close(fd);
        unlink(tmp);
        return rc;
    }
    if (close(fd))
        return -errno; /* renamed already: the caller reports it; the block is whole or absent after a crash */
    if (sync && (rc = fsync_path(dir)))
        return rc;
    return refused;
}
