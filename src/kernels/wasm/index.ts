/** The `wasm` kernel backend (docs/kernels.md): AssemblyScript SIMD kernels over a rank's arena. */
export { createWasmKernels, type WasmKernelOptions, type WasmKernels } from './kernels.js';
export { wasmAvailable, type WasmAvailability, type WasmSimd } from './loader.js';
