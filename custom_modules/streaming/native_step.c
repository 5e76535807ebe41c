/* One frame of the streaming UNet-TCM, compiled for the machine it runs on.
 *
 * The C version of custom_modules/streaming/fused.py (FusedUNetStep.forward):
 * same folded weights, same operations (to float rounding), one call per frame. It
 * exists because per-op runtimes spend most of a frame between ops: the
 * full configuration runs ~360 onnxruntime nodes per frame, most on vectors
 * of 64-256 values, while the arithmetic (~6 M multiply-accumulates) and the
 * weights (~7.8 MB, read once per frame) take a fraction of that.
 *
 * Layout contract with custom_modules/streaming/native.py (pack_step):
 * - plan (int32): header, then per encoder layer, per decoder level (dims and
 *   gather indices); see sbe_unet_create for the order.
 * - weights (float32): the folded tensors in the order read below.
 * The plan and weights arrays must outlive the handle (no copies are made).
 *
 * Matrix products use GCC/Clang vector extensions (16 floats): with
 * -march=native they compile to the widest SIMD the CPU has; -O3 without
 * -ffast-math keeps IEEE semantics (reductions are vectorised by hand).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLAN_VERSION 1
#define PATHS 4

typedef float v16 __attribute__((vector_size(64), aligned(4)));

typedef struct {
    int rows_in, rows_out, taps, k, n, normalise;
    const int32_t *index;
    const float *w, *b, *scale, *shift, *slopes, *skip_w, *skip_b;
    float eps;
} EncoderLayer;

typedef struct {
    const float *in_b, *in_w, *slopes, *w_now, *out_slopes, *out_w;
    float eps, out_eps;
} TcmLayer;

typedef struct {
    int rows_in, m, taps, k, n, out_size, channels, affine, last;
    const int32_t *index;
    const float *w, *b, *scale, *shift, *slopes;
    float eps;
} DecoderLevel;

typedef struct {
    int num_freqs, in_channels, layers, channels, bottleneck, hidden, tcms, tcm_normalise,
        past_width, flat;
    EncoderLayer *enc;
    TcmLayer *tcm;
    DecoderLevel *dec;
    const float *proj_in_b, *proj_in_w, *past_b, *past_w, *proj_out_b, *proj_out_w;
    /* workspace */
    float *work, *x_a, *x_b, *patches, *skips, *bx, *h, *conv, *gated, *past_terms, *y_a, *y_b;
    float **skip_at;
} Unet;

/* ---- kernels ------------------------------------------------------------------------------ */

/* Columns [n0, n0 + 16 * nb) of out = bias + x @ w; nb is a constant after inlining, so the
 * 4 x nb accumulators stay in registers. */
static inline __attribute__((always_inline)) void gemm_columns(const float *x, int M, int K,
                                                               const float *w, int N,
                                                               const float *bias, float *out,
                                                               int n0, const int nb) {
    v16 b0[4];
    for (int j = 0; j < nb; j++) {
        v16 zero = {0};
        b0[j] = zero;
        if (bias) memcpy(&b0[j], bias + n0 + 16 * j, sizeof b0[j]);
    }
    int m = 0;
    for (; m + 4 <= M; m += 4) {
        v16 acc[4][4];
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < nb; j++) acc[r][j] = b0[j];
        const float *x0 = x + (size_t)m * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
        for (int k = 0; k < K; k++) {
            const float *wr = w + (size_t)k * N + n0;
            for (int j = 0; j < nb; j++) {
                v16 wv = *(const v16 *)(wr + 16 * j);
                acc[0][j] += x0[k] * wv;
                acc[1][j] += x1[k] * wv;
                acc[2][j] += x2[k] * wv;
                acc[3][j] += x3[k] * wv;
            }
        }
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < nb; j++) *(v16 *)(out + (size_t)(m + r) * N + n0 + 16 * j) = acc[r][j];
    }
    for (; m < M; m++) {
        v16 acc[4];
        for (int j = 0; j < nb; j++) acc[j] = b0[j];
        const float *xr = x + (size_t)m * K;
        for (int k = 0; k < K; k++) {
            const float *wr = w + (size_t)k * N + n0;
            for (int j = 0; j < nb; j++) acc[j] += xr[k] * *(const v16 *)(wr + 16 * j);
        }
        for (int j = 0; j < nb; j++) *(v16 *)(out + (size_t)m * N + n0 + 16 * j) = acc[j];
    }
}

/* out[m, :] = bias[:] + x[m, :] @ w   (x: M x K, w: K x N, row-major; bias N or NULL).
 * out may alias bias (each block reads its bias before writing), not x or w. */
static void gemm(const float *x, int M, int K, const float *w, int N, const float *bias,
                 float *out) {
    const int nv = N / 16 * 16;
    int n0 = 0;
    for (; n0 + 64 <= nv; n0 += 64) gemm_columns(x, M, K, w, N, bias, out, n0, 4);
    switch ((nv - n0) / 16) {
        case 3: gemm_columns(x, M, K, w, N, bias, out, n0, 3); break;
        case 2: gemm_columns(x, M, K, w, N, bias, out, n0, 2); break;
        case 1: gemm_columns(x, M, K, w, N, bias, out, n0, 1); break;
        default: break;
    }
    for (int n = nv; n < N; n++) /* columns past the last multiple of 16 */
        for (int m = 0; m < M; m++) {
            float acc = bias ? bias[n] : 0.0f;
            for (int k = 0; k < K; k++) acc += x[(size_t)m * K + k] * w[(size_t)k * N + n];
            out[(size_t)m * N + n] = acc;
        }
}

/* out[m, n] = bias[n] + dot(x[m, :], wt[n, :]) for few columns (wt: N x K, transposed). */
static void gemm_narrow(const float *x, int M, int K, const float *wt, int N, const float *bias,
                        float *out) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)m * K, *wr = wt + (size_t)n * K;
            v16 acc = {0};
            int k = 0;
            for (; k + 16 <= K; k += 16) acc += *(const v16 *)(xr + k) * *(const v16 *)(wr + k);
            float total = bias[n];
            for (int j = 0; j < 16; j++) total += acc[j];
            for (; k < K; k++) total += xr[k] * wr[k];
            out[(size_t)m * N + n] = total;
        }
}

static float sum(const float *x, int n) {
    v16 acc = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) acc += *(const v16 *)(x + i);
    float total = 0.0f;
    for (int j = 0; j < 16; j++) total += acc[j];
    for (; i < n; i++) total += x[i];
    return total;
}

static float centred_sum_of_squares(const float *x, int n, float mean) {
    v16 acc = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v16 d = *(const v16 *)(x + i) - mean;
        acc += d * d;
    }
    float total = 0.0f;
    for (int j = 0; j < 16; j++) total += acc[j];
    for (; i < n; i++) total += (x[i] - mean) * (x[i] - mean);
    return total;
}

/* Layer normalisation of x (n values) in place; optional elementwise affine. */
static void layer_norm(float *x, int n, float eps, const float *scale, const float *shift) {
    const float mean = sum(x, n) / n;
    const float rstd = 1.0f / sqrtf(centred_sum_of_squares(x, n, mean) / n + eps);
    if (scale)
        for (int i = 0; i < n; i++) x[i] = (x[i] - mean) * rstd * scale[i] + shift[i];
    else
        for (int i = 0; i < n; i++) x[i] = (x[i] - mean) * rstd;
}

/* PReLU of a rows x cols block, one slope per column. */
static void prelu(float *x, int rows, int cols, const float *slopes) {
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * cols;
        for (int c = 0; c < cols; c++) row[c] = row[c] > 0.0f ? row[c] : row[c] * slopes[c];
    }
}

static void gather_rows(const float *x, int cols, const int32_t *index, int count, float *out) {
    for (int i = 0; i < count; i++)
        memcpy(out + (size_t)i * cols, x + (size_t)index[i] * cols, sizeof(float) * cols);
}

/* ---- construction ------------------------------------------------------------------------- */

typedef struct {
    const int32_t *p, *end;
    const float *w, *w_end;
    int ok;
} Reader;

static int next_int(Reader *r) {
    if (r->p >= r->end) { r->ok = 0; return 0; }
    return *r->p++;
}

static const int32_t *next_ints(Reader *r, long n) {
    if (n < 0 || r->end - r->p < n) { r->ok = 0; return r->p; }
    const int32_t *out = r->p;
    r->p += n;
    return out;
}

static const float *next_floats(Reader *r, long n) {
    if (n < 0 || r->w_end - r->w < n) { r->ok = 0; return r->w; }
    const float *out = r->w;
    r->w += n;
    return out;
}

void sbe_unet_destroy(void *handle) {
    Unet *u = (Unet *)handle;
    if (!u) return;
    free(u->enc);
    free(u->tcm);
    free(u->dec);
    free(u->skip_at);
    free(u->work);
    free(u);
}

#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define FAIL(msg) do { snprintf(err, errlen, "%s", msg); sbe_unet_destroy(u); return NULL; } while (0)

void *sbe_unet_create(const int32_t *plan, long plan_len, const float *weights, long weights_len,
                      char *err, int errlen) {
    Reader r = {plan, plan + plan_len, weights, weights + weights_len, 1};
    Unet *u = calloc(1, sizeof(Unet));
    if (!u) FAIL("out of memory");
    if (next_int(&r) != PLAN_VERSION) FAIL("plan version mismatch");
    u->num_freqs = next_int(&r);
    u->in_channels = next_int(&r);
    u->layers = next_int(&r);
    u->channels = next_int(&r);
    u->bottleneck = next_int(&r);
    u->hidden = next_int(&r);
    u->tcms = next_int(&r);
    u->tcm_normalise = next_int(&r);
    u->past_width = next_int(&r);
    const int L = u->layers, C = u->channels, B = u->bottleneck, H = u->hidden, T = u->tcms;
    if (!r.ok || L < 1 || C < 1 || B < 1 || H < 1 || T < 1) FAIL("bad plan header");
    u->enc = calloc(L, sizeof(EncoderLayer));
    u->dec = calloc(L, sizeof(DecoderLevel));
    u->tcm = calloc(T, sizeof(TcmLayer));
    u->skip_at = calloc(L, sizeof(float *));
    if (!u->enc || !u->dec || !u->tcm || !u->skip_at) FAIL("out of memory");

    long max_rows_c = (long)u->num_freqs * u->in_channels, max_patches = 0, skip_total = 0;
    int rows = u->num_freqs, cols = u->in_channels;
    for (int i = 0; i < L; i++) {
        EncoderLayer *e = &u->enc[i];
        e->rows_in = rows;
        e->rows_out = next_int(&r);
        e->taps = next_int(&r);
        e->k = next_int(&r);
        e->n = next_int(&r);
        e->normalise = next_int(&r);
        if (!r.ok || e->k != e->taps * cols || e->n != C || e->rows_out < 1) FAIL("bad encoder plan");
        e->index = next_ints(&r, (long)e->rows_out * e->taps);
        e->w = next_floats(&r, (long)e->k * e->n);
        e->b = next_floats(&r, e->n);
        if (e->normalise) {
            e->scale = next_floats(&r, (long)e->rows_out * C);
            e->shift = next_floats(&r, (long)e->rows_out * C);
            e->eps = *next_floats(&r, 1);
        }
        e->slopes = next_floats(&r, C);
        e->skip_w = next_floats(&r, 2L * C * C);
        e->skip_b = next_floats(&r, 2L * C);
        for (long j = 0; r.ok && j < (long)e->rows_out * e->taps; j++)
            if (e->index[j] < 0 || e->index[j] >= rows) FAIL("encoder index out of range");
        max_patches = MAX(max_patches, (long)e->rows_out * e->k);
        max_rows_c = MAX(max_rows_c, (long)e->rows_out * C);
        skip_total += 2L * e->rows_out * C;
        rows = e->rows_out;
        cols = C;
    }
    u->flat = rows * C;
    u->proj_in_b = next_floats(&r, B);
    u->proj_in_w = next_floats(&r, (long)u->flat * B);
    u->past_b = next_floats(&r, (long)T * PATHS * H);
    u->past_w = next_floats(&r, (long)T * PATHS * u->past_width * H);
    for (int t = 0; t < T; t++) {
        TcmLayer *c = &u->tcm[t];
        c->in_b = next_floats(&r, H);
        c->in_w = next_floats(&r, (long)B * H);
        c->slopes = next_floats(&r, PATHS * H);
        c->eps = *next_floats(&r, 1);
        c->w_now = next_floats(&r, (long)PATHS * H * H);
        c->out_slopes = next_floats(&r, 2 * H);
        c->out_eps = *next_floats(&r, 1);
        c->out_w = next_floats(&r, 2L * H * B);
    }
    u->proj_out_b = next_floats(&r, u->flat);
    u->proj_out_w = next_floats(&r, (long)B * u->flat);
    long max_dec = 0;
    for (int l = 0; l < L; l++) {
        DecoderLevel *d = &u->dec[l];
        d->rows_in = rows;
        d->m = next_int(&r);
        d->taps = next_int(&r);
        d->k = next_int(&r);
        d->n = next_int(&r);
        d->out_size = next_int(&r);
        d->channels = next_int(&r);
        d->affine = next_int(&r);
        d->last = next_int(&r);
        if (!r.ok || d->k != d->taps * C || d->n % d->channels || d->out_size > d->m * (d->n / d->channels)
            || (d->last != (l == L - 1)) || (!d->last && d->channels != C))
            FAIL("bad decoder plan");
        d->index = next_ints(&r, (long)d->m * d->taps);
        d->w = next_floats(&r, 2L * d->k * d->n);
        d->b = next_floats(&r, 2L * d->n);
        if (d->affine) {
            d->scale = next_floats(&r, 2L * C);
            d->shift = next_floats(&r, 2L * C);
            d->eps = *next_floats(&r, 1);
        }
        if (!d->last) d->slopes = next_floats(&r, 2L * C);
        for (long j = 0; r.ok && j < (long)d->m * d->taps; j++)
            if (d->index[j] < 0 || d->index[j] > rows) FAIL("decoder index out of range");
        max_patches = MAX(max_patches, 2L * d->m * d->k);
        max_dec = MAX(max_dec, 2L * d->m * d->n);
        max_rows_c = MAX(max_rows_c, 2L * (rows + 1) * C);
        rows = d->out_size;
    }
    if (!r.ok) FAIL("plan or weights shorter than the model needs");
    if (r.p != r.end || r.w != r.w_end) FAIL("plan or weights longer than the model needs");
    if (rows != u->num_freqs || u->enc[0].rows_in != u->num_freqs) FAIL("decoder output size mismatch");

    max_dec = MAX(max_dec, max_rows_c);
    const long sizes[] = {max_rows_c, max_rows_c, max_patches, skip_total, B, H, PATHS * H,
                          2 * H, (long)T * PATHS * H, max_dec, max_dec};
    long total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) total += (sizes[i] + 15) / 16 * 16;
    u->work = aligned_alloc(64, sizeof(float) * total);
    if (!u->work) FAIL("out of memory");
    memset(u->work, 0, sizeof(float) * total);
    float *cursor = u->work;
    float **slots[] = {&u->x_a, &u->x_b, &u->patches, &u->skips, &u->bx, &u->h,
                       &u->conv, &u->gated, &u->past_terms, &u->y_a, &u->y_b};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        *slots[i] = cursor;
        cursor += (sizes[i] + 15) / 16 * 16;
    }
    float *skip = u->skips;
    for (int i = 0; i < L; i++) {
        u->skip_at[i] = skip;
        skip += 2L * u->enc[i].rows_out * C;
    }
    return u;
}

/* ---- one frame ----------------------------------------------------------------------------- */

/* spec (num_freqs, in_channels), past (tcms*4, past_width) -> out (num_freqs, 2),
 * present (tcms*4, hidden). Returns 0. */
int sbe_unet_step(void *handle, const float *spec, const float *past, float *out, float *present) {
    Unet *u = (Unet *)handle;
    const int L = u->layers, C = u->channels, B = u->bottleneck, H = u->hidden;
    const float *x = spec;
    float *next = u->x_a;

    /* Encoder, frequency-major (freqs, channels); skip 1x1 convolutions of both decoders. */
    for (int i = 0; i < L; i++) {
        const EncoderLayer *e = &u->enc[i];
        const int cols = i == 0 ? u->in_channels : C;
        gather_rows(x, cols, e->index, e->rows_out * e->taps, u->patches);
        gemm(u->patches, e->rows_out, e->k, e->w, C, e->b, next);
        if (e->normalise) layer_norm(next, e->rows_out * C, e->eps, e->scale, e->shift);
        prelu(next, e->rows_out, C, e->slopes);
        for (int d = 0; d < 2; d++)
            gemm(next, e->rows_out, C, e->skip_w + (size_t)d * C * C, C, e->skip_b + (size_t)d * C,
                 u->skip_at[i] + (size_t)d * e->rows_out * C);
        x = next;
        next = next == u->x_a ? u->x_b : u->x_a;
    }

    /* Bottleneck: projection, TCMs (older taps' contributions first, all layers at once). */
    float *bx = u->bx;
    gemm(x, 1, u->flat, u->proj_in_w, B, u->proj_in_b, bx);
    for (int row = 0; row < u->tcms * PATHS; row++)
        gemm(past + (size_t)row * u->past_width, 1, u->past_width,
             u->past_w + (size_t)row * u->past_width * H, H, u->past_b + (size_t)row * H,
             u->past_terms + (size_t)row * H);
    for (int t = 0; t < u->tcms; t++) {
        const TcmLayer *c = &u->tcm[t];
        gemm(bx, 1, B, c->in_w, H, c->in_b, u->h);
        float *uu = present + (size_t)t * PATHS * H; /* the paths' conv inputs, returned */
        for (int p = 0; p < PATHS; p++) {
            float *row = uu + (size_t)p * H;
            const float *s = c->slopes + (size_t)p * H;
            for (int j = 0; j < H; j++) row[j] = u->h[j] > 0.0f ? u->h[j] : u->h[j] * s[j];
            if (u->tcm_normalise) layer_norm(row, H, c->eps, NULL, NULL);
            gemm(row, 1, H, c->w_now + (size_t)p * H * H, H,
                 u->past_terms + ((size_t)t * PATHS + p) * H, u->conv + (size_t)p * H);
        }
        /* paths main 1, main 2, gate 1, gate 2: main * sigmoid(gate) per branch */
        for (int j = 0; j < 2 * H; j++) {
            const float g = u->conv[j] / (1.0f + expf(-u->conv[2 * H + j]));
            u->gated[j] = g > 0.0f ? g : g * c->out_slopes[j];
        }
        if (u->tcm_normalise) layer_norm(u->gated, 2 * H, c->out_eps, NULL, NULL);
        gemm(u->gated, 1, 2 * H, c->out_w, B, bx, bx); /* residual: bx += gated @ out_w */
    }
    float *y = u->y_a, *other = u->y_b;
    gemm(bx, 1, B, u->proj_out_w, u->flat, u->proj_out_b, y); /* (freqs, C), same for both */
    int shared = 1; /* y is one (freqs, C) block shared by the decoders until the first level */

    /* Both decoders, level by level. */
    for (int l = 0; l < L; l++) {
        const DecoderLevel *d = &u->dec[l];
        const float *skip = u->skip_at[L - 1 - l];
        const int rows = d->rows_in;
        const int stride = d->n / d->channels;
        float *pad = other; /* (2, rows + 1, C): y + skip, then a zero row */
        for (int dd = 0; dd < 2; dd++) {
            const float *yd = y + (shared ? 0 : (size_t)dd * rows * C);
            const float *sd = skip + (size_t)dd * rows * C;
            float *pd = pad + (size_t)dd * (rows + 1) * C;
            for (int j = 0; j < rows * C; j++) pd[j] = yd[j] + sd[j];
            memset(pd + (size_t)rows * C, 0, sizeof(float) * C);
        }
        for (int dd = 0; dd < 2; dd++) {
            float *patches = u->patches + (size_t)dd * d->m * d->k;
            gather_rows(pad + (size_t)dd * (rows + 1) * C, C, d->index, d->m * d->taps, patches);
        }
        float *result = y; /* y is consumed (pad holds y + skip) */
        for (int dd = 0; dd < 2; dd++) /* the last level's weights are stored transposed */
            (d->last ? gemm_narrow : gemm)(u->patches + (size_t)dd * d->m * d->k, d->m, d->k,
                                           d->w + (size_t)dd * d->k * d->n, d->n,
                                           d->b + (size_t)dd * d->n,
                                           result + (size_t)dd * d->m * d->n);
        /* (M, stride * C_out) read as (M * stride, C_out): natural frequency order. */
        if (d->last) {
            for (int f = 0; f < d->out_size; f++)
                for (int dd = 0; dd < 2; dd++)
                    out[2 * f + dd] = result[(size_t)dd * d->m * d->n + f];
            return 0;
        }
        float *packed = other; /* pad is no longer needed: gather (2, out_size, C) contiguously */
        for (int dd = 0; dd < 2; dd++) {
            float *yd = packed + (size_t)dd * d->out_size * C;
            memcpy(yd, result + (size_t)dd * d->m * stride * C, sizeof(float) * d->out_size * C);
            if (d->affine) {
                const float *scale = d->scale + (size_t)dd * C, *shift = d->shift + (size_t)dd * C;
                layer_norm(yd, d->out_size * C, d->eps, NULL, NULL);
                for (int f = 0; f < d->out_size; f++)
                    for (int ch = 0; ch < C; ch++)
                        yd[f * C + ch] = yd[f * C + ch] * scale[ch] + shift[ch];
            }
            prelu(yd, d->out_size, C, d->slopes + (size_t)dd * C);
        }
        y = packed;
        other = result;
        shared = 0;
    }
    return 0;
}
