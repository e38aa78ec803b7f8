// ptyfast.kernels -- overlap_products.cu: weighted inner products of overlapping patch pairs, the entries
// of the phase-offset solve's overlap matrix H (ptyfast/runtime/phase_align.py).
//
// Semantics are those of kernels/numpy_twins.py (overlap_products); keep the two in step.
// Pair j = (m, k, am, bm, ak, bk, oh, ow): its overlap is the oh x ow rectangle at (am, bm) in window m and
// at (ak, bk) in window k (pixels of the (h, w) windows), and
//
//   H_j = sum_{i < oh, l < ow} conj(p_m[am+i, bm+l]) * p_k[ak+i, bk+l] * w[am+i, bm+l] * w[ak+i, bk+l]
//
// with p the (n, h, w) patches and w the (h, w) weight shared by every window. The weight product and
// p_k * weight are taken in float (as the twin's complex64 arithmetic), the sum in double.
//
// Complex values are float2 (the complex64 layout), the output double2 (complex128); no headers, so the
// text compiles with NVRTC (CuPy RawModule) and with a standalone `nvcc -ptx`.
//
// Kernel (extern "C", all arrays C-contiguous):
//   overlap_products_c64(patches, h, w, weight, rects, npairs, out)
//     patches : (n, h, w) complex64
//     weight  : (h, w) float32
//     rects   : (npairs, 8) int32, one (m, k, am, bm, ak, bk, oh, ow) per pair (the rectangle inside both)
//     out     : (npairs,) complex128, every element written
//
// Launch geometry: grid (npairs, 1, 1), block (PTF_OP_BLOCK = 256, 1, 1) -- exactly 256 threads: one block
// per pair, threads stride over the oh*ow pixels, then a fixed-order shared-memory tree reduction, so the
// products are deterministic (no atomics) and bit-identical run to run.

#define PTF_OP_BLOCK 256

// Thread t's share (pixels t, t + stride, ...) of pair j's product, added to (*re, *im).
__host__ __device__ inline void ptf_overlap_product_partial(const float2* patches, int h, int w,
                                                           const float* weight, const int* rects, long long j,
                                                           int t, int stride, double* re, double* im) {
    const int* r = rects + 8 * j;
    long long m = r[0], k = r[1];
    int am = r[2], bm = r[3], ak = r[4], bk = r[5], oh = r[6], ow = r[7];
    long long hw = (long long)h * w;
    for (int q = t; q < oh * ow; q += stride) {
        int i = q / ow, l = q - (q / ow) * ow;
        int qm = (am + i) * w + bm + l, qk = (ak + i) * w + bk + l;
        float ww = weight[qm] * weight[qk];
        float2 a = patches[m * hw + qm];
        float2 b = patches[k * hw + qk];
        float bx = b.x * ww, by = b.y * ww;
        *re += (double)a.x * bx + (double)a.y * by;
        *im += (double)a.x * by - (double)a.y * bx;
    }
}

extern "C" __global__ void overlap_products_c64(const float2* __restrict__ patches, int h, int w,
                                                const float* __restrict__ weight, const int* __restrict__ rects,
                                                int npairs, double2* __restrict__ out) {
    __shared__ double part_re[PTF_OP_BLOCK];
    __shared__ double part_im[PTF_OP_BLOCK];
    long long j = blockIdx.x;
    if (j >= npairs) return;  // whole block leaves together: no thread reaches __syncthreads
    double re = 0.0, im = 0.0;
    ptf_overlap_product_partial(patches, h, w, weight, rects, j, threadIdx.x, PTF_OP_BLOCK, &re, &im);
    part_re[threadIdx.x] = re;
    part_im[threadIdx.x] = im;
    __syncthreads();
    for (int stride = PTF_OP_BLOCK / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            part_re[threadIdx.x] += part_re[threadIdx.x + stride];
            part_im[threadIdx.x] += part_im[threadIdx.x + stride];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        double2 v;
        v.x = part_re[0];
        v.y = part_im[0];
        out[j] = v;
    }
}
