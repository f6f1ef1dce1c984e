/**
 * The link measurement of src/plan/hosts.ts as an Open MPI job: `mpirun -n 2 node
 * hosts-link-main.js OUT SIZES` runs cpu-link-rank.js (a ping-pong between ranks 0 and 1) on the
 * mpi backend; rank 0's process writes the one-way times to OUT as JSON. Where mpirun places the
 * 2 ranks (one host: shared memory; 2 hosts: TCP over their link) decides what is measured.
 */
import { writeFileSync } from 'node:fs';
import { createLauncher } from '../comm/backends.js';
import type { LinkRankArgs } from './cpu-link-rank.js';

const [out, sizes] = process.argv.slice(2);
if (out === undefined || sizes === undefined) throw new Error('usage: hosts-link-main.js OUT SIZES (comma-separated f32 counts)');
const launcher = await createLauncher('mpi');
const args: LinkRankArgs = { sizes: sizes.split(',').map(Number), warmup: 5, reps: 31 };
const results = await launcher.launch({ world: 2, entry: new URL('./cpu-link-rank.js', import.meta.url).href, args, timeoutMs: 60_000, arenaBytes: 16 * 2 ** 20 });
if (launcher.coordinator) writeFileSync(out, JSON.stringify(results[0]));
