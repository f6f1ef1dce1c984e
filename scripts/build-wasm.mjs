#!/usr/bin/env node
// Compile the `wasm` kernel backend (assembly/) twice, with and without relaxed SIMD, into
// dist/wasm/ (docs/kernels.md), then check each module's contract with its host: the only
// import is the memory (the rank's arena, shared) and there is no data segment, since any
// byte the module initialised would overwrite arena memory at instantiation.
import asc from 'assemblyscript/asc';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';

const root = fileURLToPath(new URL('..', import.meta.url));
const TARGETS = ['relaxed', 'simd'];
/** WebAssembly binary section ids (spec §5.5.2). */
const SECTION = { data: 11, dataCount: 12 };

function sectionIds(bytes) {
  const ids = [];
  let at = 8;
  while (at < bytes.length) {
    const id = bytes[at++];
    let size = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[at++];
      size |= (b & 0x7f) << shift;
      if (b < 0x80) break;
    }
    ids.push(id);
    at += size;
  }
  return ids;
}

function check(file) {
  const bytes = readFileSync(file);
  const ids = sectionIds(bytes);
  if (ids.includes(SECTION.data) || ids.includes(SECTION.dataCount)) {
    throw new Error(`${file}: has a data segment; the module must not initialise any memory (it would overwrite the arena)`);
  }
  // Node 20 validates relaxed SIMD only behind a V8 flag (src/kernels/wasm/loader.ts).
  if (!WebAssembly.validate(bytes)) v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
  if (!WebAssembly.validate(bytes)) {
    console.warn(`build-wasm: ${file}: this Node cannot validate it (no relaxed SIMD?); imports not checked, the loader will fall back to the plain SIMD build`);
    return;
  }
  const imports = WebAssembly.Module.imports(new WebAssembly.Module(bytes)).map((i) => `${i.module}.${i.name}:${i.kind}`);
  if (imports.length !== 1 || imports[0] !== 'env.memory:memory') {
    throw new Error(`${file}: imports ${imports.join(', ')}; expected only env.memory`);
  }
}

for (const target of TARGETS) {
  const { error, stderr } = await asc.main(['--config', `${root}assembly/asconfig.json`, '--target', target], { stdout: process.stderr, stderr: process.stderr });
  if (error) {
    console.error(stderr.toString());
    console.error(`build-wasm: target ${target} failed: ${error.message}`);
    process.exit(1);
  }
  const out = `${root}dist/wasm/kernels-${target}.wasm`;
  check(out);
  console.error(`build-wasm: ${out}`);
}
