// ptyfast.kernels -- modulus.cu: far-field modulus projection with its per-frame error.
//
// Semantics are those of kernels/numpy_twins.py (modulus_projection); keep the two in step.
// Per detector pixel, with a = |Psi|, s = sqrt(max(I, 0)):
//   valid (mask != 0 or no mask):  Psi' = Psi * (s / a)   if a > 0,   Psi' = s + 0i   if a == 0
//   masked (mask == 0):            Psi' = Psi             (the model fills what the detector lacks)
//   err[frame] = sum over valid pixels of (a - s)^2        (accumulated in double, stored as float)
//
// Complex values are float2 (x = real, y = imag), the complex64 layout; no headers, so the text
// compiles with NVRTC (CuPy RawModule) and with a standalone `nvcc -ptx`.
//
// Kernel (extern "C", all arrays C-contiguous):
//   modulus_projection_c64(psi, intensity, mask, mask_mode, n, h, w, unshifted, out, err)
//     psi       : (n, h, w) complex64  far field
//     intensity : (n, h, w) float32    measured intensity, zero frequency at (h/2, w/2)
//     mask      : uint8, valid pixel != 0; mask_mode 0: no mask (pointer unused),
//                 1: one (h, w) mask for all frames, 2: (n, h, w) per-frame masks
//     unshifted : 0: psi uses the project's centred convention (same indexing as intensity);
//                 1: psi is the raw fft2 output (zero frequency at [0, 0]); pixel (i, j) of psi is
//                    paired with intensity/mask pixel ((i + h/2) % h, (j + w/2) % w). This folds
//                    fftshift/ifftshift into the projection, saving two passes over the batch.
//     out       : (n, h, w) complex64, every element written; may alias psi (in place)
//     err       : (n,) float32, every element written
//
// Launch geometry: grid (n, 1, 1), block (PTF_MP_BLOCK = 256, 1, 1) -- exactly 256 threads: one block
// per frame, threads stride over the h*w pixels, then a fixed-order shared-memory tree reduction, so
// err is deterministic (no atomics) and bit-identical run to run.

#define PTF_MP_BLOCK 256

__host__ __device__ inline float2 ptf_project_pixel(float2 p, float intensity, bool valid, double* err) {
    float a = sqrtf(p.x * p.x + p.y * p.y);
    float s = sqrtf(intensity > 0.0f ? intensity : 0.0f);
    if (!valid) return p;
    float d = a - s;
    *err += (double)d * (double)d;
    float2 out;
    if (a > 0.0f) {
        float scale = s / a;
        out.x = p.x * scale;
        out.y = p.y * scale;
    } else {
        out.x = s;
        out.y = 0.0f;
    }
    return out;
}

// Project pixel q (0 <= q < h*w) of frame k; returns the new value, adds to *err.
__host__ __device__ inline float2 ptf_modulus_pixel(const float2* psi, const float* intensity,
                                                    const unsigned char* mask, int mask_mode, long long k,
                                                    int h, int w, int unshifted, int q, double* err) {
    int i = q / w, j = q - (q / w) * w;
    int qi = q;
    if (unshifted) {
        int si = i + h / 2, sj = j + w / 2;
        if (si >= h) si -= h;
        if (sj >= w) sj -= w;
        qi = si * w + sj;
    }
    long long hw = (long long)h * w;
    bool valid = true;
    if (mask_mode == 1) valid = mask[qi] != 0;
    if (mask_mode == 2) valid = mask[k * hw + qi] != 0;
    return ptf_project_pixel(psi[k * hw + q], intensity[k * hw + qi], valid, err);
}

extern "C" __global__ void modulus_projection_c64(const float2* psi, const float* __restrict__ intensity,
                                                  const unsigned char* __restrict__ mask, int mask_mode, int n,
                                                  int h, int w, int unshifted, float2* out,
                                                  float* __restrict__ err) {
    __shared__ double partial[PTF_MP_BLOCK];
    long long k = blockIdx.x;
    if (k >= n) return;  // whole block leaves together: no thread reaches __syncthreads
    int hw = h * w;
    double acc = 0.0;
    for (int q = threadIdx.x; q < hw; q += PTF_MP_BLOCK) {
        out[k * hw + q] = ptf_modulus_pixel(psi, intensity, mask, mask_mode, k, h, w, unshifted, q, &acc);
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = PTF_MP_BLOCK / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) err[k] = (float)partial[0];
}
