// Load and faults on loopback: 64 clients stream at once for a bounded time
// (SLM_SERVE_LOAD_SECONDS, 10 by default; 60 for the full form in
// docs/testing.md) while others misbehave: they disconnect mid-stream, open
// connections and send nothing, send malformed JSON (and a number past a
// double's range), a 100 MB body, a prompt longer than the context, n = 1000,
// an adapter to load with no --adapter-root, no API key or a wrong one. Each of those
// gets its own error; every stream of the well-behaved clients completes and
// is well-formed, and the server's memory stops growing once the KV pool is in use.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { startServer } from './lib.mjs';

const seconds = Number(process.env.SLM_SERVE_LOAD_SECONDS || 10);
const clients = 64;
const key = 'load-test-key';
// Above the 4 s for which Node's fetch keeps an idle connection: with the
// server closing idle connections first (at 2 s), a request could go out on a
// socket the server was closing, and fetch failed on a loaded machine.
const timeoutSeconds = 5;
let server;
let port;

before(async () => {
  server = await startServer(['--parallel', '64', '--kv-cache', '16384', '--max-tokens', '96', '--api-key', key,
    '--timeout', String(timeoutSeconds), '--threads', '2']);
  port = Number(new URL(server.url).port);
});

after(async () => {
  if (server) assert.equal(await server.stop(), 0);
});

const headers = { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' };

function rssMiB() {
  const status = readFileSync(`/proc/${server.child.pid}/status`, 'utf8');
  return Number(status.match(/VmRSS:\s+(\d+)/)[1]) / 1024;
}

// One streamed chat completion, read to the end and checked event by event.
async function stream(i, { abortAfter = 0 } = {}) {
  const controller = new AbortController();
  const res = await fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST', headers, signal: controller.signal,
    body: JSON.stringify({
      messages: [{ role: 'system', content: 'You are a load test.' }, { role: 'user', content: `Request ${i}: tell me a story.` }],
      max_tokens: 8 + (i % 48), temperature: 0.8, seed: i, stream: true,
    }),
  });
  if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let events = 0;
  let finish = null;
  let done = false;
  for (;;) {
    const { value, done: ended } = await reader.read();
    if (ended) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith('data: ')) throw new Error(`not an SSE data line: ${JSON.stringify(event)}`);
      const data = event.slice(6);
      if (data === '[DONE]') {
        done = true;
        continue;
      }
      if (done) throw new Error('an event after [DONE]');
      const chunk = JSON.parse(data);
      assert.equal(chunk.object, 'chat.completion.chunk');
      for (const c of chunk.choices) if (c.finish_reason) finish = c.finish_reason;
      if (abortAfter && ++events === abortAfter) {
        controller.abort();
        return 'aborted';
      }
    }
  }
  if (!done || buffer !== '' || !['stop', 'length'].includes(finish)) {
    throw new Error(`an incomplete stream: done=${done} finish=${finish} rest=${JSON.stringify(buffer)}`);
  }
  return 'complete';
}

// A raw connection: what the server answers (or whether it closes) for bytes
// sent by hand.
function raw(bytes, { waitForClose = false } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    const started = Date.now();
    socket.on('data', (d) => {
      answer += d.toString();
      if (!waitForClose && answer.includes('\r\n\r\n')) {
        socket.destroy();
        resolve({ answer, ms: Date.now() - started });
      }
    });
    socket.on('close', () => resolve({ answer, ms: Date.now() - started }));
    socket.on('error', (e) => (answer ? resolve({ answer, ms: Date.now() - started }) : reject(e)));
    if (bytes) socket.write(bytes);
  });
}

async function post(path, body, extraHeaders = headers) {
  const res = await fetch(`${server.url}${path}`, { method: 'POST', headers: extraHeaders, body });
  return { status: res.status, body: await res.json() };
}

test(`${clients} streaming clients for ${seconds} s beside clients that misbehave`, async () => {
  const end = Date.now() + seconds * 1000;
  const outcomes = { complete: 0, aborted: 0, errors: [] };
  let rssHalf = null;
  const half = setTimeout(() => { rssHalf = rssMiB(); }, (seconds * 1000) / 2);
  const worker = async (w) => {
    for (let i = w; Date.now() < end; i += clients) {
      try {
        outcomes[await stream(i, { abortAfter: w % 8 === 7 ? 2 : 0 })]++;
      } catch (e) {
        outcomes.errors.push(String(e));
      }
    }
  };
  const faults = (async () => {
    const found = [];
    const expect = (what, got, want) => { if (got !== want) found.push(`${what}: got ${got}, expected ${want}`); };
    while (Date.now() < end) {
      const idle = raw(null, { waitForClose: true });
      expect('malformed JSON', (await post('/v1/chat/completions', '{"messages": [')).status, 400);
      expect('a number past a double', (await post('/v1/completions', '{"prompt": "x", "temperature": 1e999}')).status, 400);
      expect('an adapter with no --adapter-root', (await post('/v1/adapters', '{"name": "a", "path": "/etc"}')).status, 403);
      const big = await raw(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"prompt": "');
      expect('a 100 MB body', big.answer.split(' ')[1], '413');
      const long = await post('/v1/completions', JSON.stringify({ prompt: 'word '.repeat(3000), max_tokens: 4 }));
      expect('a prompt past the context', long.status, 400);
      expect('its code', long.body.error?.code, 'context_length_exceeded');
      expect('n = 1000', (await post('/v1/completions', JSON.stringify({ prompt: 'x', n: 1000 }))).status, 400);
      expect('no API key', (await post('/v1/completions', '{"prompt": "x"}', {})).status, 401);
      expect('a wrong API key', (await post('/v1/completions', '{"prompt": "x"}', { Authorization: 'Bearer nope' })).status, 401);
      const closed = await idle;
      if (closed.ms > (timeoutSeconds + 3) * 1000) found.push(`an idle connection stayed open ${closed.ms} ms`);
    }
    return found;
  })();
  await Promise.all([...Array(clients).keys()].map(worker));
  const faultErrors = await faults;
  clearTimeout(half);
  const rssEnd = rssMiB();
  assert.deepEqual(outcomes.errors, [], 'every well-behaved stream completes');
  assert.deepEqual(faultErrors, [], 'each misbehaving client gets its own error');
  // Every worker starts at least one request and sees it through.
  assert.ok(outcomes.complete >= clients - clients / 8, `streams completed: ${outcomes.complete}`);
  assert.ok(outcomes.aborted > 0, 'some clients disconnected mid-stream');
  if (process.env.SLM_SANITIZED) {
    // AddressSanitizer holds freed memory in quarantine: resident memory says nothing there.
    console.log('load: resident memory not checked under the sanitizers');
  } else {
    assert.ok(rssHalf !== null && rssEnd - rssHalf < 16,
      `resident memory after the first half: ${rssHalf?.toFixed(1)} MiB, at the end: ${rssEnd.toFixed(1)} MiB`);
  }
  let running = null;
  for (const deadline = Date.now() + 2000; Date.now() < deadline;) {
    const metrics = await (await fetch(`${server.url}/metrics`, { headers })).text();
    running = Number(metrics.match(/^slm_running_sequences (\d+)$/m)[1]);
    if (running === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(running, 0, 'no sequence is left running');
  console.log(`load: ${outcomes.complete} complete streams, ${outcomes.aborted} disconnected on purpose, ` +
    `RSS ${rssHalf.toFixed(1)} -> ${rssEnd.toFixed(1)} MiB`);
});
