/**
 * The tags user code may give point-to-point calls: integers in [0, TAG_LIMIT). MPI guarantees
 * only 32767 as the largest tag (MPI_TAG_UB, MPI 4.0 §8.1.2), so every backend takes the same
 * range and a program that runs on one runs on the other. Tags at and above the limit are the
 * threads transport's own (its collectives' sequence numbers).
 *
 * Who uses which tags (docs/comm.md "Tags"): ring attention 1…4 (src/attention/ring-groups.ts),
 * ZeRO's uneven collectives ZERO_TAG_BASE + 4·segment + op (src/optim/zero-tags.ts).
 */
export const TAG_LIMIT = 32768;

/** First tag of ZeRO's per-segment traffic; the range below it is left to attention and tests. */
export const ZERO_TAG_BASE = 1024;

/**
 * @throws RangeError naming `op`, the tag and the valid range when `tag` is not a user tag.
 */
export function checkTag(op: string, where: string, tag: number): void {
  if (!Number.isInteger(tag) || tag < 0 || tag >= TAG_LIMIT) {
    throw new RangeError(`${op} in ${where}: tag ${String(tag)} is invalid; user tags are integers in [0, ${TAG_LIMIT})`);
  }
}
