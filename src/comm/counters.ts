import { GROUP_KINDS, type CommCounters, type GroupKind } from './process-group.js';

/** A fresh all-zero counter record. */
export function zeroCounters(): CommCounters {
  return { bytesSent: 0, messagesSent: 0, bytesReceived: 0, messagesReceived: 0, waitMs: 0 };
}

/** One zero counter record per group kind (DESIGN decision 7: counters are kept per kind). */
export function zeroCountersByKind(): Record<GroupKind, CommCounters> {
  return Object.fromEntries(GROUP_KINDS.map((k) => [k, zeroCounters()])) as Record<GroupKind, CommCounters>;
}

/** A deep copy, so callers can keep a snapshot while counting goes on. */
export function copyCountersByKind(counters: Record<GroupKind, CommCounters>): Record<GroupKind, CommCounters> {
  return Object.fromEntries(GROUP_KINDS.map((k) => [k, { ...counters[k] }])) as Record<GroupKind, CommCounters>;
}
