/**
 * The last step whose metrics row is in metrics.jsonl: one Int32 in a SharedArrayBuffer, set by
 * the coordinator, which writes the rows, and read by rank 0, which writes the checkpoints and
 * runs in the same process on every backend. Rank 0 saves step N only once row N is written: a
 * kill between the two then loses nothing (a resume from checkpoint N − 1 drops row N and runs
 * the step again), whereas checkpoint N without its row would resume after the missing row.
 */

/** A cell at step 0, to pass to the ranks in the launch's args (shared within the process). */
export function loggedStepCell(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4));
}

/** Record that the metrics row of `step` is written, and wake a rank waiting for it. */
export function markLogged(cell: Int32Array, step: number): void {
  Atomics.store(cell, 0, step);
  Atomics.notify(cell, 0);
}

/**
 * Block until the row of `step` is written.
 * @throws Error naming the step and train.commTimeoutMs when it is not written within `timeoutMs` ms.
 */
export function awaitLogged(cell: Int32Array, step: number, timeoutMs: number): void {
  const deadline = performance.now() + timeoutMs;
  for (let seen = Atomics.load(cell, 0); seen < step; seen = Atomics.load(cell, 0)) {
    const left = deadline - performance.now();
    if (left <= 0) throw new Error(`rank 0: the metrics row of step ${step} was not written within train.commTimeoutMs = ${timeoutMs} ms (the last row written is step ${seen}), so its checkpoint was not saved`);
    Atomics.wait(cell, 0, seen, left);
  }
}
