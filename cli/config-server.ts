// `tidemark config-server`: run the configuration server (config-server/), and
// `tidemark config-server hash-password`: the scrypt hash a user entry in its config holds.
import { hashPassword } from '../config-server/auth.js';
import { loadConfigServerConfig } from '../config-server/config.js';
import { ConfigServer } from '../config-server/server.js';
import { defaultParts } from '../config-server/parts.js';
import { tmError } from '../common/errors.js';
import { rootLogger } from '../common/log.js';
import { runDaemon } from './run-daemon.js';

export function runConfigServer(file: string): Promise<void> {
  const cfg = loadConfigServerConfig(file);
  const log = rootLogger(`config-server ${cfg.name}`);
  return runDaemon(new ConfigServer(cfg, log, defaultParts()), log);
}

/** Read the password from stdin (first line), never from the command line where `ps` shows it. */
export async function hashPasswordCommand(): Promise<void> {
  let text = '';
  process.stdin.setEncoding('utf8');
  for await (const c of process.stdin) text += c as string;
  const password = text.split('\n')[0]!.replace(/\r$/, '');
  if (password.length < 8) throw tmError('TM_ERR_USAGE', 'give the password (8 characters or more) on stdin: echo -n "..." | tidemark config-server hash-password');
  console.log(await hashPassword(password));
}
