// One table of every failure Tidemark reports. Callers match on `code`, never on instanceof.
// docs/ERRORS.md lists every code with what the operator should do; test/unit/common/errors.test.ts
// keeps the two in step.

export type ErrorClass = 'retryable' | 'corruption' | 'config' | 'refused' | 'fatal';

interface ErrorSpec {
  readonly class: ErrorClass;
  readonly summary: string;
}

export const ERRORS = {
  TM_ERR_CONFIG_UNKNOWN_KEY: { class: 'config', summary: 'configuration has a key Tidemark does not know' },
  TM_ERR_CONFIG_INVALID: { class: 'config', summary: 'a configuration value has the wrong type or range' },
  TM_ERR_UNKNOWN_VOLUME: { class: 'refused', summary: 'a volume id that is not configured here' },
  TM_ERR_VOLUME_NOT_ASSIGNED: { class: 'refused', summary: 'the peer may not send this volume' },
  TM_ERR_PEER_REFUSED: { class: 'refused', summary: 'peer certificate is missing, not from our CA, or has the wrong role' },
  TM_ERR_PROTOCOL_VERSION: { class: 'refused', summary: 'peer speaks a protocol version we do not' },
  TM_ERR_PROTOCOL: { class: 'retryable', summary: 'peer sent a message that is not valid at this point' },
  TM_ERR_FRAME_CHECKSUM: { class: 'corruption', summary: 'a frame failed its checksum in transit' },
  TM_ERR_FRAME_TOO_LARGE: { class: 'corruption', summary: 'a frame declares a size beyond the limit' },
  TM_ERR_EXTENT_CHECKSUM: { class: 'corruption', summary: 'extent data does not match the checksum taken where it was read' },
  TM_ERR_EXTENT_BOUNDS: { class: 'refused', summary: 'an extent lies outside the volume, is misaligned, or is longer than any agent makes' },
  TM_ERR_DIFF_TOO_LARGE: { class: 'refused', summary: "a differential declares more extents or bytes than the receiver's maxDiffBytes" },
  TM_ERR_SEQUENCE_GAP: { class: 'retryable', summary: 'a differential arrived out of sequence' },
  TM_ERR_REPLICATION_MISMATCH: { class: 'refused', summary: 'the source restarted replication from scratch (new replication id) onto an existing replica' },
  TM_ERR_VOLUME_GEOMETRY: { class: 'refused', summary: 'volume size or block size differs from the replica' },
  TM_ERR_HRL_CORRUPT: { class: 'corruption', summary: 'a change journal (.hrl) file failed its checksum' },
  TM_ERR_HRL_TRUNCATED: { class: 'corruption', summary: 'a change journal (.hrl) file ends early' },
  TM_ERR_HRL_VERSION: { class: 'refused', summary: 'a change journal (.hrl) file is from a newer format version' },
  TM_ERR_STATE_CORRUPT: { class: 'corruption', summary: 'a state file is unreadable or damaged' },
  TM_ERR_CONNECTION: { class: 'retryable', summary: 'connection to a peer failed or was lost' },
  TM_ERR_PEER_ERROR: { class: 'retryable', summary: 'the peer reported an error' },
  TM_ERR_DISK_FULL: { class: 'retryable', summary: 'no space left where Tidemark writes' },
  TM_ERR_IO: { class: 'retryable', summary: 'an I/O operation failed' },
  TM_ERR_CLOSED: { class: 'fatal', summary: 'work was submitted after the component was closed' },
  TM_ERR_PKI: { class: 'config', summary: 'a key or certificate could not be created or read' },
  TM_ERR_USAGE: { class: 'config', summary: 'the command line is not valid' },
  TM_ERR_UNSUPPORTED: { class: 'config', summary: 'this platform, device or filesystem lacks a feature the configuration asks for' },
  TM_ERR_NATIVE: { class: 'retryable', summary: 'a system call made by the native addon failed' },
  TM_ERR_TRACKING_LOST: { class: 'retryable', summary: 'kernel change tracking lost events or cannot prove it saw every write; the volume is resynced' },
  TM_ERR_SOURCE_REGRESSED: { class: 'retryable', summary: "the agent's state is not a continuation of what the process server holds (restored, rolled back, journal lost); the volume is resynced" },
  TM_ERR_REPLICA_REPLACED: { class: 'retryable', summary: 'the replica file or device was replaced under its configured path; it is hashed again and the volume resynced' },
  TM_ERR_REPLICA_DAMAGED: { class: 'corruption', summary: 'replica blocks differ from what the master target wrote there; the recovery points that would recover them are withdrawn and the blocks repaired' },
  TM_ERR_POINT_NOT_FOUND: { class: 'refused', summary: 'the recovery point asked for is not retained (never a point, thinned, or past the window)' },
  TM_ERR_RETENTION_FULL: { class: 'retryable', summary: 'the retention log reached its space cap in pause mode; apply waits for room' },
  TM_ERR_RETENTION_CORRUPT: { class: 'corruption', summary: 'a retention segment failed its checksum or is malformed' },
  TM_ERR_RECOVERY_VERIFY: { class: 'corruption', summary: 'a recovered image does not match the checksums recorded for its point' },
  TM_ERR_CAPTURE: { class: 'retryable', summary: 'a consistent point could not be captured (freeze timed out, a script failed); the point is dropped' },
  TM_ERR_PUSH_INSTALL: { class: 'config', summary: 'push-install could not install, upgrade or remove the agent on a machine; the message names the step' },
  TM_ERR_HOST_KEY: { class: 'refused', summary: "the machine's SSH host key is not the one known_hosts records for it; push-install changed nothing" },
  TM_ERR_FORBIDDEN: { class: 'refused', summary: 'an operator request from someone not allowed to make it (not root, a web page, a foreign Host), or a write to the status port; nothing was done' },
  TM_ERR_OUTPUT_REFUSED: { class: 'refused', summary: 'a recovery output outside the configured roots or devices, a configured replica or state path, or a busy device; nothing was written' },
  TM_ERR_STORE_VERSION: { class: 'refused', summary: "the configuration server's store was written by a newer tidemark; nothing was changed" },
  TM_ERR_STATE_LOCKED: { class: 'refused', summary: 'another daemon or command holds the state (or cache) directory; the message names its pid' },
  TM_ERR_BUCKET_AUTH: { class: 'config', summary: 'the object store refused the bucket tier\'s credentials (wrong access key or secret, or no permission on the bucket)' },
  TM_ERR_BUCKET_MISSING: { class: 'config', summary: 'the configured bucket does not exist on the object store (Tidemark never creates buckets)' },
  TM_ERR_BUCKET_UNAVAILABLE: { class: 'retryable', summary: 'the object store is unreachable or failed a request; the bucket tier backs off and resumes' },
  TM_ERR_BUCKET_CORRUPT: { class: 'corruption', summary: 'an object in the bucket is missing, damaged, or differs from the checksum or ETag recorded for it' },
  TM_ERR_BUCKET_VERSION: { class: 'refused', summary: 'the bucket\'s manifest or an object in it is from a newer format version' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export interface ErrorContext {
  volume?: string;
  seq?: number;
  offset?: number;
  length?: number;
  peer?: string;
  path?: string;
  key?: string;
  [k: string]: unknown;
}

export class TidemarkError extends Error {
  readonly code: ErrorCode;
  readonly context: ErrorContext;

  constructor(code: ErrorCode, message: string, context: ErrorContext = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'TidemarkError';
    this.code = code;
    this.context = context;
  }

  get errorClass(): ErrorClass {
    return ERRORS[this.code].class;
  }

  get retryable(): boolean {
    const c = this.errorClass;
    return c === 'retryable' || c === 'corruption';
  }
}

export function tmError(code: ErrorCode, message: string, context?: ErrorContext, cause?: unknown): TidemarkError {
  return new TidemarkError(code, message, context, cause);
}

/** A Tidemark error (the one place that asks the class: callers use this, then match on `code`). */
export function isTidemarkError(err: unknown): err is TidemarkError {
  return err instanceof TidemarkError;
}

/** Any thrown value as a Tidemark error: itself, or one with the nearest code and its message. */
export function asTidemarkError(err: unknown): TidemarkError {
  if (err instanceof TidemarkError) return err;
  return new TidemarkError(codeOf(err), (err as Error | undefined)?.message ?? String(err), {}, err);
}

/** Damaged bytes (a checksum or structure check failed): the caller may set the damaged item aside. */
export function isCorruption(err: unknown): err is TidemarkError {
  return err instanceof TidemarkError && err.errorClass === 'corruption';
}

/** The Tidemark code of any thrown value; OS errors map to the nearest code. */
export function codeOf(err: unknown): ErrorCode {
  if (err instanceof TidemarkError) return err.code;
  const sys = (err as NodeJS.ErrnoException | undefined)?.code;
  if (sys === 'ENOSPC' || sys === 'EDQUOT') return 'TM_ERR_DISK_FULL';
  if (sys === 'ECONNREFUSED' || sys === 'ECONNRESET' || sys === 'EPIPE' || sys === 'ETIMEDOUT') return 'TM_ERR_CONNECTION';
  return 'TM_ERR_IO';
}

/** Rethrow with what we were doing, keeping the original code: "open journal 00000042.hrl: ENOSPC". */
export function wrap(err: unknown, doing: string, context: ErrorContext = {}): TidemarkError {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof TidemarkError) {
    return new TidemarkError(err.code, `${doing}: ${message}`, { ...err.context, ...context }, err);
  }
  return new TidemarkError(codeOf(err), `${doing}: ${message}`, context, err);
}
