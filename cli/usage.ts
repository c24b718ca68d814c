// The command line's usage errors: commander 14 parses every subcommand (cli/tidemark.ts); its
// complaints (unknown option or command, missing argument) become TM_ERR_USAGE, exit status 64, with
// commander's did-you-mean and a one-line pointer to the command's --help instead of the whole usage.
import { Option, type Command, type CommanderError } from 'commander';
import { tmError, type TidemarkError } from '../common/errors.js';

export const EXIT_USAGE = 64;

/** "tidemark pki issue": the command's full name, for the --help pointer. */
export function commandPath(c: Command): string {
  const names: string[] = [];
  for (let x: Command | null = c; x; x = x.parent) names.unshift(x.name());
  return names.join(' ');
}

export const helpPointer = (c: string): string => `(see \`${c} --help\`)`;

/** A usage error of command `c`, with the pointer to its --help. */
export function usageError(c: Command | string, msg: string): TidemarkError {
  return tmError('TM_ERR_USAGE', `${msg} ${helpPointer(typeof c === 'string' ? c : commandPath(c))}`);
}

/**
 * Commander's errors as TM_ERR_USAGE; --help and --version are not errors (commander printed them).
 * Its "error: " prefix and line break before "(Did you mean ...?)" are folded into one line.
 */
export function fromCommander(c: Command, e: CommanderError): TidemarkError | null {
  // Help asked for, the version, or a command with subcommands given none (commander printed its help on stderr).
  if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help' || e.exitCode === 0) return null;
  const msg = e.message.replace(/^error: /, '').replace(/\n+/g, ' ').trim();
  return usageError(c, msg);
}

/**
 * Options a command cannot run without, checked before its action. Not commander's mandatory options:
 * it checks those before unknown ones, so `--hepl` would be answered with "--config not specified".
 */
const REQUIRED = new WeakSet<Option>();

export function required(flags: string, description: string): Option {
  const o = new Option(flags, description);
  REQUIRED.add(o);
  return o;
}

export function checkRequired(c: Command): void {
  for (const o of c.options) {
    if (REQUIRED.has(o) && c.getOptionValue(o.attributeName()) === undefined) throw usageError(c, `required option '${o.flags}' not given`);
  }
}
