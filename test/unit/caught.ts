// Shared by unit tests that check error codes.
import { TidemarkError } from '../../common/errors.js';

/** What `fn` throws (undefined when it returns); a TidemarkError is checked by code at each use. */
export function caught(fn: () => unknown): Partial<TidemarkError> | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof TidemarkError ? e : { message: `not a TidemarkError: ${String(e)}` };
  }
  return undefined;
}
