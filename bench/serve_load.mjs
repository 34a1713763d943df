// Streams completions at slm serve from C concurrent clients and reports, for
// each level, aggregate generated tokens/s, time to first token (p50, p95)
// and the decode rate one stream sees. Prompts are token ids (PROMPT of
// them, different for every request so no prefix is shared), each request
// generates GEN tokens (ignore_eos).
//   node bench/serve_load.mjs URL [--levels 1,8,32,64] [--prompt 128] [--gen 64] [--rounds 2]
// Prints one JSON object per level.
const args = process.argv.slice(2);
const url = args[0];
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const levels = option('levels', '1,8,32,64').split(',').map(Number);
const promptTokens = Number(option('prompt', 128));
const gen = Number(option('gen', 64));
const rounds = Number(option('rounds', 2));

function prompt(r) {
  const ids = [];
  for (let i = 0; i < promptTokens; i++) ids.push(10 + ((i * 37 + r * 1009) % 4000));
  return ids;
}

async function one(r) {
  const start = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    body: JSON.stringify({ prompt: prompt(r), max_tokens: gen, ignore_eos: true, temperature: 0, stream: true }),
  });
  if (res.status !== 200) throw new Error(`status ${res.status}`);
  const reader = res.body.getReader();
  let first = null;
  for (;;) {
    const { done } = await reader.read();
    if (done) break;
    if (first === null) first = performance.now();
  }
  const end = performance.now();
  return { ttft: (first - start) / 1000, decodeRate: (gen - 1) / ((end - first) / 1000) };
}

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

let next = 0;
for (const clients of levels) {
  const results = [];
  const start = performance.now();
  await Promise.all([...Array(clients).keys()].map(async () => {
    for (let k = 0; k < rounds; k++) results.push(await one(next++));
  }));
  const seconds = (performance.now() - start) / 1000;
  console.log(JSON.stringify({
    clients,
    requests: results.length,
    aggregate_tokens_per_s: (results.length * gen) / seconds,
    ttft_p50_s: quantile(results.map((r) => r.ttft), 0.5),
    ttft_p95_s: quantile(results.map((r) => r.ttft), 0.95),
    per_stream_decode_tokens_per_s: quantile(results.map((r) => r.decodeRate), 0.5),
  }));
}
