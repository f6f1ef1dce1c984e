import { writeFileSync } from 'node:fs';
import { loadDocuments } from '../../src/data/sources.js';

/**
 * Write the first `chars` characters of the Brown corpus to `path`, for tests that start many
 * processes: each one reads and tokenizes its data, so a small real text keeps start-up short.
 */
export function writeBrownSample(path: string, chars: number): void {
  writeFileSync(path, loadDocuments({ source: 'brown' }).documents.join('\n\n').slice(0, chars));
}
