/**
 * The link measurement of src/plan/hosts.ts as an Open MPI job: `mpirun -n 2 node
 * hosts-link-main.js OUT` runs cpu-link-rank.js's ping-pong (LINK_LAUNCH) on the mpi backend;
 * rank 0's process writes the one-way times to OUT as JSON. Where mpirun places the 2 ranks (one
 * host: shared memory; 2 hosts: TCP over their link) decides what is measured.
 */
import { writeFileSync } from 'node:fs';
import { createLauncher } from '../comm/backends.js';
import { LINK_LAUNCH } from './cpu-link-rank.js';

const [out] = process.argv.slice(2);
if (out === undefined) throw new Error('usage: hosts-link-main.js OUT');
const launcher = await createLauncher('mpi');
const results = await launcher.launch(LINK_LAUNCH);
if (launcher.coordinator) writeFileSync(out, JSON.stringify(results[0]));
