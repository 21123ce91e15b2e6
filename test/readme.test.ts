// The README's walkthrough, run as written against a started service: every `curl` and `npx wasmhost`
// line of its ```sh blocks runs in order (with bash, from a folder where plugins/dist/ is what the
// README uses), must exit 0, and where a ```json (or ```text) block follows, prints that JSON (text). Two rewrites keep it on loopback:
// the service address becomes the test server's, and an external URL a plugin is told to fetch
// becomes a local upstream serving the same document.
import { execFile } from 'node:child_process';
import { symlink } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeDir, repoRoot, useServer } from './helpers.ts';

const run = promisify(execFile);
const README_SERVICE = 'http://127.0.0.1:8080';
/** What the classic Extism example fetches (jsonplaceholder's todo 1), served locally instead. */
const TODO = { userId: 1, id: 1, title: 'delectus aut autem', completed: false };
/** Formatted as jsonplaceholder sends it (2-space indent, 83 bytes), so the README's egress byte count holds. */
const TODO_BODY = JSON.stringify(TODO, null, 2);

interface Step {
  command: string;
  /** The ```json block shown right after the command's block, if any. */
  expected?: string;
  /** The ```text block shown right after it: exactly what the command prints. */
  expectedText?: string;
}

/** The README's CLI lines run this repo's bin (what `npx wasmhost` runs, without npm's own start-up). */
const CLI = 'npx wasmhost ';

/** curl commands of ```sh blocks in order, continuation lines joined, comments dropped. */
function walkthrough(markdown: string): Step[] {
  const steps: Step[] = [];
  const fence = /^```(\w*)\n([\s\S]*?)^```$/gm;
  let lastBlockSteps: Step[] = [];
  for (const match of markdown.matchAll(fence)) {
    const [, lang, body] = match;
    if ((lang === 'json' || lang === 'text') && lastBlockSteps.length > 0) {
      const step = lastBlockSteps[lastBlockSteps.length - 1]!;
      if (lang === 'json') step.expected = body!.trim();
      else step.expectedText = body!.trim();
      lastBlockSteps = [];
      continue;
    }
    lastBlockSteps = [];
    if (lang !== 'sh' && lang !== 'bash') continue;
    const commands = body!
      .replace(/\\\n\s*/g, ' ')
      .split('\n')
      .map((l) => l.replace(/\s+#\s.*$/, '').trim());
    for (const command of commands.filter((c) => c.startsWith('curl ') || c.startsWith(CLI))) {
      const step = { command };
      steps.push(step);
      lastBlockSteps.push(step);
    }
  }
  return steps;
}

/** README JSON may elide: a string with "…" matches any string with the part before it as prefix; a bare … ends an array early. */
function matches(expected: unknown, actual: unknown, at = '$'): string[] {
  if (typeof expected === 'string' && expected.includes('…')) {
    return typeof actual === 'string' && actual.startsWith(expected.slice(0, expected.indexOf('…')))
      ? []
      : [`${at}: ${JSON.stringify(actual)} is not ${expected}`];
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual)) return [`${at}: not an array`];
    const open = expected.at(-1) === '…';
    const items = open ? expected.slice(0, -1) : expected;
    if (open ? actual.length < items.length : actual.length !== items.length)
      return [`${at}: ${actual.length} items, README shows ${items.length}${open ? '+' : ''}`];
    return items.flatMap((item, i) => matches(item, actual[i], `${at}[${i}]`));
  }
  if (expected !== null && typeof expected === 'object') {
    if (actual === null || typeof actual !== 'object' || Array.isArray(actual)) return [`${at}: not an object`];
    const problems = Object.keys(expected).flatMap((k) =>
      matches((expected as Record<string, unknown>)[k], (actual as Record<string, unknown>)[k], `${at}.${k}`),
    );
    const extra = Object.keys(actual).filter((k) => !(k in expected));
    return extra.length > 0 ? [...problems, `${at}: README does not show ${extra.join(', ')}`] : problems;
  }
  // Timings differ from run to run; everything else is printed as shown.
  if (typeof expected === 'number' && /durationMs$/.test(at)) return typeof actual === 'number' ? [] : [`${at}: not a number`];
  return Object.is(expected, actual) ? [] : [`${at}: ${JSON.stringify(actual)}, README shows ${JSON.stringify(expected)}`];
}

function parseShown(json: string): unknown {
  return JSON.parse(json.replace(/,\s*…\s*([\]}])/g, ',"…"$1'));
}

// The upstream is on loopback, which egress refuses unless told otherwise.
const server = useServer({ env: { EGRESS_ALLOW_PRIVATE: 'true' } });
let upstream: Server;
let upstreamUrl: string;
let workDir: string;
let steps: Step[];

beforeAll(async () => {
  steps = walkthrough(await readFile(path.join(repoRoot, 'README.md'), 'utf8'));
  upstream = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(TODO_BODY));
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const address = upstream.address();
  upstreamUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  workDir = await makeTempDir('wasmhost-readme-');
  await symlink(path.join(repoRoot, 'plugins'), path.join(workDir, 'plugins'));
});

afterAll(async () => {
  if (workDir) await removeDir(workDir);
  await new Promise((resolve) => upstream?.close(resolve));
});

/**
 * Service address → test server; an external URL a plugin fetches → the local upstream; its host
 * pattern → 127.0.0.1. `restore` maps what the command prints back to the README's addresses.
 */
function localize(command: string): { command: string; restore: (printed: string) => string } {
  let out = command.replaceAll(README_SERVICE, server.url);
  if (out.startsWith(CLI))
    out = `WASMHOST_URL=${server.url} ${path.join(repoRoot, 'bin', 'wasmhost.mjs')} ${out.slice(CLI.length)}`;
  const external: string[] = [];
  for (const [, url, host] of command.matchAll(/(https?:\/\/([a-z0-9.-]+\.[a-z]{2,})(?::\d+)?)(?=[/"'\s])/gi)) {
    external.push(url!);
    out = out.replaceAll(url!, upstreamUrl).replaceAll(`"${host}"`, '"127.0.0.1"').replaceAll(`'${host}'`, "'127.0.0.1'");
  }
  const restore = (printed: string): string =>
    external.reduce((text, url) => text.replaceAll(upstreamUrl, url), printed.replaceAll(server.url, README_SERVICE));
  return { command: out, restore };
}

// Dozens of commands, each a process of its own (the wasmhost ones start Node): minutes on a busy machine.
describe('README walkthrough', { timeout: 300_000 }, () => {
  it('has curl commands to run', () => {
    expect(steps.length).toBeGreaterThan(0);
  });

  it('every curl and wasmhost command works as written and prints what the README shows', async () => {
    for (const step of steps) {
      const { command, restore } = localize(step.command);
      const { stdout: raw } = await run('bash', ['-c', `set -o pipefail; ${command}`], { cwd: workDir, timeout: 120_000 }).catch(
        (err: { stderr?: string; message: string }) => {
          throw new Error(`README command failed: ${step.command}\n${err.stderr ?? err.message}`);
        },
      );
      const stdout = restore(raw);
      if (step.expectedText !== undefined) expect(stdout.trimEnd(), step.command).toBe(step.expectedText);
      if (step.expected !== undefined) {
        let printed: unknown;
        try {
          printed = JSON.parse(stdout);
        } catch {
          throw new Error(`README command did not print JSON: ${step.command}\n${stdout.slice(0, 500)}`);
        }
        expect(matches(parseShown(step.expected), printed), step.command).toEqual([]);
      }
    }
  });
});
