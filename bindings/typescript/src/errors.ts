/**
 * Errors: one class per wire error code of docs/protocol.md, under one root.
 *
 * An error frame `{"ok": false, "error": {"code", "reason", "rule"}}` is thrown as
 * the class of its code (the root `GatosError` for a code this client does not know,
 * so a newer daemon never breaks it). The hierarchy mirrors the Python client's:
 * `InvalidNamespaceError` is an `InvalidNameError`, the bus, job, fold and cache codes
 * have a root class each, so `catch (e) { if (e instanceof JobError) … }` works.
 */
export class GatosError extends Error {
  static readonly code: string = "INTERNAL";
  readonly code: string;
  readonly reason: string;
  /** The deciding policy rule (`<file>:<line>`), for POLICY_DENY. */
  readonly rule: string | undefined;
  /** The id of the request the frame answered. */
  readonly requestId: string | undefined;

  constructor(reason: string, options: { code?: string; rule?: string; requestId?: string } = {}) {
    const code = options.code ?? (new.target as typeof GatosError).code;
    super(`${code}: ${reason}${options.rule ? ` (rule ${options.rule})` : ""}`);
    this.name = new.target.name;
    this.code = code;
    this.reason = reason;
    this.rule = options.rule;
    this.requestId = options.requestId;
  }
}

export class BadFrameError extends GatosError { static override readonly code: string = "BAD_FRAME"; }
export class UnknownTypeError extends GatosError { static override readonly code: string = "UNKNOWN_TYPE"; }
export class TooLargeError extends GatosError { static override readonly code: string = "TOO_LARGE"; }
export class BusyError extends GatosError { static override readonly code: string = "BUSY"; }
export class TimeoutError extends GatosError { static override readonly code: string = "TIMEOUT"; }
export class UnauthorizedError extends GatosError { static override readonly code: string = "UNAUTHORIZED"; }
export class ShuttingDownError extends GatosError { static override readonly code: string = "SHUTTING_DOWN"; }
export class InternalError extends GatosError { static override readonly code: string = "INTERNAL"; }
export class InvalidNameError extends GatosError { static override readonly code: string = "INVALID_NAME"; }
export class InvalidNamespaceError extends InvalidNameError { static override readonly code: string = "INVALID_NS"; }
export class InvalidEventError extends GatosError { static override readonly code: string = "INVALID_EVENT"; }
export class BadEncodingError extends GatosError { static override readonly code: string = "BAD_ENCODING"; }
export class BadSignatureError extends GatosError { static override readonly code: string = "BAD_SIGNATURE"; }
export class UnknownSigAlgError extends BadSignatureError { static override readonly code: string = "UNKNOWN_SIG_ALG"; }
export class UnknownActorError extends GatosError { static override readonly code: string = "UNKNOWN_ACTOR"; }
export class UlidReusedError extends GatosError { static override readonly code: string = "ULID_REUSED"; }
export class NotFoundError extends GatosError { static override readonly code: string = "NOT_FOUND"; }
export class ConflictError extends GatosError { static override readonly code: string = "CONFLICT"; }
export class NotFastForwardError extends ConflictError { static override readonly code: string = "NOT_FAST_FORWARD"; }
export class LockedError extends ConflictError { static override readonly code: string = "LOCKED"; }
export class RefInTheWayError extends GatosError { static override readonly code: string = "REF_IN_THE_WAY"; }
export class StorageError extends GatosError { static override readonly code: string = "STORAGE"; }
export class CorruptError extends StorageError { static override readonly code: string = "CORRUPT"; }
export class NoActorError extends GatosError { static override readonly code: string = "NO_ACTOR"; }
export class InvalidConfigError extends GatosError { static override readonly code: string = "INVALID_CONFIG"; }
export class PolicyDeniedError extends GatosError { static override readonly code: string = "POLICY_DENY"; }
export class InvalidPolicyError extends GatosError { static override readonly code: string = "INVALID_POLICY"; }
export class InvalidGrantError extends GatosError { static override readonly code: string = "INVALID_GRANT"; }
export class FoldError extends GatosError { static override readonly code: string = "FOLD_ERROR"; }
export class InvalidFoldSpecError extends FoldError { static override readonly code: string = "INVALID_FOLD_SPEC"; }
export class FoldFailedError extends FoldError { static override readonly code: string = "FOLD_FAILED"; }
export class ProofMismatchError extends FoldError { static override readonly code: string = "PROOF_MISMATCH"; }
export class FoldFuelError extends FoldFailedError { static override readonly code: string = "FOLD_FUEL"; }
export class FoldMemoryError extends FoldFailedError { static override readonly code: string = "FOLD_MEMORY"; }
export class FoldStateError extends FoldFailedError { static override readonly code: string = "FOLD_STATE"; }
export class BusError extends GatosError { static override readonly code: string = "BUS_ERROR"; }
export class InvalidMessageError extends BusError { static override readonly code: string = "INVALID_MESSAGE"; }
export class InvalidPositionError extends BusError { static override readonly code: string = "INVALID_POSITION"; }
export class NotPendingError extends BusError { static override readonly code: string = "NOT_PENDING"; }
export class UnknownGroupError extends BusError { static override readonly code: string = "UNKNOWN_GROUP"; }
export class JobError extends GatosError { static override readonly code: string = "JOB_ERROR"; }
export class InvalidJobError extends JobError { static override readonly code: string = "INVALID_JOB"; }
export class JobNotFoundError extends JobError { static override readonly code: string = "JOB_NOT_FOUND"; }
export class ClaimLostError extends JobError { static override readonly code: string = "CLAIM_LOST"; }
export class JobFinishedError extends JobError { static override readonly code: string = "JOB_FINISHED"; }
export class BlobNotFoundError extends JobError { static override readonly code: string = "BLOB_NOT_FOUND"; }
export class BlobCorruptError extends JobError { static override readonly code: string = "BLOB_CORRUPT"; }
export class RunnerUnavailableError extends JobError { static override readonly code: string = "RUNNER_UNAVAILABLE"; }
export class BadProofError extends JobError { static override readonly code: string = "BAD_PROOF"; }
export class CacheError extends GatosError { static override readonly code: string = "CACHE_ERROR"; }
export class InvalidQueryError extends CacheError { static override readonly code: string = "INVALID_QUERY"; }
export class InvalidIndexSpecError extends CacheError { static override readonly code: string = "INVALID_INDEX_SPEC"; }
export class CorruptIndexError extends CacheError { static override readonly code: string = "CORRUPT_INDEX"; }
export class SyncFailedError extends GatosError { static override readonly code: string = "SYNC_FAILED"; }

// Raised by the client itself, never sent by a daemon.
export class ConnectionClosedError extends GatosError { static override readonly code: string = "CONNECTION_CLOSED"; }
export class BadReplyError extends GatosError { static override readonly code: string = "BAD_REPLY"; }
export class CidMismatchError extends GatosError { static override readonly code: string = "CID_MISMATCH"; }
export class RequestTimeoutError extends TimeoutError {}

const WIRE: (typeof GatosError)[] = [
  BadFrameError, UnknownTypeError, TooLargeError, BusyError, TimeoutError, UnauthorizedError, ShuttingDownError,
  InternalError, InvalidNameError, InvalidNamespaceError, InvalidEventError, BadEncodingError, BadSignatureError,
  UnknownSigAlgError, UnknownActorError, UlidReusedError, NotFoundError, ConflictError, NotFastForwardError,
  LockedError, RefInTheWayError, StorageError, CorruptError, NoActorError, InvalidConfigError, PolicyDeniedError,
  InvalidPolicyError, InvalidGrantError, FoldError, InvalidFoldSpecError, FoldFailedError, ProofMismatchError,
  FoldFuelError, FoldMemoryError, FoldStateError, BusError, InvalidMessageError, InvalidPositionError,
  NotPendingError, UnknownGroupError, JobError, InvalidJobError, JobNotFoundError, ClaimLostError,
  JobFinishedError, BlobNotFoundError, BlobCorruptError, RunnerUnavailableError, BadProofError, CacheError,
  InvalidQueryError, InvalidIndexSpecError, CorruptIndexError, SyncFailedError,
];

/** Wire code → error class. */
export const CODE_TO_ERROR: ReadonlyMap<string, typeof GatosError> = new Map(WIRE.map((cls) => [cls.code, cls]));

/** The typed error of a failure frame's `error` object. */
export function errorFromWire(error: unknown, requestId?: string): GatosError {
  if (typeof error !== "object" || error === null) {
    return new BadReplyError(`failure frame without an error object: ${JSON.stringify(error)}`, { requestId });
  }
  const e = error as Record<string, unknown>;
  const code = typeof e.code === "string" && e.code ? e.code : "INTERNAL";
  const cls = CODE_TO_ERROR.get(code) ?? GatosError;
  return new cls(typeof e.reason === "string" ? e.reason : "", {
    code,
    rule: typeof e.rule === "string" ? e.rule : undefined,
    requestId,
  });
}
