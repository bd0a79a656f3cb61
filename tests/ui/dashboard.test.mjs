// The dashboard in a real browser: Playwright driving Debian's Chromium against a real
// `kubiya-cp serve`, a real `kubiya-cp worker` and a fake model that speaks OpenAI's wire
// protocol. Run by scripts/ui-test.sh, which installs what this needs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startFakeLlm } from './fake-llm.mjs';

const require = createRequire(import.meta.url);
const BIN = process.env.KCP_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOTS || 'target/ui-screenshots';
const KEY = `kby_ui-test-${Math.random().toString(36).slice(2)}-0123456789abcdef`;
const children = [];
let base;
let llm;
let browser;
let queue;
let dataDir;

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function api(method, p, body, key = KEY) {
  const resp = await fetch(base + p, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => null);
  assert.ok(resp.ok, `${method} ${p}: ${resp.status} ${JSON.stringify(data)}`);
  return data;
}

/** Waits for `check` to hold, polling the server (not the page) until `ms` pass. */
async function until(what, check, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(context, key) {
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  await page.goto(`${base}/agents`);
  assert.match(page.url(), /\/sign-in\?next=\/agents$/);
  await page.fill('#api_key', key);
  await Promise.all([page.waitForURL(`${base}/agents`), page.click('button[type=submit]')]);
  return page;
}

before(async () => {
  assert.ok(BIN, 'KCP_BIN names the kubiya-cp binary');
  mkdirSync(SHOTS, { recursive: true });
  llm = await startFakeLlm();
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'kcp-ui-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const env = { ...process.env, KUBIYA_CP_LOG: 'warn' };
  delete env.KUBIYA_CP_DATABASE_URL;
  delete env.DATABASE_URL;
  const server = spawn(BIN, ['serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, '--bootstrap-api-key', KEY,
    '--allow-private-model-urls', '--max-org-rate-limit', '1000000'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(server);
  await until('the server', () => fetch(`${base}/api/ready`).then((r) => r.ok, () => false));
  await api('PATCH', '/api/v1/organization/settings', { rate_limit_tier: 'enterprise', rate_limit_per_minute: 1000000 });
  await api('POST', '/api/v1/models', { value: 'fake/gpt-test', label: 'Fake', provider: 'openai', provider_model: 'gpt-test',
    base_url: llm.url, pricing: { input_per_1k: 1.0, output_per_1k: 2.0 } });
  const envs = await api('GET', '/api/v1/environments');
  const q = await api('POST', `/api/v1/environments/${envs.items[0].id}/worker-queues`, { name: 'browser-tests' });
  queue = q.id;
  const workerKey = (await api('POST', '/api/v1/api-keys', { name: 'worker', role: 'worker' })).key;
  const command = await api('GET', `/api/v1/worker-queues/${queue}/worker-command`);
  const worker = spawn(BIN, command.command_parts.slice(1), {
    env: { ...env, KUBIYA_API_KEY: workerKey }, stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(worker);
  await until('the worker', async () => (await api('GET', `/api/v1/worker-queues/${queue}`)).active_workers > 0);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
});

after(async () => {
  if (browser) await browser.close();
  // The worker first, so it can say goodbye to the server.
  for (const c of children.reverse()) {
    const exited = new Promise((resolve) => (c.exitCode !== null ? resolve() : c.once('exit', resolve)));
    c.kill('SIGTERM');
    await exited;
  }
  if (llm) llm.server.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test('an admin creates a shell skill and an agent, runs it and watches the tool call and answer stream', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const signInPage = await context.newPage();
  await signInPage.goto(`${base}/sign-in`);
  await shot(signInPage, 'sign-in');
  await signInPage.close();
  const page = await signIn(context, KEY);

  await page.goto(`${base}/skills`);
  await page.click('#new-skill summary');
  await page.fill('#sk-name', 'shell');
  await page.selectOption('#sk-type', 'shell');
  await page.fill('#sk-config', '{"allowed_commands": ["ls"]}');
  await Promise.all([page.waitForEvent('load'), page.click('#new-skill button[type=submit]')]);
  await page.getByRole('cell', { name: 'shell', exact: true }).first().waitFor();
  await shot(page, 'skills');

  await page.goto(`${base}/agents`);
  await page.click('#new-agent summary');
  await page.fill('#a-name', 'lister');
  await page.selectOption('#a-model', { label: 'Fake (fake/gpt-test)' });
  await page.getByLabel('shell').check();
  await page.fill('#a-prompt', 'You list files.');
  await Promise.all([page.waitForURL(/\/agents\/[0-9a-f-]{36}$/), page.click('#new-agent button[type=submit]')]);
  await page.getByText('shell', { exact: true }).first().waitFor();
  await shot(page, 'agent');

  await page.fill('#x-prompt', 'list files in /');
  await page.selectOption('#x-queue', queue);
  await Promise.all([page.waitForURL(/\/executions\/[0-9a-f-]{36}$/), page.click('form[data-path$="/execute"] button[type=submit]')]);
  const tool = page.locator('.tool').first();
  await tool.locator('.tool-name', { hasText: 'shell' }).waitFor();
  await tool.locator('.tool-state', { hasText: 'done' }).waitFor();
  await tool.locator('summary').click();
  assert.match(await tool.locator('.tool-input').textContent(), /ls \//);
  assert.match(await tool.locator('.tool-output').textContent(), /etc/);
  await page.locator('.msg-assistant .msg-text', { hasText: 'The tool said:' }).waitFor();
  await page.locator('#run-status .status', { hasText: 'completed' }).waitFor();
  // The run's facts are read again once it ends: no cancel button, a duration.
  await page.locator('#cancel-run').waitFor({ state: 'detached' });
  assert.doesNotMatch(await page.locator('#run-facts').textContent(), /Duration\s*—/);
  await shot(page, 'execution');

  // The run is in the lists, the usage report and the overview.
  await page.goto(`${base}/executions`);
  await page.getByRole('cell', { name: /lister/ }).first().waitFor();
  await page.goto(`${base}/usage`);
  await page.getByRole('cell', { name: 'lister' }).waitFor();
  await context.close();
});

test('a team is created with a member and edited without losing its configuration', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await signIn(context, KEY);
  await page.goto(`${base}/teams`);
  await page.click('#new-team summary');
  await page.fill('#t-name', 'crew');
  await page.locator('#new-team').getByLabel('lister').check();
  await Promise.all([page.waitForURL(/\/teams\/[0-9a-f-]{36}$/), page.click('#new-team button[type=submit]')]);
  const id = page.url().split('/').pop();
  await api('PATCH', `/api/v1/teams/${id}`, { configuration: { member_ids: (await api('GET', `/api/v1/teams/${id}`)).configuration.member_ids, instructions: ['Triage first'] } });
  await page.reload();
  await page.click('#edit-team summary');
  await page.fill('#e-name', 'crew-renamed');
  await page.locator('#edit-team').getByLabel('shell').check();
  await Promise.all([page.waitForEvent('load'), page.click('#edit-team button[type=submit]')]);
  await page.getByRole('heading', { name: /crew-renamed/ }).waitFor();
  const team = await api('GET', `/api/v1/teams/${id}`);
  assert.equal(team.agents.length, 1);
  assert.equal(team.skills.length, 1);
  assert.deepEqual(team.configuration.instructions, ['Triage first'], 'the rest of the configuration is kept');
  await shot(page, 'team');
  await context.close();
});

test('an approval step is approved from its run page, which follows the run live', async () => {
  const wf = await api('POST', '/api/v1/workflows', { name: 'release', steps: [
    { id: 'build', type: 'command', command: 'echo built' },
    { id: 'approve', type: 'approval', message: 'Ship it?', depends_on: ['build'] },
    { id: 'ship', type: 'command', command: 'echo shipped', depends_on: ['approve'] },
  ] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await signIn(context, KEY);
  await page.goto(`${base}/workflows/${wf.id}`);
  await page.selectOption('#s-queue', queue);
  await Promise.all([page.waitForURL(/\/workflow-runs\/[0-9a-f-]{36}$/), page.click('form[data-path$="/start"] button[type=submit]')]);
  // The page redraws itself until the approval is asked for.
  const approve = page.getByRole('button', { name: 'Approve approve' });
  await approve.waitFor({ timeout: 30000 });
  assert.match(await page.locator('.approval').textContent(), /Ship it\?/);
  await shot(page, 'workflow-run-waiting');
  await page.fill('#comment-approve', 'looks good');
  await approve.click();
  await page.locator('.run-status .status', { hasText: 'completed' }).waitFor({ timeout: 30000 });
  assert.equal(await page.locator('g.node.status-completed[data-node="ship"]').count(), 1);
  await shot(page, 'workflow-run');
  await page.goto(`${base}/workflows/${wf.id}`);
  await shot(page, 'workflow');
  await context.close();
});

test('a diagram the agent draws is rendered on the execution page', async () => {
  const skill = await api('POST', '/api/v1/skills', { name: 'diagrams', type: 'data_visualization', configuration: {} });
  const agent = await api('POST', '/api/v1/agents', { name: 'drawer', model_id: 'fake/gpt-test', skill_ids: [skill.id] });
  const run = await api('POST', `/api/v1/agents/${agent.id}/execute`, { prompt: 'draw the release', worker_queue_id: queue });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await signIn(context, KEY);
  await page.goto(`${base}/executions/${run.execution_id}`);
  await page.locator('figure.diagram svg g.node[data-node="C"]').waitFor();
  assert.match(await page.locator('figure.diagram figcaption').textContent(), /Release/);
  await shot(page, 'execution-diagram');
  await context.close();
});

test('a viewer sees every page and no button or form that changes anything', async () => {
  const viewer = (await api('POST', '/api/v1/api-keys', { name: 'viewer', role: 'viewer' })).key;
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await signIn(context, viewer);
  const agents = await api('GET', '/api/v1/agents');
  for (const p of ['/', '/agents', `/agents/${agents.items[0].id}`, '/teams', '/executions', '/workflows', '/jobs', '/plans',
    '/usage', '/environments', '/skills', '/policies', '/webhooks', '/secrets']) {
    await page.goto(base + p);
    assert.equal(await page.locator('form[data-api], button[data-api]').count(), 0, `${p} offers a viewer a change`);
  }
  assert.equal(await page.getByRole('link', { name: 'API keys' }).count(), 0);
  await shot(page, 'viewer-agents');
  await context.close();
});

test('every page passes axe-core with no serious or critical violation, and is saved as a screenshot', async () => {
  const axe = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await signIn(context, KEY);
  const [agents, executions, workflows, runs] = await Promise.all([
    api('GET', '/api/v1/agents'), api('GET', '/api/v1/executions'), api('GET', '/api/v1/workflows'), api('GET', '/api/v1/workflow-runs'),
  ]);
  const pages = {
    overview: '/', agents: '/agents', 'agent-detail': `/agents/${agents.items[0].id}`, teams: '/teams', executions: '/executions',
    'execution-detail': `/executions/${executions.items[0].id}`, workflows: '/workflows', 'workflow-detail': `/workflows/${workflows.items[0].id}`,
    'workflow-runs': '/workflow-runs', 'workflow-run-detail': `/workflow-runs/${runs.items[0].id}`, jobs: '/jobs', plans: '/plans',
    usage: '/usage', environments: '/environments', skills: '/skills', policies: '/policies', webhooks: '/webhooks',
    'api-keys': '/api-keys', secrets: '/secrets',
  };
  const failures = [];
  for (const [name, p] of Object.entries(pages)) {
    await page.goto(base + p);
    await page.waitForLoadState('networkidle').catch(() => {});
    await shot(page, `page-${name}`);
    // Evaluated through the DevTools protocol, which the page's CSP does not govern.
    await page.evaluate(axe);
    const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
    for (const v of result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')) {
      failures.push(`${p}: ${v.id} (${v.impact}) ${v.help}: ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`);
    }
  }
  assert.deepEqual(failures, []);
  await context.close();
});

test('the execution page keeps up with 50 events a second', async () => {
  const agent = await api('POST', '/api/v1/agents', { name: 'talker', model_id: 'fake/gpt-test' });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await signIn(context, KEY);
  await page.addInitScript(() => {
    window.__longTasks = [];
    new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); })
      .observe({ type: 'longtask', buffered: true });
  });
  const run = await api('POST', `/api/v1/agents/${agent.id}/execute`, { prompt: 'stream 300 words', worker_queue_id: queue });
  await page.goto(`${base}/executions/${run.execution_id}`);
  await page.locator('#run-status .status', { hasText: 'completed' }).waitFor({ timeout: 60000 });
  const text = await page.locator('.msg-assistant .msg-text').last().textContent();
  assert.equal(text.trim().split(/\s+/).length, 300, 'every chunk is drawn, in order');
  assert.match(text, /^w0 w1 w2 .* w299\s*$/s);
  const longTasks = await page.evaluate(() => window.__longTasks);
  const events = (await api('GET', `/api/v1/executions/${run.execution_id}`)).event_count;
  console.log(`stream: ${events} events; long tasks on the page: ${longTasks.length}, longest ${Math.round(Math.max(0, ...longTasks))} ms`);
  await context.close();
});
