// Escaping and formatting for the server-rendered pages. Everything interpolated goes through esc().
import { age, bytes } from '../cli/status.js';

const ENT: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const esc = (s: unknown): string => String(s ?? '').replace(/[&<>"']/g, (c) => ENT[c]!);

/** A template literal whose interpolations are escaped unless they are Html already. */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}
export function html(parts: TemplateStringsArray, ...vals: unknown[]): Html {
  let out = parts[0]!;
  vals.forEach((v, i) => {
    out += (Array.isArray(v) ? (v.flat(Infinity) as unknown[]).map((x) => (x instanceof Html ? x.text : esc(x))).join('') : v instanceof Html ? v.text : esc(v)) + parts[i + 1]!;
  });
  return new Html(out);
}

export const fmtBytes = (n: number | null): string => (n === null ? '-' : bytes(n));
export const fmtAge = (ms: number | null): string => (ms === null ? '-' : age(ms));
export const fmtTime = (ms: number | null): string => (ms === null ? '-' : new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z'));
