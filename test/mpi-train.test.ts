import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { findMpirun, localMpirunArgs, mpirunEnv } from '../src/comm/mpi/mpirun.js';
import { loadConfig } from '../src/train/config.js';
import { train } from '../src/train/train.js';
import { runMpirun } from './helpers/backends.js';
import { assertClose } from './helpers/assert-close.js';
import { writeBrownSample } from './helpers/brown-sample.js';

/*
 * Training under `mpirun` as a user starts it (`mpirun -n N node …/main.js train …`), held
 * against the threads backend: same losses, bit-identical reruns, checkpoints that cross
 * backends, layouts and ZeRO stages, and a killed rank that ends the whole job.
 */

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'loongtrain-mpi-train-'));
after(() => rmSync(root, { recursive: true, force: true }));
let runs = 0;

/** ~200 KB of the Brown corpus as one file: every process tokenizes it, so it stays small. */
const text = join(root, 'brown.txt');
before(() => {
  findMpirun();
  writeBrownSample(text, 200_000);
});

/** A small model whose 10 steps take seconds on 8 ranks; every run gets its own folder. */
function settings(dir: string, overrides: readonly string[]): string[] {
  return [
    'model.dim=32', 'model.layers=2', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=64',
    'train.seqLen=128', 'train.steps=10', 'optim.warmupSteps=2', 'optim.lr=1e-2', 'optim.minLr=1e-3',
    'data.source=files', `data.path=${text}`, 'log.progress=plain', 'log.every=1',
    `log.dir=${dir}`, `save.dir=${join(dir, 'checkpoints')}`, 'train.commTimeoutMs=30000',
    ...overrides,
  ];
}

function newDir(): string {
  return join(root, `run-${runs++}`);
}

function metricsLosses(dir: string): number[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);
}

/** `mpirun -n world node main.js train --set …` on this machine; its losses from rank 0's metrics. */
async function mpiTrain(world: number, overrides: readonly string[], flags: readonly string[] = []): Promise<{ dir: string; losses: number[]; stderr: string }> {
  const dir = newDir();
  const sets = settings(dir, overrides).flatMap((s) => ['--set', s]);
  const run = await runMpirun([...localMpirunArgs(world), process.execPath, CLI, 'train', ...sets, ...flags], 300_000);
  assert.equal(run.code, 0, `mpirun -n ${world} failed:\n${run.stderr}`);
  return { dir, losses: metricsLosses(dir), stderr: run.stderr };
}

async function threadsTrain(overrides: readonly string[], opts: Parameters<typeof train>[1] = {}): Promise<{ dir: string; losses: number[] }> {
  const dir = newDir();
  const result = await train(loadConfig(undefined, [...settings(dir, overrides), 'log.progress=none', 'train.backend=threads']), opts);
  return { dir, losses: result.steps.map((s) => s.loss) };
}

describe('training under mpirun equals the threads backend', () => {
  const layouts: Array<[string, number, string[]]> = [
    ['hp2×cp2', 4, ['parallel.hp=2', 'parallel.cp=2']],
    ['loongtrain w=2 context-first', 8, ['parallel.preset=loongtrain', 'parallel.sp=8', 'parallel.hp=2', 'parallel.innerRingSize=2', 'parallel.placement=context-first']],
    ['usp', 8, ['parallel.preset=usp', 'parallel.sp=8', 'parallel.hp=2']],
  ];
  for (const [name, world, layout] of layouts) {
    it(`${name} on ${world} processes: losses within 1e-6 relative over 10 steps`, async () => {
      const [mpi, threads] = [await mpiTrain(world, layout), await threadsTrain(layout)];
      assert.match(mpi.stderr, new RegExp(`Open MPI, ${world} processes`), 'the first log line names the backend');
      assertClose(mpi.losses, threads.losses, 1e-6, name);
    });
  }

  it('two runs of one config under mpirun are bit-identical', async () => {
    const layout = ['parallel.hp=2', 'parallel.cp=2'];
    const [a, b] = [await mpiTrain(4, layout), await mpiTrain(4, layout)];
    assert.deepEqual(a.losses, b.losses);
    const weights = (dir: string): Buffer => readFileSync(join(dir, 'checkpoints', 'step-00000010', 'model.safetensors'));
    assert.ok(weights(a.dir).equals(weights(b.dir)), 'final weights are bit-identical');
  });

  it('a world size that differs from dp·hp·cp is refused naming both', async () => {
    const dir = newDir();
    const sets = settings(dir, ['parallel.hp=2', 'parallel.cp=2']).flatMap((s) => ['--set', s]);
    const run = await runMpirun([...localMpirunArgs(3), process.execPath, CLI, 'train', ...sets], 60_000);
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /the mpi launcher started 3 ranks but the layout dp=1 hp=2 cp=2 .* needs dp·hp·cp = 4: start it with mpirun -n 4/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace for a user-fixable problem');
  });
});

describe('checkpoints cross backends, layouts and ZeRO stages', () => {
  it('saved under mpi (4 ranks, zeroStage 3), resumed under threads (2 ranks, zeroStage 1): the loss curve continues within 1e-5', async () => {
    const reference = await threadsTrain(['parallel.hp=2']);
    const first = await mpiTrain(4, ['parallel.hp=2', 'parallel.cp=2', 'optim.zeroStage=3'], ['--stop-at', '5']);
    assertClose(first.losses, reference.losses.slice(0, 5), 1e-5, 'mpi steps 1–5');
    const cfg = loadConfig(undefined, [...settings(first.dir, ['parallel.cp=2', 'optim.zeroStage=1']), 'log.progress=none', 'train.backend=threads']);
    const resumed = await train(cfg, { resume: join(first.dir, 'checkpoints') });
    assertClose(resumed.steps.map((s) => s.loss), reference.losses.slice(5), 1e-5, 'threads steps 6–10 after the mpi checkpoint');
  });

  it('saved under threads (2 ranks, zeroStage 1), resumed under mpi (4 ranks, zeroStage 3)', async () => {
    const reference = await threadsTrain(['parallel.hp=2']);
    const first = await threadsTrain(['parallel.cp=2', 'optim.zeroStage=1'], { stopAt: 5 });
    const dir = first.dir;
    const sets = settings(dir, ['parallel.hp=2', 'parallel.cp=2', 'optim.zeroStage=3']).flatMap((s) => ['--set', s]);
    const run = await runMpirun([...localMpirunArgs(4), process.execPath, CLI, 'train', ...sets, '--resume'], 300_000);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /resuming from .*step-00000005/);
    assertClose(metricsLosses(dir), reference.losses, 1e-5, 'threads steps 1–5 then mpi steps 6–10');
  });
});

/** Processes whose command line names `tag` (the run's own folder), other than this one. */
function processesOf(tag: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(tag)) pids.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}

/** The pid of the job's process with OMPI_COMM_WORLD_RANK = rank. */
function rankPid(tag: string, rank: number): number | undefined {
  for (const pid of processesOf(tag)) {
    try {
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      if (env.includes(`OMPI_COMM_WORLD_RANK=${rank}`)) return pid;
    } catch {
      // Ended meanwhile.
    }
  }
  return undefined;
}

/** Start a 4-rank hp2×cp2 job of many steps and wait until it has logged step 3. */
async function startLongJob(dir: string): Promise<{ child: ChildProcess; stderr: () => string; exited: Promise<number | null> }> {
  const sets = settings(dir, ['parallel.hp=2', 'parallel.cp=2', 'train.steps=100000']).flatMap((s) => ['--set', s]);
  const child = spawn(findMpirun(), [...localMpirunArgs(4), process.execPath, CLI, 'train', ...sets], { env: mpirunEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const deadline = Date.now() + 120_000;
  while (!/step 3 \|/.test(stderr) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.match(stderr, /step 3 \|/, 'the job trained before being stopped');
  return { child, stderr: () => stderr, exited };
}

/** Wait for the job to end (killing it after 60 s); its exit code and the seconds it took. */
async function ended(job: { child: ChildProcess; exited: Promise<number | null> }): Promise<{ code: number | null; seconds: number }> {
  const t0 = Date.now();
  const limit = setTimeout(() => job.child.kill('SIGKILL'), 60_000);
  const code = await job.exited;
  clearTimeout(limit);
  return { code, seconds: (Date.now() - t0) / 1000 };
}

describe('a failing rank ends the whole job', () => {
  it('kill -9 of one rank mid-run: mpirun exits non-zero within 30 s naming that rank, and no process of the job is left', async () => {
    const dir = newDir();
    const job = await startLongJob(dir);
    const victim = rankPid(dir, 2);
    assert.ok(victim !== undefined, 'found the process of rank 2');
    process.kill(victim, 'SIGKILL');
    const { code, seconds } = await ended(job);
    const stderr = job.stderr();
    assert.notEqual(code, 0);
    assert.ok(seconds < 30, `mpirun took ${seconds.toFixed(1)} s to end the job`);
    assert.match(stderr, /rank 2 .*(signal 9|Killed)|(signal 9|Killed).*rank 2/s, `mpirun names the killed rank:\n${stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(processesOf(dir), [], 'no process of the job is left');
    assert.ok(!existsSync(join(dir, 'checkpoints', 'step-00000100')), 'the run did not go on');
  });
});

describe('stopping an mpi job', () => {
  it('SIGUSR1 to mpirun: forwarded, every rank saves after its step, the job ends with exit 0 and prints mpirun -n 4 … --resume', async () => {
    const dir = newDir();
    const job = await startLongJob(dir);
    job.child.kill('SIGUSR1');
    const { code } = await ended(job);
    const stderr = job.stderr();
    assert.equal(code, 0, stderr.slice(-3000));
    assert.match(stderr, /SIGUSR1: stopping after the current step and saving a checkpoint/);
    assert.match(stderr, /continue with: mpirun -n 4 npx loongtrain train .* --resume\n/);
    assert.doesNotMatch(stderr, /--resume --resume/);
    assert.deepEqual(processesOf(dir), [], 'no process of the job is left');
  });

  it('train.backend = "threads" under mpirun is refused: every process would run the whole job', async () => {
    const run = await runMpirun([...localMpirunArgs(2), process.execPath, CLI, 'train', ...settings(newDir(), ['train.backend=threads']).flatMap((s) => ['--set', s])], 60_000);
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /train\.backend = "threads" in one of 2 processes started by mpirun or srun: each would run the whole job/);
  });

  it('SIGTERM to mpirun: every rank stops after its current step, rank 0 saves a checkpoint, and --resume continues from it', async () => {
    const dir = newDir();
    // The default gives the ranks 1 s between mpirun's SIGCONT and its SIGTERM, and 1 s more to SIGKILL (docs/comm.md).
    const job = await startLongJob(dir);
    job.child.kill('SIGTERM');
    await ended(job);
    const stderr = job.stderr();
    const m = /checkpoint: step (\d+) saved to (\S+)/.exec(stderr);
    assert.ok(m !== null, `rank 0 saved a checkpoint after the signal:\n${stderr.slice(-3000)}`);
    assert.match(stderr, /SIG(CONT|TERM)[^:\n]*: stopping after the current step and saving a checkpoint/);
    const stoppedAt = Number(m[1]);
    assert.ok(existsSync(join(m[2]!, 'model.safetensors')));
    assert.deepEqual(processesOf(dir), [], 'no process of the job is left');
    const resumed = await runMpirun([...localMpirunArgs(4), process.execPath, CLI, 'train', ...settings(dir, ['parallel.hp=2', 'parallel.cp=2', `train.steps=${stoppedAt + 2}`]).flatMap((s) => ['--set', s]), '--resume'], 300_000);
    assert.equal(resumed.code, 0, resumed.stderr);
    const steps = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
    assert.deepEqual(steps, Array.from({ length: stoppedAt + 2 }, (_, i) => i + 1));
  });
});
