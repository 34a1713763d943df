// Shared by the end-to-end tests of slm serve: starts a real server on a
// free loopback port and stops it when the test is done.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

export const slmBin = process.env.SLM_BIN || 'slm';

// A folder of this test's own for whatever it writes (screenshots, adapters).
export function workDir(name) {
  const dir = path.join(process.env.SLM_WORK || path.join('/tmp', 'slm-serve-tests'), name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

// Runs `slm serve --port 0 ...args` and resolves once it prints the address it
// listens on. The returned object has url, the child process, the stderr seen
// so far (log()) and stop(), which ends the server and resolves with its exit code.
export function startServer(args = [], { timeoutMs = 60000, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(slmBin, ['serve', '--port', '0', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let stderr = '';
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`slm serve did not start within ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    const exited = new Promise((done) => child.on('exit', (code, signal) => done(code ?? signal)));
    child.stdout.on('data', () => {});
    child.stderr.on('data', (chunk) => {
      stderr += chunk.toString();
      const m = stderr.match(/listening on (http:\/\/[^\s]+)/);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        resolve({
          url: m[1],
          child,
          log: () => stderr,
          stop: async (signal = 'SIGTERM') => {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal);
            return exited;
          },
        });
      }
    });
    child.on('exit', (code) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`slm serve exited with ${code} before listening; stderr:\n${stderr}`));
    });
  });
}
