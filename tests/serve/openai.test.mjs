// slm serve against the official openai client: what an application that
// speaks the OpenAI API sees. Greedy replies are held to `slm generate` with
// the same settings; chat prompts to @huggingface/jinja's render of the
// model's template.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { Template } from '../reference/node_modules/@huggingface/jinja/dist/index.js';
import { slmBin, startServer, workDir } from './lib.mjs';

const work = workDir('openai');
// The binary's default model, which the server runs when given no -m.
const modelDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../models/slm-tiny');
const adapterDir = path.join(work, 'adapter');

function slm(args) {
  return execFileSync(slmBin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

// What `slm generate` gives for a prompt, greedily, as JSON.
function generate(prompt, extra = []) {
  return JSON.parse(slm(['generate', '-p', prompt, '--temperature', '0', '--output-format', 'json', ...extra]));
}

function trainAdapter() {
  rmSync(adapterDir, { recursive: true, force: true });
  const data = path.join(work, 'train.jsonl');
  const lines = [];
  for (let i = 0; i < 16; i++) lines.push(JSON.stringify({ text: `The kettle number ${i} whistles loudly at dawn.` }));
  writeFileSync(data, lines.join('\n') + '\n');
  slm(['finetune', '--data', data, '--out', adapterDir, '--max-steps', '6', '--lr', '5e-2', '--lora-r', '4',
    '--batch-size', '4', '--seq-len', '32', '--threads', '2']);
}

let server;
let client;

before(async () => {
  trainAdapter();
  server = await startServer(['--adapter', `kettle=${adapterDir}`, '--adapter-root', work, '--parallel', '8',
    '--threads', '2']);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
});

after(async () => {
  if (server) assert.equal(await server.stop(), 0, 'slm serve exits 0 on SIGTERM');
});

describe('models', () => {
  test('lists the base model and the adapter', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['slm-tiny', 'kettle']);
  });

  test('an adapter loads and unloads while the server runs', async () => {
    // A path relative to --adapter-root.
    const add = await fetch(`${server.url}/v1/adapters`, {
      method: 'POST', body: JSON.stringify({ name: 'kettle2', path: path.basename(adapterDir) }),
    });
    assert.equal(add.status, 201);
    const again = await fetch(`${server.url}/v1/adapters`, {
      method: 'POST', body: JSON.stringify({ name: 'kettle2', path: adapterDir }),
    });
    assert.equal(again.status, 409, 'a name already loaded is a conflict');
    const bad = await fetch(`${server.url}/v1/adapters`, {
      method: 'POST', body: JSON.stringify({ name: 'nothing', path: path.join(work, 'no-such-adapter') }),
    });
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error.message, /no-such-adapter/);
    // Outside the root: an absolute path, a climb out, a link that leads out.
    rmSync(path.join(work, 'escape'), { force: true });
    symlinkSync(path.dirname(modelDir), path.join(work, 'escape'));
    for (const outside of [modelDir, `../${path.basename(work)}-elsewhere`, 'escape/slm-tiny']) {
      const refused = await fetch(`${server.url}/v1/adapters`, {
        method: 'POST', body: JSON.stringify({ name: 'outside', path: outside }),
      });
      assert.equal(refused.status, 403, outside);
      const error = (await refused.json()).error;
      assert.match(error.message, /outside --adapter-root/, outside);
      assert.equal(error.type, 'permission_error');
    }
    const r = await client.completions.create({ model: 'kettle2', prompt: 'The kettle', max_tokens: 4, temperature: 0 });
    assert.equal(r.model, 'kettle2');
    const del = await fetch(`${server.url}/v1/adapters/kettle2`, { method: 'DELETE' });
    assert.equal(del.status, 200);
    await assert.rejects(client.completions.create({ model: 'kettle2', prompt: 'x', max_tokens: 1 }),
      (e) => e instanceof OpenAI.NotFoundError && e.param === 'model');
    const gone = await fetch(`${server.url}/v1/adapters/kettle2`, { method: 'DELETE' });
    assert.equal(gone.status, 404);
  });
});

describe('completions', () => {
  test('greedy text equals slm generate', async () => {
    const prompt = 'Once upon a time, in a quiet village,';
    const want = generate(prompt, ['-n', '24']);
    const r = await client.completions.create({ model: 'slm-tiny', prompt, max_tokens: 24, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0].text, want.text);
    assert.equal(r.usage.prompt_tokens, want.prompt_tokens.length);
    assert.equal(r.usage.completion_tokens, want.tokens.length);
    assert.equal(r.choices[0].finish_reason, 'length');
  });

  test('an adapter chosen by model equals slm generate --adapter', async () => {
    const prompt = 'The kettle number 3';
    const want = generate(prompt, ['-n', '16', '--adapter', adapterDir]);
    const base = generate(prompt, ['-n', '16']);
    const r = await client.completions.create({ model: 'kettle', prompt, max_tokens: 16, temperature: 0 });
    assert.equal(r.model, 'kettle');
    assert.equal(r.choices[0].text, want.text);
    assert.notDeepEqual(want.tokens, base.tokens, 'the trained adapter changes the greedy reply');
  });

  test('n choices with a seed: reproducible, and not all alike', async () => {
    const ask = () => client.completions.create({ prompt: 'The weather today', max_tokens: 12, temperature: 1, n: 3, seed: 7 });
    const [a, b] = [await ask(), await ask()];
    assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
    assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
    assert.ok(new Set(a.choices.map((c) => c.text)).size > 1, 'three samples differ');
    assert.equal(a.usage.completion_tokens, a.choices.length * 12);
  });

  test('a stop string ends the text before it and is never sent', async () => {
    const prompt = 'Once upon a time, in a quiet village,';
    const full = generate(prompt, ['-n', '24']).text;
    const words = full.trim().split(/\s+/);
    const stop = ' ' + words[Math.floor(words.length / 2)];
    const cut = full.indexOf(stop);
    const r = await client.completions.create({ prompt, max_tokens: 24, temperature: 0, stop: [stop] });
    assert.equal(r.choices[0].text, full.slice(0, cut));
    assert.equal(r.choices[0].finish_reason, 'stop');
    let streamed = '';
    for await (const chunk of await client.completions.create({ prompt, max_tokens: 24, temperature: 0, stop, stream: true })) {
      streamed += chunk.choices[0]?.text ?? '';
    }
    assert.equal(streamed, full.slice(0, cut));
  });

  test('logprobs: the greedy token is the most likely, alternatives sorted', async () => {
    const r = await client.completions.create({ prompt: 'Hello there', max_tokens: 6, temperature: 0, logprobs: 3 });
    const lp = r.choices[0].logprobs;
    assert.equal(lp.tokens.length, 6);
    assert.equal(lp.tokens.join(''), r.choices[0].text);
    for (let t = 0; t < 6; t++) {
      const alternatives = Object.values(lp.top_logprobs[t]);
      assert.equal(alternatives.length, 3);
      assert.ok(lp.token_logprobs[t] <= 0);
      assert.ok(Math.abs(lp.token_logprobs[t] - Math.max(...alternatives)) < 1e-6);
    }
  });
});

describe('chat', () => {
  const messages = [
    { role: 'system', content: 'You are a terse assistant.' },
    { role: 'user', content: [{ type: 'text', text: 'Tell me ' }, { type: 'text', text: 'about kettles.' }] },
  ];
  const joined = [messages[0], { role: 'user', content: 'Tell me about kettles.' }];

  test('the prompt is the chat template rendered as @huggingface/jinja renders it', async () => {
    const config = JSON.parse(readFileSync(path.join(modelDir, 'tokenizer_config.json'), 'utf8'));
    const text = new Template(config.chat_template).render({
      messages: joined, add_generation_prompt: true, bos_token: config.bos_token, eos_token: config.eos_token,
    });
    const ids = await (await fetch(`${server.url}/tokenize`, { method: 'POST', body: JSON.stringify({ content: text }) })).json();
    const r = await client.chat.completions.create({ messages, max_tokens: 8, temperature: 0 });
    assert.equal(r.usage.prompt_tokens, ids.tokens.length);
    const asText = await client.completions.create({ prompt: ids.tokens, max_tokens: 8, temperature: 0 });
    assert.equal(r.choices[0].message.content, asText.choices[0].text, 'chat = completion of the rendered prompt');
  });

  test('streamed deltas add up to the whole reply', async () => {
    const whole = await client.chat.completions.create({ messages, max_tokens: 20, temperature: 0 });
    assert.equal(whole.object, 'chat.completion');
    assert.equal(whole.choices[0].message.role, 'assistant');
    const stream = await client.chat.completions.create({
      messages, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let role = null;
    let finish = null;
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.role) role = c.delta.role;
        text += c.delta.content ?? '';
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(role, 'assistant');
    assert.equal(text, whole.choices[0].message.content);
    assert.equal(finish, whole.choices[0].finish_reason);
    assert.deepEqual(usage, whole.usage);
    assert.ok(chunks > 3, 'the reply arrives in pieces');
  });

  test('logprobs and top_logprobs', async () => {
    const r = await client.chat.completions.create({ messages, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2 });
    const content = r.choices[0].logprobs.content;
    assert.equal(content.length, r.usage.completion_tokens);
    for (const t of content) {
      assert.equal(t.top_logprobs.length, 2);
      assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
      assert.equal(t.token, t.top_logprobs[0].token);
      assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf8')]);
    }
  });
});

describe('errors', () => {
  test('a field of the wrong type is a 400 naming it', async () => {
    await assert.rejects(client.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], temperature: 'hot' }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'temperature');
    await assert.rejects(client.chat.completions.create({ messages: 'hi' }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'messages');
  });

  test('an unknown model is a 404', async () => {
    await assert.rejects(client.completions.create({ model: 'gpt-17', prompt: 'x' }),
      (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
  });

  test('a prompt longer than the context, and n beyond --parallel, are 400s', async () => {
    await assert.rejects(client.completions.create({ prompt: 'word '.repeat(3000), max_tokens: 1 }),
      (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');
    await assert.rejects(client.completions.create({ prompt: 'x', n: 1000 }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'n');
    await assert.rejects(client.completions.create({ prompt: 'x', n: 9 }),
      (e) => e instanceof OpenAI.BadRequestError && /--parallel/.test(e.message));
  });

  test('malformed JSON and a body over --max-body', async () => {
    const bad = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', body: '{"messages": [' });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.type, 'invalid_request_error');
    const big = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: 'x'.repeat(9 << 20) });
    assert.equal(big.status, 413);
    assert.match((await big.json()).error.message, /--max-body/);
    assert.equal((await fetch(`${server.url}/health`)).status, 200, 'and the server keeps serving');
  });
});

describe('the server itself', () => {
  test('a client that disconnects mid-stream frees its sequence at once', async () => {
    const controller = new AbortController();
    const stream = await client.completions.create(
      { prompt: 'On and on', max_tokens: 100000, ignore_eos: true, stream: true }, { signal: controller.signal });
    let chunks = 0;
    for await (const _ of stream) {
      if (++chunks === 3) break;  // leaving the loop aborts the request
    }
    controller.abort();
    const deadline = Date.now() + 1000;  // running to the context would take seconds
    let running = null;
    while (Date.now() < deadline) {
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      running = Number(metrics.match(/^slm_running_sequences (\d+)/m)[1]);
      if (running === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(running, 0);
  });

  test('SIGTERM ends the streams in flight and exits 0 at once', async () => {
    const own = await startServer(['--parallel', '2']);
    const ownClient = new OpenAI({ baseURL: `${own.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const stream = await ownClient.completions.create({ prompt: 'On and on', max_tokens: 100000, ignore_eos: true, stream: true });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    const started = Date.now();
    const code = await own.stop();
    assert.equal(code, 0);
    assert.ok(Date.now() - started < 2000, `stopped after ${Date.now() - started} ms`);
    let finish = null;
    try {
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) finish = r.value.choices[0]?.finish_reason ?? finish;
    } catch {
      // The connection may close before the last chunk: either way the stream is over.
    }
    assert.notEqual(finish, 'length', 'the stream did not run on to its limit');
  });

  test('metrics count requests, tokens and latencies in Prometheus format', async () => {
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /^slm_requests_total\{path="\/v1\/completions",status="200"\} [1-9]\d*$/m);
    assert.match(metrics, /^slm_requests_total\{path="\/v1\/completions",status="400"\} [1-9]\d*$/m);
    assert.match(metrics, /^slm_generated_tokens_total [1-9]\d*$/m);
    assert.match(metrics, /^slm_time_to_first_token_seconds_count [1-9]\d*$/m);
    assert.match(metrics, /^slm_time_to_first_token_seconds_bucket\{le="\+Inf"\} [1-9]\d*$/m);
    assert.match(metrics, /^slm_kv_cache_usage_ratio 0$/m);
  });

  test('tokenize and detokenize round-trip', async () => {
    const { tokens } = await (await fetch(`${server.url}/tokenize`, { method: 'POST', body: JSON.stringify({ content: 'Hello, kettle!' }) })).json();
    const want = slm(['tokenize', '-m', modelDir, '--no-special', '-p', 'Hello, kettle!']).trim().split(/\s+/).map(Number);
    assert.deepEqual(tokens, want);
    const { content } = await (await fetch(`${server.url}/detokenize`, { method: 'POST', body: JSON.stringify({ tokens }) })).json();
    assert.equal(content, 'Hello, kettle!');
  });
});

describe('an API key', () => {
  test('is required when the server has one', async () => {
    const keyed = await startServer(['--api-key', 'sesame', '--parallel', '2']);
    try {
      const wrong = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'nope', maxRetries: 0 });
      await assert.rejects(wrong.models.list(), (e) => e instanceof OpenAI.AuthenticationError);
      const right = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'sesame', maxRetries: 0 });
      const r = await right.completions.create({ prompt: 'Hi', max_tokens: 2 });
      assert.equal(r.choices.length, 1);
      assert.equal((await fetch(`${keyed.url}/health`)).status, 200, '/health needs no key');
      assert.equal((await fetch(`${keyed.url}/metrics`)).status, 401);
    } finally {
      await keyed.stop();
    }
  });
});
