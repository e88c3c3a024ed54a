// The companion login flow in a real browser: Debian's Chromium, headless,
// driven by Playwright (playwright-core never downloads a browser). Starts the
// real avs-sim and avs-companion binaries with certificates from
// `avs-companion make-certs`, clicks the real buttons at phone and at desktop
// size, screenshots every page at both sizes (PNGs kept as test output under
// target/test-artifacts/, listed at the end), and checks that the device
// then gets a token.
//
// Usage: node tests/browser/login.mjs  (from the repository root, after
// `cargo build`; AVS_BIN_DIR overrides target/debug).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, mkdirSync, readFileSync, rmSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
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
const CLIENT_ID = 'amzn1.application-oa2-client.browser';

const children = [];
const work = mkdtempSync(join(tmpdir(), 'avs-browser-'));

function fail(msg) {
  throw new Error(msg);
}

// Resolves with the base URL once the child prints its "listening on" line.
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

function freePort() {
  return new Promise((ok) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

function postJson(url, body, ca) {
  return new Promise((ok, bad) => {
    const data = JSON.stringify(body);
    const req = request(url, { method: 'POST', ca, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => ok({ status: res.statusCode, body: JSON.parse(text) }));
    });
    req.on('error', bad);
    req.end(data);
  });
}

// One device linked through every page at one window size; `shots` gets
// each screenshot's path.
async function flow(browser, base, ca, size, options, shots) {
  const reg = await postJson(`${base}/provision/regCode`, { productId: PRODUCT, dsn: `kitchen-${size}` }, ca);
  if (reg.status !== 200) fail(`register: ${JSON.stringify(reg)}`);
  const { regCode, sessionId } = reg.body;
  // The test CA is not in Chromium's store.
  const context = await browser.newContext({ ...options, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  let n = 0;
  const shot = async (name) => {
    n += 1;
    const path = join(artifacts, `companion-${size}-${n}-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    shots.push(path);
    // No horizontal scrolling at any size.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    if (overflow) fail(`${size} ${name}: the page is wider than the window`);
  };

  await page.goto(`${base}/`);
  await shot('home');
  // Buttons are set in the page's font, not the browser's default.
  const fonts = await page.evaluate(() => [
    getComputedStyle(document.body).fontFamily,
    getComputedStyle(document.querySelector('button')).fontFamily,
    getComputedStyle(document.querySelector('#code')).fontFamily,
  ]);
  if (fonts[1] !== fonts[0] || fonts[2] !== fonts[0]) fail(`${size}: fonts differ: ${fonts}`);
  // A mistyped code: the form again, the typing kept, the message tied to it.
  const wrong = 'zzzz-zzz1';
  await page.fill('#code', wrong);
  await page.click('button[type=submit]');
  await page.waitForSelector('#code-error');
  if ((await page.inputValue('#code')) !== wrong) fail(`${size}: the typed code was not kept`);
  if ((await page.getAttribute('#code', 'aria-invalid')) !== 'true') fail(`${size}: no aria-invalid`);
  const described = await page.getAttribute('#code', 'aria-describedby');
  if (!described.split(' ').includes('code-error')) fail(`${size}: message not tied to the field: ${described}`);
  await shot('home-wrong-code');
  // Typed the way a person might: lower case with a dash.
  await page.fill('#code', `${regCode.slice(0, 4)}-${regCode.slice(4)}`.toLowerCase());
  await page.click('button[type=submit]');
  await page.waitForSelector('#login');
  if ((await page.textContent('#product')) !== PRODUCT) fail('device page does not show the product');
  await shot('device');
  await page.click('#login');
  await page.waitForSelector('#allow');
  await shot('consent');
  await page.click('#allow');
  await page.waitForURL(/\/authresponse/);
  const result = await page.textContent('#result');
  await shot('linked');
  if (result !== 'Device linked') fail(`result page says: ${result}`);
  // Reloading the success page still says the device is linked.
  await page.reload();
  const again = await page.textContent('#result');
  if (again !== 'Device linked') fail(`${size}: the reloaded result page says: ${again}`);
  await page.waitForSelector('#again');
  await shot('linked-reloaded');
  // The pages that say what went wrong.
  await page.goto(`${base}/provision/ZZZZZZZZ`);
  await page.waitForSelector('#result');
  await shot('code-not-found');
  await page.goto(`${base}/nowhere`);
  await page.waitForSelector('#result');
  await shot('not-found');
  await context.close();

  // The user is done, so the device's next poll gets its token.
  const r = await postJson(`${base}/provision/accessToken`, { sessionId }, ca);
  if (r.status !== 200 || !String(r.body.access_token).startsWith('Atza|')) {
    fail(`${size}: the device got no token: ${JSON.stringify(r.body.error || r.status)}`);
  }
}

async function main() {
  mkdirSync(artifacts, { recursive: true });
  const certs = join(work, 'certs');
  execFileSync(join(bin, 'avs-companion'), ['make-certs', '--out', certs, '--host', '127.0.0.1', '--host', 'localhost']);
  const ca = readFileSync(join(certs, 'ca.crt'));
  const secretFile = join(work, 'client-secret');
  writeFileSync(secretFile, randomBytes(24).toString('hex') + '\n');
  chmodSync(secretFile, 0o600);

  const port = await freePort();
  const base = `https://127.0.0.1:${port}`;
  const simLogs = [];
  const sim = await startListening('avs-sim', [
    'lwa', '--listen', '127.0.0.1:0', '--client-id', CLIENT_ID,
    '--client-secret-file', secretFile, '--redirect-uri', `${base}/authresponse`,
    '--tls-cert', join(certs, 'server.crt'), '--tls-key', join(certs, 'server.key'),
  ], simLogs);
  const config = join(work, 'companion.toml');
  writeFileSync(config, `[server]
listen = "127.0.0.1:${port}"
cert_file = "${join(certs, 'server.crt')}"
key_file = "${join(certs, 'server.key')}"
[lwa]
client_id = "${CLIENT_ID}"
client_secret_file = "${secretFile}"
redirect_uri = "${base}/authresponse"
authorize_url = "${sim}/ap/oa"
token_url = "${sim}/auth/o2/token"
ca_file = "${join(certs, 'ca.crt')}"
[products]
${PRODUCT} = []
[storage]
database = "${join(work, 'companion.sqlite3')}"
`);
  const companionLogs = [];
  const shown = await startListening('avs-companion', ['--config', config], companionLogs);
  if (shown !== base) fail(`companion says ${shown}, expected ${base}`);

  // Earlier runs' pictures would be listed as this run's.
  for (const f of readdirSync(artifacts)) {
    if (f.startsWith('companion-') && f.endsWith('.png')) rmSync(join(artifacts, f));
  }
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const shots = [];
  try {
    const sizes = [
      // A phone: 390 x 844 CSS pixels.
      ['phone', { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true }],
      ['desktop', { viewport: { width: 1280, height: 800 } }],
    ];
    for (const [size, options] of sizes) {
      await flow(browser, base, ca, size, options, shots);
    }
  } finally {
    await browser.close();
  }
  console.log('screenshots:');
  for (const s of shots) console.log(`  ${s}`);
  console.log(`browser login flow OK; screenshots in ${artifacts}`);
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
