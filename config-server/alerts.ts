// Alerts on the website from the same rules Prometheus is given: deploy/prometheus/tidemark-rules.yml
// is read at start and each rule's expression evaluated every round over the daemons' /metrics, with
// its `for:` duration, severity and summary. The expressions those rules use are understood: a selector
// compared with a number, a ratio of two series, increase() and changes() over a range, `and`, and
// `up == 0` (a daemon that does not answer). A rule written in any other form is listed as not evaluated.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { age } from '../cli/status.js';
import type { Sample } from './prom-text.js';

export const RULES_FILE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../deploy/prometheus/tidemark-rules.yml');

export interface Rule { alert: string; expr: string; forMs: number; severity: string; summary: string }
export interface FiringAlert { name: string; severity: string; target: string; summary: string; sinceMs: number }

const DUR: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const durMs = (s: string): number => {
  const m = /^(\d+)([smhd])$/.exec(s.trim());
  return m ? Number(m[1]) * DUR[m[2]!]! : NaN;
};
const unquote = (s: string): string => s.trim().replace(/^"(.*)"$/, '$1').replace(/\\"/g, '"');

/** The rules of a Prometheus rule file as Tidemark ships it (one alert per `- alert:` entry). */
export function parseRules(text: string): Rule[] {
  const rules: Rule[] = [];
  let cur: Partial<Rule> | null = null;
  for (const line of text.split('\n')) {
    const a = /^\s*- alert:\s*(\S+)/.exec(line);
    if (a) {
      if (cur?.alert) rules.push(done(cur));
      cur = { alert: a[1]! };
      continue;
    }
    if (!cur) continue;
    let m = /^\s*expr:\s*(.+)$/.exec(line);
    if (m) cur.expr = m[1]!.trim();
    m = /^\s*for:\s*(\S+)/.exec(line);
    if (m) cur.forMs = durMs(m[1]!);
    m = /severity:\s*(\w+)/.exec(line);
    if (m) cur.severity = m[1]!;
    m = /^\s*summary:\s*(.+)$/.exec(line);
    if (m) cur.summary = unquote(m[1]!);
  }
  if (cur?.alert) rules.push(done(cur));
  return rules;
}
const done = (r: Partial<Rule>): Rule => ({ alert: r.alert!, expr: r.expr ?? '', forMs: r.forMs ?? 0, severity: r.severity ?? 'warning', summary: r.summary ?? r.alert! });

type Labels = Record<string, string>;
interface Series { labels: Labels; value: number }
const key = (l: Labels): string => JSON.stringify(Object.keys(l).sort().map((k) => [k, l[k]]));
const OPS: Record<string, (a: number, b: number) => boolean> = { '>': (a, b) => a > b, '<': (a, b) => a < b, '>=': (a, b) => a >= b, '<=': (a, b) => a <= b, '==': (a, b) => a === b, '!=': (a, b) => a !== b };

/** "3 * 86400", "0.9", "600". */
function number(s: string): number {
  const parts = s.split('*').map((x) => Number(x.trim()));
  return parts.some((x) => !Number.isFinite(x)) ? NaN : parts.reduce((a, b) => a * b, 1);
}

function matchers(s: string | undefined): Array<(l: Labels) => boolean> {
  if (!s) return [];
  return [...s.matchAll(/(\w+)\s*(=~|!=|=)\s*"([^"]*)"/g)].map(([, k, op, v]) => {
    if (op === '=~') {
      const re = new RegExp(`^(?:${v})$`);
      return (l: Labels) => re.test(l[k!] ?? '');
    }
    return op === '=' ? (l: Labels) => (l[k!] ?? '') === v : (l: Labels) => (l[k!] ?? '') !== v;
  });
}

export class AlertEngine {
  readonly rules: Rule[];
  readonly unsupported: string[] = [];
  private readonly pending = new Map<string, number>();
  /** Counter/gauge history for range functions: series key -> [t, v][] within the longest range used. */
  private readonly history = new Map<string, Array<[number, number]>>();
  private maxRangeMs = 0;
  private firing: FiringAlert[] = [];

  constructor(rulesText: string = readFileSync(RULES_FILE, 'utf8')) {
    this.rules = parseRules(rulesText);
    for (const r of this.rules) for (const m of r.expr.matchAll(/\[(\d+[smhd])\]/g)) this.maxRangeMs = Math.max(this.maxRangeMs, durMs(m[1]!));
    for (const r of this.rules) if (this.eval(r.expr, { byName: new Map(), down: [], nowMs: 0 }) === null) this.unsupported.push(r.alert);
  }

  alerts(): FiringAlert[] {
    return this.firing;
  }

  /** One round: every daemon's samples (labelled with its instance) and which daemons did not answer. */
  update(samples: readonly Sample[], down: ReadonlyArray<{ name: string; cause: string }>, nowMs: number): FiringAlert[] {
    const byName = new Map<string, Series[]>();
    for (const s of samples) {
      const list = byName.get(s.name) ?? [];
      list.push({ labels: s.labels, value: s.value });
      byName.set(s.name, list);
      const k = s.name + key(s.labels);
      const h = this.history.get(k) ?? [];
      h.push([nowMs, s.value]);
      while (h.length > 0 && h[0]![0] < nowMs - this.maxRangeMs) h.shift();
      this.history.set(k, h);
    }
    const ctx = { byName, down, nowMs };
    const firing: FiringAlert[] = [];
    const seen = new Set<string>();
    for (const r of this.rules) {
      const result = this.eval(r.expr, ctx);
      if (result === null) {
        if (!this.unsupported.includes(r.alert)) this.unsupported.push(r.alert);
        continue;
      }
      for (const s of result) {
        const k = r.alert + key(s.labels);
        seen.add(k);
        const since = this.pending.get(k) ?? nowMs;
        this.pending.set(k, since);
        if (nowMs - since >= r.forMs) firing.push({ name: r.alert, severity: r.severity, target: s.labels.volume ?? s.labels.instance ?? '', summary: render(r.summary, s), sinceMs: since });
      }
    }
    for (const k of [...this.pending.keys()]) if (!seen.has(k)) this.pending.delete(k);
    this.firing = firing.sort((a, b) => (a.severity === b.severity ? a.name.localeCompare(b.name) : a.severity === 'critical' ? -1 : 1));
    return this.firing;
  }

  /** The series for which `expr` holds, or null when the form is not one this evaluator knows. */
  private eval(expr: string, ctx: { byName: Map<string, Series[]>; down: ReadonlyArray<{ name: string; cause: string }>; nowMs: number }): Series[] | null {
    const e = expr.trim();
    const and = /^(.+?)\s+and\s+(.+)$/.exec(e);
    if (and) {
      const [a, b] = [this.eval(and[1]!, ctx), this.eval(and[2]!, ctx)];
      if (!a || !b) return null;
      const keys = new Set(b.map((s) => key(s.labels)));
      return a.filter((s) => keys.has(key(s.labels)));
    }
    const cmp = /^(.+?)\s*(==|!=|>=|<=|>|<)\s*([\d.\s*]+)$/.exec(e);
    if (!cmp) return null;
    const [lhs, op, rhs] = [cmp[1]!.trim(), OPS[cmp[2]!]!, number(cmp[3]!)];
    if (!Number.isFinite(rhs)) return null;
    const vec = this.vector(lhs, ctx);
    return vec === null ? null : vec.filter((s) => op(s.value, rhs));
  }

  private vector(e: string, ctx: { byName: Map<string, Series[]>; down: ReadonlyArray<{ name: string; cause: string }>; nowMs: number }): Series[] | null {
    let m = /^up(\{[^}]*\})?$/.exec(e);
    if (m) {
      // `up` is Prometheus's own: 0 for a target it cannot scrape. Here: every daemon, 0 when down.
      return ctx.down.map((d) => ({ labels: { instance: d.name, job: 'tidemark', cause: d.cause }, value: 0 }));
    }
    const sel = (name: string, lbl?: string): Series[] => {
      const ms = matchers(lbl);
      return (ctx.byName.get(name) ?? []).filter((s) => ms.every((f) => f(s.labels)));
    };
    m = /^(\w+)(\{[^}]*\})?$/.exec(e);
    if (m) return sel(m[1]!, m[2]);
    m = /^(\w+)(\{[^}]*\})?\s*\/\s*(\w+)(\{[^}]*\})?$/.exec(e);
    if (m) {
      const den = new Map(sel(m[3]!, m[4]).map((s) => [key(s.labels), s.value]));
      return sel(m[1]!, m[2]).flatMap((s) => {
        const d = den.get(key(s.labels));
        return d === undefined || d === 0 ? [] : [{ labels: s.labels, value: s.value / d }];
      });
    }
    m = /^(increase|changes)\((\w+)(\{[^}]*\})?\[(\d+[smhd])\]\)$/.exec(e);
    if (m) {
      const fn = m[1]!;
      const range = durMs(m[4]!);
      return sel(m[2]!, m[3]).map((s) => {
        const h = (this.history.get(m![2]! + key(s.labels)) ?? []).filter(([t]) => t >= ctx.nowMs - range);
        let v = 0;
        for (let i = 1; i < h.length; i++) {
          const d = h[i]![1] - h[i - 1]![1];
          if (fn === 'changes') v += d !== 0 ? 1 : 0;
          else v += d >= 0 ? d : h[i]![1]; // a counter reset counts from zero
        }
        return { labels: s.labels, value: v };
      });
    }
    return null;
  }
}

function render(summary: string, s: Series): string {
  return summary
    .replace(/\{\{\s*\$labels\.(\w+)\s*\}\}/g, (_, k: string) => s.labels[k] ?? '')
    .replace(/\{\{\s*\$value\s*\|\s*humanizeDuration\s*\}\}/g, () => age(s.value * 1000))
    .replace(/\{\{\s*\$value\s*\|\s*humanizePercentage\s*\}\}/g, () => `${(s.value * 100).toFixed(0)}%`)
    .replace(/\{\{\s*\$value\s*\}\}/g, () => String(Math.round(s.value * 100) / 100));
}
