// The optional parts of the configuration server a normal start wires in (tests may leave them out).
import type { ConfigServerParts } from './server.js';

export function defaultParts(): ConfigServerParts {
  return {};
}
