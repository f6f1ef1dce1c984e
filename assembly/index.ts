/*
 * The `wasm` kernel backend's WebAssembly module (docs/kernels.md). Every export takes byte
 * addresses into the imported memory, which is the rank's tensor arena (DESIGN decision 2);
 * kernels that need scratch take a scratch address and export a `...ScratchBytes` sizing
 * function. Shapes are validated by the TypeScript side (src/kernels/wasm/kernels.ts).
 */
export { matmul, matmulScratchBytes } from './gemm';
export { attentionForward, attentionForwardScratchBytes, attentionBackward, attentionBackwardScratchBytes, mergeAttention } from './attention';
export { tileRowsInit, tileSoftmax, tileRowsFinish, tileRowDots, tileProbs, tileNegRows, tileScoreGrads } from './attention-tiles';
export {
  rmsnormForward, rmsnormBackward, rmsnormBackwardScratchBytes, rope, swigluForward, swigluBackward, crossEntropy,
  embeddingForward, embeddingBackward, adamw, axpy, scale, sumSquares,
} from './dense';
