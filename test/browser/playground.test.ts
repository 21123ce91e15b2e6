// The playground at `/` in a real browser: upload a plugin through the page, call it, and see its
// output, logs and egress audit, with no console error, no CSP violation and nothing fetched from
// anywhere but the service. Screenshots: test-artifacts/playground-*.png.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, pluginPath, removeDir, repoRoot, serverForTest, type TestServer } from '../helpers.ts';
import { startUpstream, type Upstream } from '../upstream.ts';
import { launchBrowser, screenshot, watchedPage, type Browser, type PageProblems } from './browser.ts';

const run = promisify(execFile);
/** What `npx wasmhost` runs in this repo. */
const BIN = path.join(repoRoot, 'bin', 'wasmhost.mjs');
/** Pages answer at their own pace on a busy machine: wait for what a person would wait for. */
const eventually = <T>(read: () => Promise<T>) => expect.poll(read, { timeout: 20_000, interval: 100 });
const NO_PROBLEMS: PageProblems = { consoleErrors: [], pageErrors: [], cspViolations: [], foreignRequests: [] };

let browser: Browser;
let upstream: Upstream;

beforeAll(async () => {
  upstream = await startUpstream();
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await upstream?.close();
});

async function withServer(env: Record<string, string>, test: (server: TestServer) => Promise<void>): Promise<void> {
  // The browser's driver shares this process's event loop: load shedding would answer 503 on a busy machine.
  await test(await serverForTest({ env: { MAX_EVENT_LOOP_DELAY_MS: '0', ...env } }));
}

async function uploadThroughPage(page: Page, name: string, route: string): Promise<void> {
  await page.getByLabel('wasm file').setInputFiles(pluginPath('hello'));
  const form = page.locator('form.upload');
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('Description').fill('uploaded from the playground');
  await form.getByRole('button', { name: '+ add config row' }).click();
  await form.getByLabel('Config key 1').fill('route');
  await form.getByLabel('Config value 1').fill(route);
  await form.getByLabel('Allowed hosts').fill('127.0.0.1');
  await form.getByRole('button', { name: 'Upload' }).click();
  await eventually(() => form.locator('.note').textContent()).toBe(`stored as ${name}`);
}

describe('playground', () => {
  it('uploads a plugin, calls it, and shows output, logs, egress, duration and the same call as commands', async () => {
    await withServer({ EGRESS_ALLOW_PRIVATE: 'true' }, async (server) => {
      const { page, problems } = await watchedPage(browser, server.url);
      const response = await page.goto(`${server.url}/`);
      expect(response?.headers()['content-security-policy']).toContain("default-src 'none'");
      await eventually(() => page.locator('.plugins .empty').textContent()).toBe('No plugins yet: upload one.');

      const route = `${upstream.url}/todos/1`;
      await uploadThroughPage(page, 'hello-browser', route);
      // Uploaded means listed and picked: its details show its exports and stored defaults.
      await eventually(() => page.locator('.plugins button.plugin.selected .name').textContent()).toBe('hello-browser');
      const details = page.locator('section.details');
      await eventually(() => details.locator('.exports').textContent()).toBe('say_hello');
      expect(await details.textContent()).toContain(`route=${route}`);
      expect(await details.textContent()).toContain('127.0.0.1');

      const call = page.locator('form.call');
      await call.getByLabel('input text').fill('😀 Hello from the browser');
      await call.getByRole('button', { name: 'Call say_hello' }).click();

      const result = page.getByRole('region', { name: 'result' });
      await eventually(() => result.getByLabel('output').textContent()).toBe(
        'param: 😀 Hello from the browser title: delectus aut autem',
      );
      const logs = result.getByLabel('logs').locator('li');
      expect(await logs.count()).toBe(2);
      expect(
        await logs.evaluateAll((items) => items.map((li) => `${li.className}: ${li.querySelector('.message')?.textContent}`)),
      ).toEqual(['log level-info: hello this is wasm', `log level-info: calling ${route}`]);
      // Coloured by level: the level's colour comes from the stylesheet, not the default text colour.
      const levelColour = await logs
        .first()
        .locator('.level')
        .evaluate((el) => getComputedStyle(el).color);
      const textColour = await logs
        .first()
        .locator('.message')
        .evaluate((el) => getComputedStyle(el).color);
      expect(levelColour).not.toBe(textColour);

      const egressRows = result.getByLabel('egress').locator('tbody tr');
      expect(await egressRows.count()).toBe(1);
      expect(await egressRows.first().locator('td').allTextContents()).toEqual([
        'GET',
        route,
        '200',
        '83',
        expect.stringMatching(/ ms$/),
        'yes',
        '',
      ]);
      expect(await result.getByLabel('duration').textContent()).toMatch(/ms in the service · .* ms round trip/);
      expect(upstream.received.some((r) => r.url === '/todos/1')).toBe(true);

      // The curl line the page offers repeats the call for real.
      const curl = await result.getByLabel('curl command').textContent();
      const { stdout } = await run('bash', ['-c', curl!], { timeout: 20_000 });
      expect(JSON.parse(stdout)).toMatchObject({ output: 'param: 😀 Hello from the browser title: delectus aut autem' });
      const cli = await result.getByLabel('wasmhost command').textContent();
      expect(cli).toBe(
        `WASMHOST_URL=${server.url} npx wasmhost call hello-browser say_hello --input '😀 Hello from the browser' --log-level info`,
      );
      // And so does the wasmhost line, through this repo's bin (what npx runs).
      const cliRun = await run('bash', ['-c', cli!.replace('npx wasmhost', BIN)], {
        timeout: 20_000,
      });
      expect(cliRun.stdout).toBe('param: 😀 Hello from the browser title: delectus aut autem');
      expect(cliRun.stderr).toContain('hello this is wasm');

      await screenshot(page, 'playground-call');

      // Search narrows the list; a search that matches nothing says so.
      const search = page.getByLabel('search plugins');
      await search.fill('no such plugin');
      await eventually(() => page.locator('.plugins .empty').textContent()).toBe('No match.');
      await search.fill('say_hello');
      expect(await page.locator('.plugins button.plugin').count()).toBe(1);

      expect(await problems()).toEqual(NO_PROBLEMS);
    });
  });

  it('shows binary output in hex, and a failed call as its code and message', async () => {
    await withServer({}, async (server) => {
      const { page, problems } = await watchedPage(browser, server.url);
      await page.goto(`${server.url}/`);
      await page.getByLabel('wasm file').setInputFiles(pluginPath('echo'));
      await page.locator('form.upload').getByRole('button', { name: 'Upload' }).click();
      await eventually(() => page.locator('section.details .exports').textContent()).toBe('echo');

      const call = page.locator('form.call');
      const bytes = Buffer.from([0, 1, 2, 0xfe, 0xff, 0x41]);
      await call.getByLabel('file input').check();
      await call.getByLabel('input file').setInputFiles({
        name: 'bytes.bin',
        mimeType: 'application/octet-stream',
        buffer: bytes,
      });
      await call.getByRole('button', { name: 'Call echo' }).click();
      const result = page.getByRole('region', { name: 'result' });
      await eventually(() => result.getByLabel('output').textContent()).toBe(
        `00000000  ${'00 01 02 fe ff 41'.padEnd(47)}  .....A`,
      );
      expect(await result.getByLabel('wasmhost command').textContent()).toMatch(/ --stdin --log-level info < bytes\.bin$/);
      // Both lines repeat the call with the same file, read from where they are run.
      const dir = await makeTempDir('wasmhost-playground-');
      try {
        await writeFile(path.join(dir, 'bytes.bin'), bytes);
        const curl = await result.getByLabel('curl command').textContent();
        const curlRun = await run('bash', ['-c', curl!], { cwd: dir, timeout: 20_000 });
        expect(JSON.parse(curlRun.stdout)).toMatchObject({ outputBase64: bytes.toString('base64') });
        const cli = (await result.getByLabel('wasmhost command').textContent())!.replace('npx wasmhost', BIN);
        const cliRun = await run('bash', ['-c', cli], { cwd: dir, timeout: 20_000, encoding: 'buffer' });
        expect(Buffer.compare(cliRun.stdout, bytes)).toBe(0);
      } finally {
        await removeDir(dir);
      }
      await screenshot(page, 'playground-binary');

      await page.getByLabel('wasm file').setInputFiles(pluginPath('fail'));
      await page.locator('form.upload').getByLabel('Name').fill('fail');
      await page.locator('form.upload').getByRole('button', { name: 'Upload' }).click();
      await eventually(() => page.locator('section.details .exports').textContent()).toBe('fail');
      await call.getByLabel('input text').fill('on purpose');
      await call.getByRole('button', { name: 'Call fail' }).click();
      await eventually(() => result.getByLabel('call error').textContent()).toBe('PLUGIN_ERROR fail: on purpose');
      expect(await result.locator('h2').textContent()).toBe('Failed');
      await screenshot(page, 'playground-failed-call');

      const found = await problems();
      // Chromium logs the call's 422 answer as a failed resource load; nothing else may be logged.
      expect(found.consoleErrors).toHaveLength(1);
      expect(found.consoleErrors[0]).toContain('status of 422');
      expect({ ...found, consoleErrors: [] }).toEqual(NO_PROBLEMS);
    });
  });

  it('asks for a token when the service has tokens, keeps it for the tab, and lists with it', async () => {
    const token = 'playground-admin-token-0123456789';
    await withServer({ AUTH_TOKENS: `${token}:admin` }, async (server) => {
      const { page, problems } = await watchedPage(browser, server.url);
      await page.goto(`${server.url}/`);
      await eventually(() => page.getByRole('alert').textContent()).toContain('UNAUTHORIZED');
      await page.getByLabel('Token').fill(token);
      await page.getByRole('button', { name: 'Use' }).click();
      await eventually(() => page.locator('.plugins .empty').textContent()).toBe('No plugins yet: upload one.');
      expect(await page.evaluate(() => sessionStorage.getItem('wasmhost.token'))).toBe(token);
      expect(await page.getByRole('alert').count()).toBe(0);
      await screenshot(page, 'playground-token');

      const found = await problems();
      // The first request, before the token was typed, is answered 401, and Chromium logs that.
      expect(found.consoleErrors.every((error) => error.includes('status of 401'))).toBe(true);
      expect({ ...found, consoleErrors: [] }).toEqual(NO_PROBLEMS);
    });
  });
});
