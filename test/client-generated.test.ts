// The typed client's types (src/client/schema.ts) are generated from openapi.yaml: a change to the
// contract must come with `npm run generate:client`, or the CLI and the playground drift from the API.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './helpers.ts';

const run = promisify(execFile);

describe('typed client', () => {
  it('is what openapi-typescript generates from openapi.yaml now (else run npm run generate:client)', async () => {
    const bin = path.join(repoRoot, 'node_modules', '.bin', 'openapi-typescript');
    const result = await run(bin, ['openapi.yaml', '-o', 'src/client/schema.ts', '--check'], { cwd: repoRoot }).then(
      ({ stdout, stderr }) => ({ ok: true, output: stdout + stderr }),
      (err: { stdout?: string; stderr?: string }) => ({ ok: false, output: `${err.stdout ?? ''}${err.stderr ?? ''}` }),
    );
    expect(result.ok, `src/client/schema.ts is stale: run npm run generate:client\n${result.output}`).toBe(true);
  });
});
