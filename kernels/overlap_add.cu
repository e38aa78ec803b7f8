// ptyfast.kernels -- overlap_add.cu: overlap-add (stitch / object update), the adjoint of gather.
//
// Semantics are those of kernels/numpy_twins.py (overlap_add, stitch); keep the two in step.
// Every patch q_n = w_n * patch_n is spread bilinearly onto the integer grid (footprint (h+1, w+1)
// at (y0, x0); weights as in gather.cu) and added to accum; the weights w_n are spread the same
// way into wacc. Footprint pixels outside (rows, cols) are dropped.
//
//   footprint[i, j] = (1-fy)(1-fx) q[i, j] + (1-fy) fx q[i, j-1] + fy (1-fx) q[i-1, j] + fy fx q[i-1, j-1]
//   (q read as zero outside 0 <= i < h, 0 <= j < w)
//
// Formulation: DETERMINISTIC GATHER, not atomicAdd. One thread owns one accumulator pixel, finds the
// patches whose footprint covers it through a bin index built on the host (CSR: patches sorted by
// the bin of their integer corner), sums their contributions in a fixed order and writes the pixel
// once. Why:
//   * bit-identical results run to run (atomicAdd of floats sums in arrival order), so refinement
//     runs, regression tests and the CPU/GPU comparison are reproducible;
//   * no contention: a 75 %-overlap raster puts ~16 patches on every pixel and a batch holds
//     neighbours, so atomics would serialise on the same L2 lines;
//   * each accumulator pixel is read and written once per launch (atomicAdd does a read-modify-write
//     per contribution: ~16x the accumulator traffic at 75 % overlap); the patches are read through
//     L1/L2 (a patch pixel is reused by the 4 accumulator pixels around it).
// Cost: a host-side sort of the n positions (n x 16 bytes) and bin-candidate checks that miss
// (about 9/4 x the covering patches with the default bin size h/2 x w/2).
//
// Complex values are float2 (the complex64 layout); no headers, so the text compiles with NVRTC
// (CuPy RawModule) and with a standalone `nvcc -ptx`.
//
// Kernel (extern "C", all arrays C-contiguous):
//   overlap_add_c64(accum, wacc, use_wacc, rows, cols, patches, weights, weight_mode, pos, n, h, w,
//                   bin_start, bin_items, by0, bx0, bsy, bsx, nby, nbx, r0, c0, nr, nc)
//     accum     : (rows, cols) complex64, updated in place (+=)
//     wacc      : (rows, cols) float32, updated in place (+=) when use_wacc != 0 (else unused)
//     patches   : (n, h, w) complex64
//     weights   : float32; weight_mode 0: none (w = 1, pointer unused), 1: one (h, w) map for all
//                 patches, 2: (n, h, w) per patch
//     pos       : (n, 2) float64 (y, x), top-left corner, sub-pixel allowed
//     (the bin index is built by kernels/binning.py; n may be the full batch, only binned patches count)
//     bin_start : (nby * nbx + 1,) int32 CSR offsets; bin b = by * nbx + bx holds the patches with
//                 floor((floor(y) - by0) / bsy) == by and floor((floor(x) - bx0) / bsx) == bx
//     bin_items : (n,) int32 patch indices sorted by bin, ascending index inside a bin
//     r0, c0, nr, nc : the rectangle of accum that the footprints touch (clipped to the grid)
//
// Launch geometry: block (32, 8, 1); grid (ceil(nc / 32), ceil(nr / 8), 1); thread (tx, ty) owns
// accum[r0 + ty, c0 + tx]. Threads whose pixel no patch covers write nothing.

__host__ __device__ inline int ptf_floor_div(int a, int b) {
    int q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

__host__ __device__ inline float2 ptf_patch_at(const float2* patches, long long k, int h, int w, int i, int j) {
    if (i < 0 || i >= h || j < 0 || j >= w) {
        float2 z;
        z.x = 0.0f;
        z.y = 0.0f;
        return z;
    }
    return patches[(k * h + i) * w + j];
}

__host__ __device__ inline float ptf_weight_at(const float* weights, int weight_mode, long long k, int h, int w,
                                               int i, int j) {
    if (i < 0 || i >= h || j < 0 || j >= w) return 0.0f;
    if (weight_mode == 0) return 1.0f;
    if (weight_mode == 1) return weights[(long long)i * w + j];
    return weights[(k * h + i) * w + j];
}

// Sum of the footprints covering accumulator pixel (py, px); returns the number of covering patches.
__host__ __device__ inline int ptf_overlap_pixel(const float2* patches, const float* weights, int weight_mode,
                                                 const double* pos, int h, int w, const int* bin_start,
                                                 const int* bin_items, int by0, int bx0, int bsy, int bsx,
                                                 int nby, int nbx, int py, int px, float2* sum, float* wsum) {
    int hits = 0;
    float2 acc;
    acc.x = 0.0f;
    acc.y = 0.0f;
    float wacc = 0.0f;
    // patches with py - h <= y0 <= py and px - w <= x0 <= px cover (py, px)
    int bylo = ptf_floor_div(py - h - by0, bsy), byhi = ptf_floor_div(py - by0, bsy);
    int bxlo = ptf_floor_div(px - w - bx0, bsx), bxhi = ptf_floor_div(px - bx0, bsx);
    if (bylo < 0) bylo = 0;
    if (bxlo < 0) bxlo = 0;
    if (byhi > nby - 1) byhi = nby - 1;
    if (bxhi > nbx - 1) bxhi = nbx - 1;
    for (int by = bylo; by <= byhi; ++by) {
        for (int bx = bxlo; bx <= bxhi; ++bx) {
            int b = by * nbx + bx;
            for (int t = bin_start[b]; t < bin_start[b + 1]; ++t) {
                long long k = bin_items[t];
                double y = pos[2 * k], x = pos[2 * k + 1];
                double fly = floor(y), flx = floor(x);
                int i = py - (int)fly, j = px - (int)flx;
                if (i < 0 || i > h || j < 0 || j > w) continue;
                ++hits;
                float fy = (float)(y - fly), fx = (float)(x - flx);
                float gy = 1.0f - fy, gx = 1.0f - fx;
                float c00 = gy * gx, c01 = gy * fx, c10 = fy * gx, c11 = fy * fx;
                float w00 = ptf_weight_at(weights, weight_mode, k, h, w, i, j);
                float w01 = ptf_weight_at(weights, weight_mode, k, h, w, i, j - 1);
                float w10 = ptf_weight_at(weights, weight_mode, k, h, w, i - 1, j);
                float w11 = ptf_weight_at(weights, weight_mode, k, h, w, i - 1, j - 1);
                float2 p00 = ptf_patch_at(patches, k, h, w, i, j);
                float2 p01 = ptf_patch_at(patches, k, h, w, i, j - 1);
                float2 p10 = ptf_patch_at(patches, k, h, w, i - 1, j);
                float2 p11 = ptf_patch_at(patches, k, h, w, i - 1, j - 1);
                float a00 = c00 * w00, a01 = c01 * w01, a10 = c10 * w10, a11 = c11 * w11;
                acc.x += ((a00 * p00.x + a01 * p01.x) + a10 * p10.x) + a11 * p11.x;
                acc.y += ((a00 * p00.y + a01 * p01.y) + a10 * p10.y) + a11 * p11.y;
                wacc += ((a00 + a01) + a10) + a11;
            }
        }
    }
    *sum = acc;
    *wsum = wacc;
    return hits;
}

// The whole per-thread body (also run on the host by the CPU emulation test).
__host__ __device__ inline void ptf_overlap_add_thread(float2* accum, float* wacc, int use_wacc, int rows, int cols,
                                                      const float2* patches, const float* weights, int weight_mode,
                                                      const double* pos, int n, int h, int w, const int* bin_start,
                                                      const int* bin_items, int by0, int bx0, int bsy, int bsx,
                                                      int nby, int nbx, int r0, int c0, int nr, int nc, int tx,
                                                      int ty) {
    if (tx >= nc || ty >= nr || n <= 0) return;
    int py = r0 + ty, px = c0 + tx;
    if (py < 0 || py >= rows || px < 0 || px >= cols) return;
    float2 sum;
    float wsum;
    int hits = ptf_overlap_pixel(patches, weights, weight_mode, pos, h, w, bin_start, bin_items, by0, bx0, bsy, bsx,
                                 nby, nbx, py, px, &sum, &wsum);
    if (hits == 0) return;
    long long o = (long long)py * cols + px;
    float2 a = accum[o];
    a.x += sum.x;
    a.y += sum.y;
    accum[o] = a;
    if (use_wacc) wacc[o] += wsum;
}

extern "C" __global__ void overlap_add_c64(float2* accum, float* wacc, int use_wacc, int rows, int cols,
                                           const float2* __restrict__ patches, const float* __restrict__ weights,
                                           int weight_mode, const double* __restrict__ pos, int n, int h, int w,
                                           const int* __restrict__ bin_start, const int* __restrict__ bin_items,
                                           int by0, int bx0, int bsy, int bsx, int nby, int nbx, int r0, int c0,
                                           int nr, int nc) {
    ptf_overlap_add_thread(accum, wacc, use_wacc, rows, cols, patches, weights, weight_mode, pos, n, h, w, bin_start,
                           bin_items, by0, bx0, bsy, bsx, nby, nbx, r0, c0, nr, nc,
                           blockIdx.x * blockDim.x + threadIdx.x, blockIdx.y * blockDim.y + threadIdx.y);
}
