// Locating the Prometheus tools (Debian's prometheus and prometheus-alertmanager packages) for the
// deploy tests; .ci/run installs them, a developer's machine may not have them.
import { spawnSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';

export function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  const p = r.stdout.trim();
  return r.status === 0 && p ? p : undefined;
}

export function skipUnless(cmd: string, pkg: string): string | false {
  return which(cmd) ? false : `${cmd} not found: install Debian's ${pkg} package (apt-get install ${pkg}); .ci/run does`;
}

/** A free loopback TCP port (bound then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}
