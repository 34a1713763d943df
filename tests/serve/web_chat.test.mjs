// The web chat page of slm serve, end to end: Debian's chromium (headless,
// through puppeteer-core) drives the page that a real `slm serve` serves at
// GET /, against the default model and a LoRA adapter trained here in seconds.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import { slmBin, startServer, workDir } from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ADAPTER = 'webtest';
const WAIT = 10000; // every single wait: seconds, not minutes
const REPLY_WAIT = 30000; // a whole reply of the tiny model

const work = process.env.SLM_WORK || workDir('web_chat');
mkdirSync(work, { recursive: true });

let server; // the server under test
let keyServer; // a second one started with --api-key
let browser;
let page;
let base; // id of the base model, from GET /v1/models
const chatRequests = []; // {body, headers} of every POST /v1/chat/completions the page made
// The tiny model often ends a reply after a few words. Where a test needs a
// reply long enough to watch grow or to stop, ignore_eos (an extension slm
// serve takes) is added to the page's request on its way: the reply is then
// exactly max_tokens long.
let extra = {};
let canned = null; // an SSE body the test answers the page's next chat request with
const pageErrors = [];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resolves with p's value, or rejects once ms have passed.
function within(ms, p, what) {
  let timer;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms); }),
  ]);
}

function trainAdapter() {
  const dir = path.join(work, 'adapter');
  rmSync(dir, { recursive: true, force: true });
  const data = path.join(work, 'adapter-data.jsonl');
  const lines = [
    'The adapter says hello to the web page.',
    'A small language model answers in the browser.',
    'Streams of tokens arrive one after another.',
    'Press stop and the reply ends where it is.',
    'Conversations stay in local storage.',
    'Markdown is drawn with safe DOM nodes.',
  ];
  writeFileSync(data, lines.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  const r = spawnSync(slmBin, ['finetune', '--data', data, '--out', dir, '--max-steps', '2', '--seed', '1'], {
    encoding: 'utf8',
    timeout: 60000,
  });
  assert.equal(r.status, 0, `slm finetune failed (${r.status ?? r.signal}):\n${r.stderr}`);
  return dir;
}

// Chat needs a template. A model without one (tokenizer_config.json) is served
// with ChatML, the template the default model is meant to carry.
const CHATML = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

function chatTemplateArgs() {
  const info = JSON.parse(execFileSync(slmBin, ['info', '--output-format', 'json'], { encoding: 'utf8', timeout: 20000 }));
  let config = {};
  try { config = JSON.parse(readFileSync(path.join(info.path, 'tokenizer_config.json'), 'utf8')); } catch { /* none */ }
  if (config.chat_template) return [];
  const file = path.join(work, 'chatml.jinja');
  writeFileSync(file, CHATML);
  return ['--chat-template', file];
}

// In-page recorder: every distinct text of the newest assistant bubble while it streams.
async function recordSnapshots() {
  await page.evaluate(() => {
    if (window.__snapObserver) window.__snapObserver.disconnect();
    window.__snaps = [];
    const list = document.querySelector('[data-testid="message-list"]');
    const look = () => {
      const all = list.querySelectorAll('[data-testid="assistant-message"]');
      const last = all[all.length - 1];
      if (!last || last.dataset.state !== 'streaming') return;
      const text = last.querySelector('[data-testid="message-body"]').textContent;
      const s = window.__snaps;
      if (text && s[s.length - 1] !== text) s.push(text);
    };
    window.__snapObserver = new MutationObserver(look);
    window.__snapObserver.observe(list, { childList: true, subtree: true, characterData: true, attributes: true });
  });
}

// One number from the server's Prometheus /metrics, or null.
async function metric(name) {
  try {
    const text = await within(WAIT, fetch(server.url + '/metrics').then((r) => r.text()), 'GET /metrics');
    const m = text.match(new RegExp('^' + name + ' ([0-9.e+-]+)$', 'm'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

async function setField(selector, value) {
  await page.$eval(selector, (el, v) => {
    el.value = v;
    el.dispatchEvent(new Event('input', { bubbles: true }));
  }, String(value));
}

async function openSettings() {
  if (await page.$eval('#settings', (el) => el.hidden)) await page.click('[data-testid="settings-toggle"]');
}

async function typeMessage(text) {
  await page.click('[data-testid="message-input"]');
  await page.type('[data-testid="message-input"]', text);
}

async function assistantCount() {
  return page.$$eval('[data-testid="assistant-message"]', (els) => els.length);
}

// The newest assistant bubble: its text, state and model.
async function lastReply() {
  return page.$$eval('[data-testid="assistant-message"]', (els) => {
    const el = els[els.length - 1];
    if (!el) return null;
    const note = el.querySelector('.msg-note');
    return {
      text: el.querySelector('[data-testid="message-body"]').textContent,
      state: el.dataset.state,
      model: el.dataset.model || '',
      note: note ? note.textContent : '',
    };
  });
}

async function waitReplyDone(count) {
  await page.waitForFunction((n) => {
    const els = document.querySelectorAll('[data-testid="assistant-message"]');
    return els.length >= n && els[n - 1].dataset.state !== 'streaming' && document.body.dataset.busy === 'false';
  }, { timeout: REPLY_WAIT }, count);
  return lastReply();
}

async function pickerOptions() {
  return page.$$eval('[data-testid="model-picker"] option', (opts) => opts.map((o) => o.value));
}

before(async () => {
  const adapterDir = trainAdapter();
  server = await startServer(['--adapter', `${ADAPTER}=${adapterDir}`, ...chatTemplateArgs()], { timeoutMs: 30000 });
  const models = await (await fetch(server.url + '/v1/models')).json();
  base = models.data[0].id;
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run'],
    timeout: 30000,
    protocolTimeout: 30000,
  });
  page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  await page.setViewport({ width: 1100, height: 760 });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Every chat request the page makes is recorded as the page sent it; then
  // it goes on to the server, with `extra` fields added, or is answered by the
  // test itself when `canned` holds a reply.
  await page.setRequestInterception(true);
  page.on('request', (r) => {
    if (!(r.method() === 'POST' && r.url().endsWith('/v1/chat/completions'))) {
      r.continue();
      return;
    }
    let body = {};
    try { body = JSON.parse(r.postData() || '{}'); } catch { /* recorded as {} */ }
    chatRequests.push({ body, headers: r.headers() });
    if (canned !== null) {
      r.respond({ status: 200, contentType: 'text/event-stream', body: canned });
    } else if (Object.keys(extra).length) {
      r.continue({ postData: JSON.stringify({ ...body, ...extra }) });
    } else {
      r.continue();
    }
  });
});

// Should the runner be killed (a ctest timeout), no server or browser outlives it.
function killAll() {
  for (const s of [server, keyServer]) if (s && s.child.exitCode === null) s.child.kill('SIGKILL');
  const proc = browser && browser.process();
  if (proc && proc.exitCode === null) proc.kill('SIGKILL');
}
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => { killAll(); process.exit(1); });

after(async () => {
  // Always: the browser and every server go, whatever failed above.
  if (browser) {
    const proc = browser.process();
    await within(5000, browser.close(), 'browser.close').catch(() => proc && proc.kill('SIGKILL'));
  }
  for (const s of [server, keyServer]) {
    if (s) await within(5000, s.stop(), 'server stop').catch(() => s.stop('SIGKILL'));
  }
});

test('GET / serves the page, and the picker lists the base model and the adapter', { timeout: 30000 }, async () => {
  const res = await page.goto(server.url + '/', { waitUntil: 'load', timeout: WAIT });
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'] || '', /^text\/html/);
  await page.waitForFunction((a) => [...document.querySelectorAll('#model-picker option')].some((o) => o.value === a), {}, ADAPTER);
  const values = await pickerOptions();
  assert.deepEqual(values, [base, ADAPTER]);
  assert.equal(await page.$eval('[data-testid="model-picker"]', (s) => s.value), base);
  // The page is one self-contained file: nothing but the same origin was asked for.
  const html = await res.text();
  assert.doesNotMatch(html, /<(script|link|img)[^>]+(src|href)=["']?(https?:)?\/\//i);
  assert.doesNotMatch(html, /\.innerHTML\s*=|outerHTML\s*=|insertAdjacentHTML|document\.write/);
});

test('a message sent with Enter streams its reply into the assistant bubble', { timeout: 45000 }, async (t) => {
  await openSettings();
  // 300 tokens, about half a second of streaming: on a busy machine a much
  // shorter reply can reach the page in a single read.
  await setField('#max-tokens', 300);
  await setField('#temperature', 0.8);
  await recordSnapshots();
  const before = chatRequests.length;
  await typeMessage('Tell me a story about the sea.');
  // Shift+Enter is a new line, not a send.
  await page.keyboard.down('Shift');
  await page.keyboard.press('Enter');
  await page.keyboard.up('Shift');
  await page.type('[data-testid="message-input"]', 'Make it short.');
  assert.equal(chatRequests.length, before, 'Shift+Enter sent the message');
  extra = { ignore_eos: true };
  let reply;
  try {
    await page.keyboard.press('Enter');
    reply = await waitReplyDone(1);
  } finally {
    extra = {};
  }
  const snaps = await page.evaluate(() => window.__snaps);
  t.diagnostic(`${snaps.length} texts seen while streaming; the reply has ${reply.text.length} characters`);
  assert.ok(reply.text.trim().length > 0, 'the reply ended empty');
  assert.equal(reply.state, 'done', `reply ended as ${reply.state}: ${reply.note}`);
  assert.equal(reply.note, 'stopped at the max tokens limit', 'finish_reason "length" is shown');
  assert.ok(snaps.length >= 2, `the bubble was seen with ${snaps.length} text(s) while streaming, not growing: ${JSON.stringify(snaps)}`);
  assert.notEqual(snaps[0], snaps[snaps.length - 1]);
  assert.equal(await page.$eval('[data-testid="message-input"]', (el) => el.value), '', 'the input was not cleared');
  const sent = chatRequests[chatRequests.length - 1].body;
  assert.equal(sent.stream, true);
  assert.equal(sent.model, base);
  assert.equal(sent.max_tokens, 300);
  assert.equal(sent.temperature, 0.8);
  assert.deepEqual(sent.messages.at(-1), { role: 'user', content: 'Tell me a story about the sea.\nMake it short.' });
  const user = await page.$$eval('[data-testid="user-message"] [data-testid="message-body"]', (els) => els.map((e) => e.textContent));
  assert.deepEqual(user, ['Tell me a story about the sea.\nMake it short.']);
});

test('picking the adapter sends its name as the model', { timeout: 45000 }, async () => {
  await page.select('[data-testid="model-picker"]', ADAPTER);
  await typeMessage('And now with the adapter.');
  await page.click('[data-testid="send-button"]');
  const reply = await waitReplyDone(2);
  const sent = chatRequests[chatRequests.length - 1].body;
  assert.equal(sent.model, ADAPTER);
  // The whole conversation goes along: the first exchange, then this message.
  assert.deepEqual(sent.messages.map((m) => m.role), ['user', 'assistant', 'user']);
  assert.equal(reply.state, 'done', `reply ended as ${reply.state}: ${reply.note}`);
  assert.equal(reply.model, ADAPTER);
  assert.ok(reply.text.trim().length > 0, 'the adapter reply ended empty');
});

test('an error from the server is shown in the page', { timeout: 30000 }, async () => {
  // A model the server does not have: it answers with an OpenAI-shaped error.
  await page.evaluate(() => {
    const opt = document.createElement('option');
    opt.value = 'no-such-model';
    opt.textContent = 'no-such-model';
    document.getElementById('model-picker').appendChild(opt);
  });
  await page.select('[data-testid="model-picker"]', 'no-such-model');
  const n = (await assistantCount()) + 1;
  await typeMessage('This one should fail.');
  await page.keyboard.press('Enter');
  const reply = await waitReplyDone(n);
  assert.equal(reply.state, 'error');
  assert.match(reply.note, /^Error: \S/);
  await page.waitForSelector('[data-testid="error"]:not([hidden])');
  const banner = await page.$eval('#error-text', (el) => el.textContent);
  assert.ok(banner.length > 0);
  assert.ok(reply.note.includes(banner), `bubble "${reply.note}" and banner "${banner}" differ`);
  await page.$eval('#model-picker option[value="no-such-model"]', (o) => o.remove());
  await page.select('[data-testid="model-picker"]', base);
  await page.click('#error-close');
});

test('Stop ends a long reply; the page and the server carry on', { timeout: 60000 }, async (t) => {
  await setField('#max-tokens', 800);
  await setField('#temperature', 1.2);
  // 800 tokens and ignore_eos: seconds of streaming. Should a reply still end
  // before Stop lands, that conversation is deleted and another prompt tried.
  const prompts = [
    'Write a very long poem about rivers, mountains and the night sky.',
    'Tell the whole history of the world, in great detail.',
    'List every word you know.',
    'Keep talking for as long as you can.',
  ];
  let stopped = null;
  let generatedBefore = null;
  const tries = [];
  extra = { ignore_eos: true };
  try {
    for (const prompt of prompts) {
      generatedBefore = await metric('slm_generated_tokens_total');
      await page.click('[data-testid="new-chat"]');
      assert.equal(await assistantCount(), 0, 'New chat did not clear the messages');
      await typeMessage(prompt);
      await page.keyboard.press('Enter');
      // Stop as soon as the reply has begun.
      await page.waitForFunction(() => {
        const el = document.querySelector('[data-testid="assistant-message"]');
        return el && (el.dataset.state !== 'streaming' || el.querySelector('[data-testid="message-body"]').textContent.length > 0);
      }, { timeout: REPLY_WAIT, polling: 'mutation' });
      try {
        await page.click('[data-testid="stop-button"]');
      } catch { /* the reply ended first and Stop is gone */ }
      const reply = await waitReplyDone(1);
      tries.push(`${reply.state} after ${reply.text.length} characters`);
      if (reply.state === 'stopped') { stopped = reply; break; }
      const id = await page.evaluate(() => window.slmChat.currentId());
      await page.click(`[data-testid="conversation-item"][data-id="${id}"] [data-testid="delete-conversation"]`);
    }
  } finally {
    extra = {};
  }
  t.diagnostic(`tries: ${tries.join('; ')}`);
  assert.ok(stopped, `every reply ended before Stop: ${tries.join('; ')}`);
  assert.equal(stopped.note, 'stopped');
  assert.ok(stopped.text.length > 0);
  await sleep(800);
  const later = await lastReply();
  assert.equal(later.text, stopped.text, 'the reply kept growing after Stop');
  assert.equal(later.state, 'stopped');
  // The input is usable again: Send is back, Stop is gone, typing works.
  assert.equal(await page.$eval('[data-testid="send-button"]', (b) => !b.disabled && !b.hidden), true);
  assert.equal(await page.$eval('[data-testid="stop-button"]', (b) => b.hidden), true);
  assert.equal(await page.$eval('[data-testid="message-input"]', (t) => t.disabled), false);
  await typeMessage('still here');
  assert.equal(await page.$eval('[data-testid="message-input"]', (t) => t.value), 'still here');
  await setField('#message-input', '');
  // The server still answers.
  const health = await within(WAIT, fetch(server.url + '/health'), 'GET /health');
  assert.equal(health.status, 200);
  const models = await within(WAIT, fetch(server.url + '/v1/models'), 'GET /v1/models');
  assert.equal(models.status, 200);
  // And it cancelled the request when the page went away: nothing runs on,
  // and far fewer than the 800 tokens asked for were generated.
  if (generatedBefore !== null) {
    const until = Date.now() + WAIT;
    while ((await metric('slm_running_sequences')) !== 0 && Date.now() < until) await sleep(100);
    assert.equal(await metric('slm_running_sequences'), 0, 'a sequence still runs after Stop');
    const generated = (await metric('slm_generated_tokens_total')) - generatedBefore;
    t.diagnostic(`the server generated ${generated} tokens for the stopped reply`);
    assert.ok(generated < 800, `the server generated all ${generated} tokens: the request was not cancelled`);
  }
});

test('markdown is rendered with DOM nodes: markup in a reply stays text', { timeout: 30000 }, async () => {
  const payload = [
    'Hi <img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script>',
    '',
    '**bold <img src=y onerror=window.__pwned=3>** and *it<b>alic</b>* with `<i>code</i>`',
    '',
    '```html',
    '<script>window.__pwned=4</script>',
    '```',
    '',
    '- item <svg onload="window.__pwned=5"></svg>',
    '- [link](javascript:window.__pwned=6)',
    '',
    '1. first',
    '2. second',
  ].join('\n');
  const out = await page.evaluate(async (src) => {
    const node = window.slmChat.renderMarkdown(src);
    document.body.appendChild(node); // live in the document, so a real <img> would fire onerror
    await new Promise((r) => setTimeout(r, 300));
    const result = {
      unsafe: node.querySelectorAll('img, script, svg, b, i, a, iframe').length,
      tags: [...node.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()),
      text: node.textContent,
      pre: node.querySelector('pre') && node.querySelector('pre').textContent,
      pwned: window.__pwned,
    };
    node.remove();
    return result;
  }, payload);
  assert.equal(out.unsafe, 0, `markup became elements: ${out.tags.join(',')}`);
  assert.equal(out.pwned, undefined);
  assert.ok(out.text.includes('<img src=x onerror="window.__pwned=1">'), out.text);
  assert.ok(out.text.includes('<script>window.__pwned=2</script>'));
  assert.ok(out.text.includes('<i>code</i>'));
  assert.equal(out.pre, '<script>window.__pwned=4</script>');
  for (const tag of ['p', 'strong', 'em', 'code', 'pre', 'ul', 'ol', 'li']) assert.ok(out.tags.includes(tag), `no <${tag}> in ${out.tags.join(',')}`);

  // The same text arriving as a streamed reply takes the page's real path:
  // the test answers the request itself, the markup split across two chunks.
  const chunk = (delta, finish = null) => 'data: ' + JSON.stringify({
    id: 'chatcmpl-canned', object: 'chat.completion.chunk', created: 0, model: base,
    choices: [{ index: 0, delta, finish_reason: finish }],
  }) + '\n\n';
  const half = payload.indexOf('onerror') + 3;
  canned = chunk({ role: 'assistant' }) + chunk({ content: payload.slice(0, half) }) +
    chunk({ content: payload.slice(half) }) + chunk({}, 'stop') + 'data: [DONE]\n\n';
  try {
    const n = (await assistantCount()) + 1;
    await typeMessage('Show me some markup.');
    await page.keyboard.press('Enter');
    await waitReplyDone(n);
  } finally {
    canned = null;
  }
  const bubble = await page.$$eval('[data-testid="assistant-message"]', (els) => {
    const el = els[els.length - 1];
    return { unsafe: el.querySelectorAll('img, script, svg, b, i, a').length, text: el.textContent };
  });
  assert.equal(bubble.unsafe, 0);
  assert.ok(bubble.text.includes('<img src=x onerror="window.__pwned=1">'));
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
});

test('conversations survive a reload (localStorage)', { timeout: 30000 }, async () => {
  const snapshot = () => page.evaluate(() => ({
    items: document.querySelectorAll('[data-testid="conversation-item"]').length,
    messages: [...document.querySelectorAll('[data-testid="message-list"] .msg')].map((m) => [m.dataset.role, m.querySelector('[data-testid="message-body"]').textContent]),
    current: window.slmChat.currentId(),
  }));
  const beforeReload = await snapshot();
  assert.equal(beforeReload.items, 2, 'the first conversation and the stopped one');
  await page.reload({ waitUntil: 'load', timeout: WAIT });
  await page.waitForFunction((a) => [...document.querySelectorAll('#model-picker option')].some((o) => o.value === a), {}, ADAPTER);
  const afterReload = await snapshot();
  assert.deepEqual(afterReload, beforeReload);
  // The stopped reply is still marked stopped, and the stored markup is still text.
  assert.equal(await page.$$eval('[data-testid="assistant-message"] img, [data-testid="assistant-message"] script', (e) => e.length), 0);
  // The first conversation is back as it was: pick it from the list.
  const ids = await page.$$eval('[data-testid="conversation-item"]', (els) => els.map((e) => e.dataset.id));
  await page.click(`[data-testid="conversation-item"][data-id="${ids[1]}"] .open`);
  const first = await page.$$eval('[data-testid="assistant-message"]', (els) => els.map((e) => [e.dataset.model, e.dataset.state]));
  assert.deepEqual(first.slice(0, 2), [[base, 'done'], [ADAPTER, 'done']]);
  // The settings came back too.
  assert.equal(await page.$eval('#max-tokens', (el) => el.value), '800');
});

test('a screenshot of the page', { timeout: 30000 }, async () => {
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  const file = path.join(work, 'web_chat.png');
  await page.screenshot({ path: file });
  console.log(`screenshot: ${file}`);
  await page.setViewport({ width: 390, height: 760 });
  await sleep(400); // the conversation list slides away on a narrow window
  const narrow = path.join(work, 'web_chat_narrow.png');
  await page.screenshot({ path: narrow });
  console.log(`screenshot (narrow window): ${narrow}`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(overflow, false, 'the page scrolls sideways on a narrow window');
  await page.setViewport({ width: 1100, height: 760 });
});

test('deleting a conversation removes it for good', { timeout: 30000 }, async () => {
  const ids = await page.$$eval('[data-testid="conversation-item"]', (els) => els.map((e) => e.dataset.id));
  await page.click(`[data-testid="conversation-item"][data-id="${ids[0]}"] [data-testid="delete-conversation"]`);
  const left = await page.$$eval('[data-testid="conversation-item"]', (els) => els.map((e) => e.dataset.id));
  assert.deepEqual(left, ids.slice(1));
  await page.reload({ waitUntil: 'load', timeout: WAIT });
  assert.deepEqual(await page.$$eval('[data-testid="conversation-item"]', (els) => els.map((e) => e.dataset.id)), ids.slice(1));
});

test('with --api-key the page asks for the key, then uses it', { timeout: 45000 }, async () => {
  keyServer = await startServer(['--api-key', 'sekret-web-key', ...chatTemplateArgs()], { timeoutMs: 30000 });
  const keyed = await browser.newPage();
  keyed.setDefaultTimeout(WAIT);
  keyed.on('pageerror', (e) => pageErrors.push(String(e)));
  const auth = [];
  keyed.on('request', (r) => { if (r.url().includes('/v1/')) auth.push([new URL(r.url()).pathname, r.headers().authorization || '']); });
  try {
    const res = await keyed.goto(keyServer.url + '/', { waitUntil: 'load', timeout: WAIT });
    assert.equal(res.status(), 200, 'GET / needs no key');
    await keyed.waitForSelector('[data-testid="error"]:not([hidden])');
    assert.match(await keyed.$eval('#error-text', (el) => el.textContent), /API key/);
    assert.equal(await keyed.$eval('#settings', (el) => el.hidden), false, 'the settings did not open for the key');
    await keyed.type('[data-testid="api-key"]', 'sekret-web-key');
    await keyed.click('[data-testid="api-key-save"]');
    await keyed.waitForFunction(() => document.querySelectorAll('#model-picker option[value]:not([value=""])').length > 0);
    assert.equal(await keyed.$eval('[data-testid="error"]', (el) => el.hidden), true);
    await keyed.$eval('#max-tokens', (el) => { el.value = '16'; el.dispatchEvent(new Event('input', { bubbles: true })); });
    await keyed.type('[data-testid="message-input"]', 'hello with a key');
    await keyed.keyboard.press('Enter');
    await keyed.waitForFunction(() => {
      const el = document.querySelector('[data-testid="assistant-message"]');
      return el && el.dataset.state !== 'streaming';
    }, { timeout: REPLY_WAIT });
    const state = await keyed.$eval('[data-testid="assistant-message"]', (el) => el.dataset.state);
    assert.equal(state, 'done');
    assert.deepEqual(auth.at(-1), ['/v1/chat/completions', 'Bearer sekret-web-key']);
    assert.equal(await keyed.evaluate(() => localStorage.getItem('slm-chat.api-key')), 'sekret-web-key');
  } finally {
    await keyed.close().catch(() => {});
  }
});

test('no uncaught errors in the page', () => {
  assert.deepEqual(pageErrors, []);
});
