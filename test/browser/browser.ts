// A real browser for page tests: Debian's Chromium driven by playwright-core, with a fresh profile and
// its background traffic off (this machine has no network but loopback). A watched page records every
// console error, page error, Content-Security-Policy violation and request to another origin, so a
// test can fail on any of them. Screenshots go to test-artifacts/ (ignored by git).
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { repoRoot } from '../helpers.ts';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const ARTIFACTS_DIR = path.join(repoRoot, 'test-artifacts');

const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
];

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<Browser> {
  const profile = await mkdtemp(path.join(tmpdir(), 'wasmhost-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 900 },
  });
  return {
    context,
    close: async () => {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

export interface PageProblems {
  consoleErrors: string[];
  pageErrors: string[];
  cspViolations: string[];
  /** Requests to anything but the service under test (the page must fetch nothing from elsewhere). */
  foreignRequests: string[];
}

declare global {
  interface Window {
    __cspViolations?: string[];
  }
}

/** A new page that records its problems; `origin` is the only origin it may load from. */
export async function watchedPage(
  browser: Browser,
  origin: string,
): Promise<{ page: Page; problems: () => Promise<PageProblems> }> {
  const page = await browser.context.newPage();
  const recorded: PageProblems = { consoleErrors: [], pageErrors: [], cspViolations: [], foreignRequests: [] };
  page.on('console', (message) => {
    if (message.type() === 'error') recorded.consoleErrors.push(`${message.text()} @ ${message.location().url}`);
  });
  page.on('pageerror', (error) => recorded.pageErrors.push(error.message));
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(`${origin}/`) && !url.startsWith('data:') && !url.startsWith('blob:')) recorded.foreignRequests.push(url);
  });
  // Installed by the browser itself before any page script (not an inline script: the CSP does not apply).
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (event) => {
      window.__cspViolations!.push(`${event.violatedDirective}: ${event.blockedURI} (${event.sourceFile}:${event.lineNumber})`);
    });
  });
  const problems = async (): Promise<PageProblems> => {
    const violations = await page.evaluate(() => window.__cspViolations ?? []).catch(() => []);
    return { ...recorded, cspViolations: [...recorded.cspViolations, ...violations] };
  };
  return { page, problems };
}

export async function screenshot(page: Page, name: string): Promise<string> {
  await mkdir(ARTIFACTS_DIR, { recursive: true });
  const file = path.join(ARTIFACTS_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
