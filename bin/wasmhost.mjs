#!/usr/bin/env node
// `wasmhost` (package.json bin; `npx wasmhost` in a clone). The CLI is TypeScript, run by Node's type
// stripping (Node ≥ 22.18); an older node on PATH hands over to the Node 24 that `npm install` brought.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

if (process.features.typescript) {
  await import(main);
} else {
  const pinned = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(pinned)) {
    console.error(`wasmhost: needs Node.js 24 (this is ${process.version}); run \`npm install\` in the wasmhost folder first`);
    process.exit(1);
  }
  const result = spawnSync(pinned, [main, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(result.status ?? 1);
}
