/**
 * While `body` runs, the first of `signals` calls `first(signal)`; later ones call `again`
 * (if given). Handlers are removed when it settles.
 */
export async function withStopSignals<T>(signals: readonly NodeJS.Signals[], first: (signal: NodeJS.Signals) => void, again: ((signal: NodeJS.Signals) => void) | undefined, body: () => Promise<T>): Promise<T> {
  let seen = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (!seen) {
      seen = true;
      first(signal);
    } else {
      again?.(signal);
    }
  };
  for (const s of signals) process.on(s, handler);
  try {
    return await body();
  } finally {
    for (const s of signals) process.off(s, handler);
  }
}
