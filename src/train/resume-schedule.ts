import type { Config } from './config.js';

/** The run's length and learning-rate schedule, recorded in each checkpoint so --resume continues it. */
export interface RunSchedule {
  steps: number;
  lr: number;
  minLr: number;
  warmupSteps: number;
}

const KEYS: ReadonlyArray<[keyof RunSchedule, string]> = [
  ['steps', 'train.steps'],
  ['lr', 'optim.lr'],
  ['minLr', 'optim.minLr'],
  ['warmupSteps', 'optim.warmupSteps'],
];

export function scheduleOf(cfg: Config): RunSchedule {
  return { steps: cfg.train.steps, lr: cfg.optim.lr, minLr: cfg.optim.minLr, warmupSteps: cfg.optim.warmupSteps };
}

/**
 * The config a resumed run continues with: each schedule key (train.steps, optim.lr,
 * optim.minLr, optim.warmupSteps) comes from the checkpoint unless it is in `explicit` (the
 * keys this command set with --set), so resuming a shortened run does not run on to the config
 * file's length with the learning rate back up. Without `explicit` (a config object from code)
 * the config is taken as given. Every difference from the checkpoint is returned as a line to show.
 */
export function resumeSchedule(cfg: Config, saved: RunSchedule | undefined, explicit: ReadonlySet<string> | undefined): { cfg: Config; notes: string[] } {
  if (saved === undefined) return { cfg, notes: [] };
  const now = scheduleOf(cfg);
  const next = { ...now };
  const notes: string[] = [];
  for (const [field, key] of KEYS) {
    if (saved[field] === now[field]) continue;
    if (explicit === undefined || explicit.has(key)) {
      notes.push(`resume: ${key} changed from ${saved[field]} (checkpoint) to ${now[field]}${explicit === undefined ? '' : ' (--set)'}`);
    } else {
      next[field] = saved[field];
      notes.push(`resume: ${key} = ${saved[field]} from the checkpoint (the config says ${now[field]}; --set ${key}=… changes it)`);
    }
  }
  return {
    cfg: { ...cfg, train: { ...cfg.train, steps: next.steps }, optim: { ...cfg.optim, lr: next.lr, minLr: next.minLr, warmupSteps: next.warmupSteps } },
    notes,
  };
}
