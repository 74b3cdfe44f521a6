// The headless Chromium the dashboard tests drive: one 1280×900 page that reports its errors and
// Content-Security-Policy violations into the caller's lists.
import { type Browser, chromium, type Page } from 'playwright-core';

export async function openPage(
  pageErrors: string[],
  cspViolations: string[],
): Promise<{ browser: Browser; page: Page }> {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy/i.test(msg.text())) cspViolations.push(msg.text());
  });
  return { browser, page };
}
