// `tidemark push-install`: run on the process server's machine, installs, upgrades or removes the agent
// on a protected machine over SSH. Progress goes to stdout, one line per step.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { install } from './install.js';
import { parsePushOptions, PUSH_INSTALL_USAGE } from './options.js';
import { connect, psConfig } from './prepare.js';
import { uninstall } from './uninstall.js';
import { upgrade } from './upgrade.js';

export { PUSH_INSTALL_USAGE } from './options.js';

export async function pushInstall(argv: string[], print: (line: string) => void = console.log): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    print(PUSH_INSTALL_USAGE);
    return;
  }
  const o = parsePushOptions(argv);
  const say = (line: string): void => print(`push-install ${o.host}: ${line}`);
  // The package, the staged etc folder (with the agent's new private key) and the SSH control socket
  // live here, removed at the end.
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-push-'));
  const ssh = connect(o, work);
  try {
    if (o.mode === 'uninstall') await uninstall(o, ssh, say);
    else if (o.mode === 'install') await install(o, psConfig(o), ssh, work, say);
    else await upgrade(o, psConfig(o), ssh, work, say);
  } finally {
    await ssh.close();
    await fsp.rm(work, { recursive: true, force: true });
  }
}
