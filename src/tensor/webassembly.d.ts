// Node 20 provides the WebAssembly global, but TypeScript only declares it in the DOM libs.
// This declares the part the arena (and later the wasm kernels) use.
declare namespace WebAssembly {
  interface MemoryDescriptor {
    initial: number;
    maximum?: number;
    shared?: boolean;
  }
  class Memory {
    constructor(descriptor: MemoryDescriptor);
    readonly buffer: ArrayBuffer | SharedArrayBuffer;
    grow(delta: number): number;
  }
}
