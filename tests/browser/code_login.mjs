// The code login's consent once in a real browser: Debian's Chromium,
// headless, driven by Playwright. Starts the real avs-sim lwa with a
// code-based-linking client, asks for a code pair as avsd does, types the
// code on the stand-in's page on a phone-sized viewport, presses Allow, and
// checks that the device's next poll gets its tokens. Screenshots go to
// target/test-artifacts/code-*.png.
//
// Usage: node tests/browser/code_login.mjs  (from the repository root, after
// `cargo build`; AVS_BIN_DIR overrides target/debug).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const root = resolve(new URL('../..', import.meta.url).pathname);
const bin = process.env.AVS_BIN_DIR || join(root, 'target', 'debug');
const artifacts = join(root, 'target', 'test-artifacts');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 30000;
const PRODUCT = 'browser_product';
const CBL_CLIENT = 'amzn1.application-oa2-client.cbl-browser';

const children = [];
const work = mkdtempSync(join(tmpdir(), 'avs-browser-code-'));

function fail(msg) {
  throw new Error(msg);
}

function startListening(name, args, logs) {
  return new Promise((ok, bad) => {
    const child = spawn(join(bin, name), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    child.stderr.on('data', (d) => logs.push(String(d)));
    const timer = setTimeout(() => bad(new Error(`${name} did not start:\n${logs.join('')}`)), WAIT_MS);
    child.on('exit', (code) => bad(new Error(`${name} exited (${code}):\n${logs.join('')}`)));
    createInterface({ input: child.stdout }).once('line', (line) => {
      clearTimeout(timer);
      ok(line.split('listening on ')[1].trim());
    });
  });
}

// A form POST as the device sends it; resolves with status and JSON body.
function postForm(url, fields, ca) {
  return new Promise((ok, bad) => {
    const data = new URLSearchParams(fields).toString();
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    const req = request(url, { method: 'POST', ca, headers }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => ok({ status: res.statusCode, body: JSON.parse(text) }));
    });
    req.on('error', bad);
    req.end(data);
  });
}

async function main() {
  mkdirSync(artifacts, { recursive: true });
  const certs = join(work, 'certs');
  execFileSync(join(bin, 'avs-companion'), ['make-certs', '--out', certs, '--host', '127.0.0.1', '--host', 'localhost']);
  const ca = readFileSync(join(certs, 'ca.crt'));
  const secretFile = join(work, 'client-secret');
  writeFileSync(secretFile, randomBytes(24).toString('hex') + '\n');
  chmodSync(secretFile, 0o600);
  const sim = await startListening('avs-sim', [
    'lwa', '--listen', '127.0.0.1:0', '--client-id', 'amzn1.application-oa2-client.web',
    '--client-secret-file', secretFile, '--redirect-uri', 'https://127.0.0.1:9/authresponse',
    '--tls-cert', join(certs, 'server.crt'), '--tls-key', join(certs, 'server.key'),
    '--cbl-client-id', CBL_CLIENT, '--codepair-interval', '1',
  ], []);

  const scopeData = JSON.stringify({
    'alexa:all': { productID: PRODUCT, productInstanceAttributes: { deviceSerialNumber: 'kitchen-1' } },
  });
  const pair = await postForm(`${sim}/auth/o2/create/codepair`, {
    response_type: 'device_code', client_id: CBL_CLIENT, scope: 'alexa:all', scope_data: scopeData,
  }, ca);
  if (pair.status !== 200) fail(`code pair: ${JSON.stringify(pair)}`);
  const { device_code: deviceCode, user_code: userCode, verification_uri: verificationUri } = pair.body;
  let lastPoll = 0;
  const poll = async () => {
    // The device never polls sooner than the interval (1 s).
    const due = lastPoll + 1000 - Date.now();
    if (due > 0) await new Promise((ok) => setTimeout(ok, due));
    lastPoll = Date.now();
    return postForm(`${sim}/auth/o2/token`, {
      grant_type: 'device_code', device_code: deviceCode, user_code: userCode,
    }, ca);
  };
  const pending = await poll();
  if (pending.body.error !== 'authorization_pending') fail(`before consent: ${JSON.stringify(pending.body)}`);

  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({
      viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
      ignoreHTTPSErrors: true,
    });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    await page.goto(verificationUri);
    await page.screenshot({ path: join(artifacts, 'code-1-enter.png'), fullPage: true });
    // Typed the way a person might: lower case, with a space.
    await page.fill('#code', `${userCode.slice(0, 3)} ${userCode.slice(3)}`.toLowerCase());
    await page.click('#continue');
    await page.waitForSelector('#allow');
    if ((await page.textContent('#product')) !== PRODUCT) fail('the consent page does not show the product');
    await page.screenshot({ path: join(artifacts, 'code-2-consent.png'), fullPage: true });
    await page.click('#allow');
    await page.waitForSelector('#result');
    const result = await page.textContent('#result');
    await page.screenshot({ path: join(artifacts, 'code-3-linked.png'), fullPage: true });
    if (result !== 'Device linked') fail(`result page says: ${result}`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    if (overflow) fail('the result page is wider than the phone screen');
  } finally {
    await browser.close();
  }

  // The user is done, so the device's next poll gets its tokens.
  const r = await poll();
  if (r.status !== 200 || !String(r.body.access_token).startsWith('Atza|') || !String(r.body.refresh_token).startsWith('Atzr|')) {
    fail(`the device got no tokens: ${JSON.stringify(r.body.error || r.status)}`);
  }
  console.log(`browser code login OK; screenshots in ${artifacts}`);
}

try {
  await main();
} catch (e) {
  console.error(String(e.stack || e));
  process.exitCode = 1;
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(work, { recursive: true, force: true });
}
