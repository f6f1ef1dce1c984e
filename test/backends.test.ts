import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createLauncher, detectBackend } from '../src/comm/backends.js';
import { ConfigError } from '../src/errors.js';

const run = promisify(execFile);
const backends = new URL('../src/comm/backends.js', import.meta.url).href;

describe('choosing a backend (train.backend, docs/comm.md)', () => {
  it('auto: mpi under mpirun or an srun step, threads otherwise', () => {
    assert.equal(detectBackend({}), 'threads');
    assert.equal(detectBackend({ OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_RANK: '1' }), 'mpi');
    assert.equal(detectBackend({ SLURM_PROCID: '3', SLURM_STEP_NUM_TASKS: '8' }), 'mpi');
    // A batch script's own shell in an allocation: no job step, so a plain run stays on threads.
    assert.equal(detectBackend({ SLURM_PROCID: '0', SLURM_JOB_ID: '77', SLURM_NTASKS: '8' }), 'threads');
  });

  it('an MPICH launcher is refused naming what to use instead', () => {
    assert.throws(() => detectBackend({ PMI_RANK: '0', PMI_SIZE: '2' }), (e: unknown) => e instanceof ConfigError && /MPICH-style launcher .*Open MPI's mpirun .*train\.backend = "threads"/.test(e.message));
  });

  it('an unknown choice names the valid ones', async () => {
    await assert.rejects(createLauncher('nccl' as never), (e: unknown) => e instanceof ConfigError && /train\.backend = "nccl" is invalid: use "auto", "threads", "mpi"/.test(e.message));
  });

  it('threads is the default of a plain run: nothing to install', async () => {
    const launcher = await createLauncher('auto');
    assert.equal(launcher.backend, 'threads');
    assert.equal(launcher.coordinator, true);
    assert.equal(launcher.fixedWorld, undefined);
  });

  it('mpi without a loadable Open MPI fails with the packages to install, not a stack', async () => {
    const script = `import { createLauncher } from ${JSON.stringify(backends)}; try { await createLauncher('mpi'); } catch (e) { console.log(e.name + ': ' + e.message); }`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, LOONGTRAIN_MPI_LIBRARY: '/nonexistent/libmpi.so.40' } });
    assert.match(stdout, /^ConfigError: train\.backend = "mpi" needs Open MPI: .*\/nonexistent\/libmpi\.so\.40.*LOONGTRAIN_MPI_LIBRARY/s);
  });
});
