/* A stand-in libcuda.so.1 for measuring Triton's host path on a machine without a GPU: every
 * driver call Triton's CUDA backend makes succeeds, device queries answer like an H100 (sm_90,
 * 132 SMs), and cuLaunchKernel(Ex) only counts. Nothing runs on any device.
 * Built at run time by bench/host_path.py with the system C compiler. */
#include <stdint.h>
#include <string.h>

typedef int CUresult;
static uint64_t launches;
static char handle[64];

uint64_t stub_launch_count(void) { return launches; }

CUresult cuInit(unsigned flags) { return 0; }
CUresult cuDriverGetVersion(int *version) { *version = 12090; return 0; }
CUresult cuDeviceGet(int *device, int ordinal) { *device = ordinal; return 0; }
CUresult cuDeviceGetCount(int *count) { *count = 1; return 0; }
CUresult cuDeviceGetAttribute(int *value, int attribute, int device) {
  switch (attribute) {
    case 1: *value = 1024; break;                       /* max threads per block */
    case 8: case 97: *value = 232448; break;            /* shared memory per block (opt-in) */
    case 10: *value = 32; break;                        /* warp size */
    case 12: *value = 65536; break;                     /* registers per block */
    case 13: *value = 1980000; break;                   /* clock rate, kHz */
    case 16: *value = 132; break;                       /* multiprocessors */
    case 36: *value = 2619000; break;                   /* memory clock rate, kHz */
    case 37: *value = 5120; break;                      /* memory bus width, bits */
    case 75: *value = 9; break;                         /* compute capability major */
    case 76: *value = 0; break;                         /* compute capability minor */
    default: *value = 1;
  }
  return 0;
}
CUresult cuCtxGetCurrent(void **context) { *context = handle; return 0; }
CUresult cuCtxSetCurrent(void *context) { return 0; }
CUresult cuCtxGetDevice(int *device) { *device = 0; return 0; }
CUresult cuCtxGetLimit(size_t *value, int limit) { *value = 0; return 0; }
CUresult cuCtxSetLimit(int limit, size_t value) { return 0; }
CUresult cuDevicePrimaryCtxRetain(void **context, int device) { *context = handle; return 0; }
CUresult cuModuleLoadData(void **module, const void *image) { *module = handle; return 0; }
CUresult cuModuleUnload(void *module) { return 0; }
CUresult cuModuleGetFunction(void **function, void *module, const char *name) {
  *function = handle; return 0;
}
CUresult cuFuncGetAttribute(int *value, int attribute, void *function) {
  /* MAX_THREADS_PER_BLOCK 1024, NUM_REGS 32; no local memory, no shared memory */
  *value = attribute == 0 ? 1024 : attribute == 4 ? 32 : 0;
  return 0;
}
CUresult cuFuncSetAttribute(void *function, int attribute, int value) { return 0; }
CUresult cuFuncSetCacheConfig(void *function, int config) { return 0; }
CUresult cuPointerGetAttribute(void *data, int attribute, uint64_t pointer) {
  memcpy(data, &pointer, sizeof pointer); return 0;    /* DEVICE_POINTER: the address itself */
}
CUresult cuPointerGetAttributes(unsigned count, int *attributes, void **data, uint64_t pointer) {
  for (unsigned i = 0; i < count; i++) if (data[i]) memcpy(data[i], &pointer, sizeof pointer);
  return 0;
}
CUresult cuStreamIsCapturing(void *stream, int *status) { *status = 0; return 0; }
CUresult cuOccupancyMaxActiveClusters(int *clusters, void *function, const void *config) {
  *clusters = 1; return 0;
}
CUresult cuTensorMapEncodeTiled(void) { return 0; }
CUresult cuTensorMapEncodeIm2col(void) { return 0; }
CUresult cuGetErrorString(CUresult error, const char **text) { *text = "stub"; return 0; }
CUresult cuGetErrorName(CUresult error, const char **text) { *text = "stub"; return 0; }
CUresult cuLaunchKernelEx(const void *config, void *function, void **params, void **extra) {
  launches++; return 0;
}
CUresult cuLaunchKernel(void *function, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shared, void *stream, void **params,
                        void **extra) {
  launches++; return 0;
}
