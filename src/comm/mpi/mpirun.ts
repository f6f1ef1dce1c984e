import { execFileSync } from 'node:child_process';

/**
 * How this project starts Open MPI jobs on one machine (tests, `npm run bench -- cluster`), the
 * way a user would: `mpirun -n N node dist/src/cli/main.js …`.
 */

/** The install command named whenever mpirun or libmpi is missing. */
export const OPEN_MPI_INSTALL = 'apt-get install openmpi-bin libopenmpi-dev';

/**
 * The mpirun program, checked (once per process) to be Open MPI's.
 * @throws Error naming the packages to install when there is no mpirun on PATH, or when it is another MPI's.
 */
let found: string | undefined;

export function findMpirun(): string {
  if (found !== undefined) return found;
  let version: string;
  try {
    version = execFileSync('mpirun', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    throw new Error(`mpirun was not found on PATH: ${OPEN_MPI_INSTALL} (Debian/Ubuntu) installs Open MPI`);
  }
  if (!/Open MPI|OpenRTE/i.test(version)) throw new Error(`mpirun on PATH is not Open MPI's (${version.split('\n')[0]}): ${OPEN_MPI_INSTALL}`);
  found = 'mpirun';
  return found;
}

/**
 * Options for `n` ranks on this machine: more ranks than cores allowed (`--oversubscribe`) and
 * no core binding (ranks share the cores as worker threads of the threads backend do).
 */
export function localMpirunArgs(n: number): string[] {
  return ['--oversubscribe', '--bind-to', 'none', '-n', String(n)];
}

/**
 * The environment for mpirun: Open MPI refuses to run as root unless told twice (its
 * documented switches), which CI and containers need.
 */
export function mpirunEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  return root ? { ...env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' } : { ...env };
}
