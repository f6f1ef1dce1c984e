/**
 * Error raised for a bad setting before any rank starts: names the field, the value given and
 * what would be valid (DEVELOPERS.md "Bad input gets a clear error").
 */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Error raised when a rank's blocking wait passes its bound (DESIGN decision 8). */
export class CommTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CommTimeoutError';
  }
}

/** Error raised when a rank's tensor arena cannot satisfy an allocation (DESIGN decision 2). */
export class ArenaExhaustedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ArenaExhaustedError';
  }
}

/**
 * Error raised when training stops because its loss or gradient norm stopped being finite for
 * more steps than train.maxNonFiniteSteps allows; names the step and what went non-finite.
 */
export class TrainingDivergedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TrainingDivergedError';
  }
}
