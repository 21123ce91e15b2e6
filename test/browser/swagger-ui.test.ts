// Swagger UI at /docs in a real browser: "Try it out" on the upload with the multipart form as the page
// pre-fills it (config and allowed hosts as JSON text), and again with those fields cleared. Fails on
// any console error, page error, CSP violation or request to another origin.
// Screenshots: test-artifacts/swagger-ui-*.png.
import type { Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pluginPath, useServer } from '../helpers.ts';
import { launchBrowser, screenshot, watchedPage, type Browser, type PageProblems } from './browser.ts';

/** Pages answer at their own pace on a busy machine: wait for what a person would wait for. */
const eventually = <T>(read: () => Promise<T>) => expect.poll(read, { timeout: 20_000, interval: 100 });
const NO_PROBLEMS: PageProblems = { consoleErrors: [], pageErrors: [], cspViolations: [], foreignRequests: [] };

let browser: Browser;
// The browser's driver shares this process's event loop: no load shedding (startServer's default).
const server = useServer();

beforeAll(async () => {
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
});

/** The upload operation, opened with "Try it out" and the multipart body chosen. */
async function openUploadForm(page: Page): Promise<Locator> {
  await page.goto(`${server.url}/docs`);
  const operation = page.locator('#operations-plugins-uploadPlugin');
  await operation.locator('.opblock-summary').click();
  await operation.getByRole('button', { name: 'Try it out' }).click();
  await operation.locator('.body-param-content-type select').selectOption('multipart/form-data');
  return operation;
}

const field = (operation: Locator, name: string): Locator =>
  operation.locator(`tr[data-property-name="${name}"] input:not([type=checkbox])`);

async function execute(operation: Locator): Promise<{ status: string; body: unknown }> {
  await operation.getByRole('button', { name: 'Execute' }).click();
  const live = operation.locator('.live-responses-table tbody tr.response');
  await eventually(() => live.locator('.response-col_status').textContent()).toMatch(/^\d{3}$/);
  const status = (await live.locator('.response-col_status').textContent()) ?? '';
  const body = JSON.parse((await live.locator('.response-col_description pre.microlight').first().textContent()) ?? 'null');
  return { status, body };
}

describe('Swagger UI at /docs', () => {
  it('uploads a plugin through the form with its pre-filled config and allowed hosts: 201 with both stored', async () => {
    const { page, problems } = await watchedPage(browser, server.url);
    const operation = await openUploadForm(page);
    // The pre-filled examples are what a newcomer sends.
    expect(await field(operation, 'config').inputValue()).toBe('{"route":"https://jsonplaceholder.typicode.com/todos/1"}');
    expect(await field(operation, 'allowedHosts').inputValue()).toBe('["jsonplaceholder.typicode.com"]');
    await field(operation, 'file').setInputFiles(pluginPath('hello'));
    await field(operation, 'name').fill('hello-swagger');
    await screenshot(page, 'swagger-ui-upload-form');

    const answer = await execute(operation);
    await screenshot(page, 'swagger-ui-upload-201');
    expect(answer.status).toBe('201');
    expect(answer.body).toMatchObject({
      name: 'hello-swagger',
      exports: ['say_hello'],
      config: { route: 'https://jsonplaceholder.typicode.com/todos/1' },
      allowedHosts: ['jsonplaceholder.typicode.com'],
    });
    const stored = await (await fetch(`${server.url}/plugins/hello-swagger`)).json();
    expect(stored).toMatchObject({ config: answer.body && (answer.body as { config: unknown }).config });
    expect(await problems()).toEqual(NO_PROBLEMS);
    await page.close();
  }, 120_000);

  it('uploads with the config and allowed hosts fields cleared: 201 with neither given', async () => {
    const { page, problems } = await watchedPage(browser, server.url);
    const operation = await openUploadForm(page);
    await field(operation, 'file').setInputFiles(pluginPath('count_vowels'));
    await field(operation, 'config').fill('');
    await field(operation, 'allowedHosts').fill('');

    const answer = await execute(operation);
    await screenshot(page, 'swagger-ui-upload-cleared-201');
    expect(answer.status).toBe('201');
    expect(answer.body).toMatchObject({ exports: ['count_vowels'], config: {}, allowedHosts: [] });
    expect(await problems()).toEqual(NO_PROBLEMS);
    await page.close();
  }, 120_000);
});
