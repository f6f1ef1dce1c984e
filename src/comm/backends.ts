import { ConfigError } from '../errors.js';
import type { BackendName, LaunchOptions, Launcher } from './launcher.js';
import { ThreadsLauncher } from './threads/launch.js';

/** `train.backend`: "auto" picks mpi when the process was started by mpirun or srun, else threads. */
export type BackendChoice = 'auto' | BackendName;
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'threads', 'mpi'];

/**
 * The backend a launching tool asks for, read from its environment (docs/comm.md, "Choosing a
 * backend"): Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE; Slurm's srun sets SLURM_PROCID and
 * SLURM_STEP_NUM_TASKS for each task of a job step (a batch script's own shell has no step
 * task count, so a plain run inside an allocation stays on threads).
 * @throws ConfigError when MPICH's launcher started the process: its ABI differs from Open MPI's.
 */
export function detectBackend(env: NodeJS.ProcessEnv = process.env): BackendName {
  if (env.OMPI_COMM_WORLD_SIZE !== undefined) return 'mpi';
  if (env.SLURM_PROCID !== undefined && env.SLURM_STEP_NUM_TASKS !== undefined) return 'mpi';
  if (env.PMI_RANK !== undefined && env.PMI_SIZE !== undefined) {
    throw new ConfigError(
      `this process was started by an MPICH-style launcher (PMI_RANK=${env.PMI_RANK}, PMI_SIZE=${env.PMI_SIZE}); the mpi backend binds Open MPI's ABI: ` +
        'start it with Open MPI\'s mpirun (apt-get install openmpi-bin libopenmpi-dev) or set train.backend = "threads"',
    );
  }
  return 'threads';
}

/**
 * The launcher for `choice` ("auto": {@link detectBackend}). The mpi backend loads Open MPI only
 * when chosen, so the threads default needs nothing installed.
 * @throws ConfigError naming train.backend when the choice is unknown or Open MPI cannot be used (with the packages to install).
 */
export async function createLauncher(choice: BackendChoice = 'auto'): Promise<Launcher> {
  if (!BACKEND_CHOICES.includes(choice)) {
    throw new ConfigError(`train.backend = ${JSON.stringify(choice)} is invalid: use ${BACKEND_CHOICES.map((c) => `"${c}"`).join(', ')}`);
  }
  const backend = choice === 'auto' ? detectBackend() : choice;
  const started = Number(process.env.OMPI_COMM_WORLD_SIZE ?? process.env.SLURM_STEP_NUM_TASKS ?? '1');
  if (backend === 'threads' && started > 1) {
    throw new ConfigError(
      `train.backend = "threads" in one of ${started} processes started by mpirun or srun: each would run the whole job and write the same files; ` +
        'leave train.backend at "auto" (it picks mpi there) or start one process without mpirun',
    );
  }
  if (backend === 'threads') return new ThreadsLauncher();
  const { mpiLauncher } = await import('./mpi/launch.js');
  return mpiLauncher();
}

/** Run `opts` on the threads backend: the launcher of tests and of the single-machine benches. */
export function launchRanks(opts: LaunchOptions): Promise<unknown[]> {
  return new ThreadsLauncher().launch(opts);
}
