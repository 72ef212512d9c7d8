//! The CUDA kernels of `kernels/`, and their emulation: the same sources compiled as host
//! C++ with the execution model emulated (`kernels/emu/host_cuda.h`), callable here so
//! that tests check each kernel's arithmetic against a CPU reference without a GPU.

pub mod emulated;
