// ptyfast.kernels -- gather.cu: bilinear sub-pixel patch extraction and the fused exit wave.
//
// Semantics are those of kernels/numpy_twins.py (gather, exit_waves); keep the two in step.
// A window at (y, x) = (y0 + fy, x0 + fx), y0 = floor(y) (float64), fy = float(y - y0), samples
//
//   patch[i, j] = (1-fy) * ((1-fx) O[y0+i, x0+j]   + fx O[y0+i, x0+j+1])
//               +   fy   * ((1-fx) O[y0+i+1, x0+j] + fx O[y0+i+1, x0+j+1])
//
// and object pixels outside the (rows, cols) grid read as zero.
//
// Complex values are float2 (x = real, y = imag): the memory layout of numpy/CuPy complex64. No
// headers are included, so the same text compiles with NVRTC (CuPy RawModule, via kernels/loader.py)
// and with a standalone `nvcc -ptx` (tests/test_cuda_compile.py). The per-pixel work lives in
// __host__ __device__ functions so the CPU test harness can run exactly this arithmetic.
//
// Kernels (extern "C", all arrays C-contiguous):
//   gather_c64(obj, rows, cols, pos, n, h, w, out)
//   exit_wave_c64(probe, obj, rows, cols, pos, n, h, w, out)
//     obj   : (rows, cols)  complex64  (const float2*)
//     pos   : (n, 2)        float64    (y, x) in object pixels, top-left corner of the window
//     probe : (h, w)        complex64  (exit_wave_c64 only; out = probe * patch)
//     out   : (n, h, w)     complex64  every element is written (no initialisation needed)
//
// Launch geometry: block (32, 8, 1); grid (ceil(w / 32), ceil(h / 8), n). One thread per output
// pixel; threadIdx.x runs along columns so a warp reads 33 consecutive object pixels per row
// (coalesced, the neighbouring rows are L1 hits for the next block row).

struct PtfWindow {
    int y0, x0;
    float fy, fx;
};

__host__ __device__ inline PtfWindow ptf_window(const double* pos, long long k) {
    PtfWindow win;
    double y = pos[2 * k], x = pos[2 * k + 1];
    double by = floor(y), bx = floor(x);
    win.y0 = (int)by;
    win.x0 = (int)bx;
    win.fy = (float)(y - by);
    win.fx = (float)(x - bx);
    return win;
}

__host__ __device__ inline float2 ptf_obj_at(const float2* obj, int rows, int cols, int r, int c) {
    if (r < 0 || r >= rows || c < 0 || c >= cols) {
        float2 z;
        z.x = 0.0f;
        z.y = 0.0f;
        return z;
    }
    return obj[(long long)r * cols + c];
}

// Bilinear sample of the window of frame k at patch pixel (i, j).
__host__ __device__ inline float2 ptf_gather_pixel(const float2* obj, int rows, int cols, const double* pos,
                                                   long long k, int i, int j) {
    PtfWindow win = ptf_window(pos, k);
    int r = win.y0 + i, c = win.x0 + j;
    float2 a = ptf_obj_at(obj, rows, cols, r, c);
    float2 b = ptf_obj_at(obj, rows, cols, r, c + 1);
    float2 d = ptf_obj_at(obj, rows, cols, r + 1, c);
    float2 e = ptf_obj_at(obj, rows, cols, r + 1, c + 1);
    float gx = 1.0f - win.fx, gy = 1.0f - win.fy;
    float2 top, bottom, out;
    top.x = gx * a.x + win.fx * b.x;
    top.y = gx * a.y + win.fx * b.y;
    bottom.x = gx * d.x + win.fx * e.x;
    bottom.y = gx * d.y + win.fx * e.y;
    out.x = gy * top.x + win.fy * bottom.x;
    out.y = gy * top.y + win.fy * bottom.y;
    return out;
}

__host__ __device__ inline float2 ptf_exit_wave_pixel(const float2* probe, const float2* obj, int rows, int cols,
                                                      const double* pos, long long k, int h, int w, int i, int j) {
    float2 o = ptf_gather_pixel(obj, rows, cols, pos, k, i, j);
    float2 p = probe[(long long)i * w + j];
    float2 out;
    out.x = p.x * o.x - p.y * o.y;
    out.y = p.x * o.y + p.y * o.x;
    return out;
}

extern "C" __global__ void gather_c64(const float2* __restrict__ obj, int rows, int cols,
                                      const double* __restrict__ pos, int n, int h, int w,
                                      float2* __restrict__ out) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    long long k = blockIdx.z;
    if (i >= h || j >= w || k >= n) return;
    out[(k * h + i) * w + j] = ptf_gather_pixel(obj, rows, cols, pos, k, i, j);
}

extern "C" __global__ void exit_wave_c64(const float2* __restrict__ probe, const float2* __restrict__ obj,
                                         int rows, int cols, const double* __restrict__ pos, int n, int h, int w,
                                         float2* __restrict__ out) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    long long k = blockIdx.z;
    if (i >= h || j >= w || k >= n) return;
    out[(k * h + i) * w + j] = ptf_exit_wave_pixel(probe, obj, rows, cols, pos, k, h, w, i, j);
}
