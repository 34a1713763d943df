// The tokenizer parity corpus: hand-written hard cases plus deterministic
// generated mixtures (a seeded PRNG), over 500 strings in all.
const handWritten = [
  // whitespace: leading, trailing, runs, tabs, newlines, \r\n, Unicode spaces
  "", " ", "  ", "\t", "\n", "\r\n", " \n ", "hello", " hello", "  hello", "hello ", "hello  ", "hello   world",
  "\thello\tworld\t", "line one\nline two", "line one\r\nline two\r\n", "para\n\n\npara", "  \n\t  \n", "a \t b \n c",
  "trailing newline\n", "\n\nleading newlines", "x\u00a0y", "x\u2009thin\u2003em", "ideographic\u3000space", "mixed \t\n\r\n  ws",
  // contractions in both cases
  "I'm here, you're there, it's fine.", "I'M HERE, YOU'RE THERE, IT'S FINE.", "don't can't won't shouldn't",
  "DON'T CAN'T WON'T", "we'll we'd we've they'd", "WE'LL WE'D WE'VE", "rock 'n' roll", "'quoted' and \"double\"",
  "O'Brien's dog's bone", "l'été c'est", "y'all'd've",
  // numbers of every shape
  "0", "7", "42", "123", "1234", "12345678901234567890", "3.14159", "-42", "+1 (555) 123-4567", "1,000,000", "1.000.000,00",
  "1e10", "6.02e23", "0xFF 0b1010 0o777", "2024-01-15", "12:30:45", "v1.2.3-beta.4", "$19.99", "€5", "50%", "1/2 3/4",
  "٣٤٥ ०१२ ๑๒๓", "①②③", "Ⅻ", "²³", "100km/h", "4x4", "x2 y3",
  // punctuation runs and symbols
  "!!!", "???", "...", "?!?!", "---", "***bold***", "~~~", "!@#$%^&*()_+-=[]{}|;':\",./<>?", "«guillemets»", "„Anführung“",
  "“smart quotes”", "‘single’", "—em dash— –en dash–", "…", "•bullet", "§ ¶ © ® ™", "← → ↑ ↓", "∑∫∂√∞≠≤≥",
  // code and JSON
  "def f(x):\n    return x**2  # square", "for (int i = 0; i < n; ++i) { sum += a[i]; }", "if x == 1:\n\tpass\nelse:\n\tprint('no')",
  "#include <stdio.h>\nint main(void) { return 0; }", "const x = () => ({a: 1});", "SELECT * FROM users WHERE id = 42;",
  "{\"key\": \"value\", \"n\": [1, 2.5, -3e4], \"ok\": true, \"nil\": null}", "[{\"a\":1},{\"b\":{\"c\":[]}}]",
  "<div class=\"x\">Hello &amp; welcome</div>", "```python\nprint('hi')\n```", "    indented four", "        indented eight",
  "snake_case_name camelCaseName PascalCase kebab-case", "path/to/file.txt C:\\Windows\\System32", "a->b a=>b a::b a||b a&&b",
  // URLs and e-mail
  "https://example.com/path?q=1&r=two#frag", "http://localhost:8080/api/v1/items/", "mailto:someone@example.org",
  "Visit www.example.co.uk or ftp://files.example.net.", "user.name+tag@sub.domain.com",
  // accents and combining marks, normalization forms
  "café", "cafe\u0301", "naïve résumé coöperate", "Ångström", "A\u030angstro\u0308m", "ñ n\u0303", "Ǆ ǅ ǆ", "ﬁ ﬂ ligatures",
  "İstanbul ıi", "ß ẞ", "Straße", "ǰ", "ḱṓṑ", "z\u0307\u0323",
  // full-width and compatibility forms
  "Ｆｕｌｌ－ｗｉｄｔｈ　ｔｅｘｔ", "ＡＢＣ１２３", "ｶﾀｶﾅ", "㍿ ㌔", "①", "™",
  // scripts
  "日本語のテキストです。", "中文文本，包括标点符号。", "繁體中文測試", "한국어 텍스트입니다.", "Привет, мир! Как дела?",
  "Ελληνικά γράμματα και τόνοι", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "ქართული", "Հայերեն",
  "Tiếng Việt có dấu", "Türkçe karakterler: ğüşöçı", "Polski: zażółć gęślą jaźń", "Čeština: příliš žluťoučký kůň",
  "ᚠᚢᚦᚨᚱᚲ", "𝕄𝕒𝕥𝕙 𝔽𝕣𝕒𝕜𝕥𝕦𝕣", "Ω≈ç√∫", "mixed 日本 and English", "عربي English עברית",
  // emoji, ZWJ sequences, flags, skin tones, variation selectors
  "😀", "👍🏽", "👨‍👩‍👧‍👦 family", "🏳️‍🌈", "🇺🇸🇯🇵🇩🇪", "❤️ ❤", "☕️", "🧑🏿‍💻 coder", "text😀text", "🤖🤖🤖",
  // special-token strings inside ordinary text (every tokenizer's own and the others')
  "<s>", "</s>", "<unk>", "<s>Hello</s>", "text <s> more </s> end", "<|begin_of_text|>Hi", "a<|end_of_text|>b",
  "<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", "<|im_start|>system\nYou are helpful.<|im_end|>",
  "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>", "<think>\nhmm\n</think>", "<bos>x<eos>",
  "<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n", "<pad><pad>", "< s>", "<s >", "<<s>>", "<|im_start",
  "<0x41>", "▁already▁has▁metaspace", "Ġalready Ġbyte Ġlevel", "\u2581", "  <s>  spaced  </s>  ",
  // the rule cases of the hand-made tokenizers (tests/unit/tokenizer/data): merge ranks, metaspace merges, byte fallback
  "abc", "ab", "a b", "b a a", "ab<s>ab", "ab \u00e9 abc", "\u00e9", "\ufffd", "aab abab",
  // control characters and odd code points
  "\u0000null byte", "bell\u0007", "\u001b[31mred\u001b[0m", "zero\u200bwidth\u200cjoiners\u200d", "\ufeffbom", "soft\u00adhyphen",
  "rtl\u202eoverride", "\ud83d\ude00 surrogate pair", "\uffff", "\u{10ffff}", "private\ue000use",
];

const fragments = [
  "the", "The", " quick", "brown", " fox", "jumps", " over", "lazy", "dog", "HELLO", "World", "it's", "don't", "42", "3.5",
  "1234567", "!", "?", "...", ",", ";", "(", ")", "[x]", "{y}", "\"q\"", "'s", " ", "  ", "\t", "\n", "\r\n", "\n\n", "café",
  "naïve", "日本", "語", "中文", "한국", "Привет", "мир", "Ελλάδα", "مرحبا", "שלום", "नमस्ते", "สวัสดี", "😀", "👍🏽",
  "👨‍👩‍👧", "🇫🇷", "x", "y", "z", "_", "-", "--", "=", "==", "=>", "->", "#", "@", "$", "%", "&", "*", "/", "\\", "|",
  "<s>", "</s>", "<|endoftext|>", "<|im_end|>", "<eos>", "www", ".com", "http://", "a.b.c", "0x1F", "e\u0301",
  "Ｆｕｌｌ", "ﬁ", "ß", "İ", "ǅ", "   lead", "trail   ", "MiXeD", "camelCase", "snake_case", "UPPER", "lower",
];

const prose = `Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in \
Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a great civil war, \
testing whether that nation, or any nation so conceived and so dedicated, can long endure. We are met on a great \
battle-field of that war. We have come to dedicate a portion of that field, as a final resting place for those who \
here gave their lives that that nation might live. It is altogether fitting and proper that we should do this. But, \
in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- this ground. The brave men, \
living and dead, who struggled here, have consecrated it, far above our poor power to add or detract. The world will \
little note, nor long remember what we say here, but it can never forget what they did here. It is for us the living, \
rather, to be dedicated here to the unfinished work which they who fought here have thus far so nobly advanced. It is \
rather for us to be here dedicated to the great task remaining before us -- that from these honored dead we take \
increased devotion to that cause for which they gave the last full measure of devotion -- that we here highly resolve \
that these dead shall not have died in vain -- that this nation, under God, shall have a new birth of freedom -- and \
that government of the people, by the people, for the people, shall not perish from the earth.`;

// Mulberry32: a small seeded generator, so the corpus is the same on every run.
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// About 700 KB of lines, longer than the windows and parts a long text is
// cut into (after newlines; SentencePiece-style texts stream through the
// normalizer in windows of 256 KiB a thread): prose, indented and blank
// lines, runs of spaces and newlines, "▁" typed in, scripts and emoji, so
// that cuts land among them. One special token splits it into two sections
// (570 and 130 KB).
function longText(random, pick) {
  const words = prose.split(" ");
  const plain = fragments.filter((f) => !f.startsWith("<"));  // no added tokens but the one
  const pickPlain = () => pick(plain);
  const kinds = [
    () => words.slice(Math.floor(random() * 200)).slice(0, 5 + Math.floor(random() * 60)).join(" "),
    () => " ".repeat(1 + Math.floor(random() * 8)) + pick(words) + " " + pick(words),
    () => "",
    () => " ".repeat(1 + Math.floor(random() * 5)),
    () => "\t" + pickPlain() + pickPlain(),
    () => pick(["▁", "▁▁", " ▁", "▁ "]) + pick(words),
    () => Array.from({ length: 3 + Math.floor(random() * 12) }, pickPlain).join(random() < 0.5 ? " " : ""),
  ];
  const lines = [];
  let bytes = 0;
  for (let i = 0; bytes < 700000; ++i) {
    // Most lines end in a word after two spaces or after "a ": their last
    // "▁" follows another, or an "a" that the hand-made metaspace_merge
    // tokenizer joins to it, where SentencePiece-style BPE may not be cut.
    const ending = random() < 0.7 ? pick(["  ", " a ", "a "]) + pick(words) : "";
    const line = i === 16000 ? "a <s> b" : pick(kinds)() + ending;
    lines.push(line);
    bytes += Buffer.byteLength(line) + 1;
  }
  return lines.join("\n");
}

export function corpus() {
  const random = rng(20261128);
  const pick = (list) => list[Math.floor(random() * list.length)];
  const generated = [];
  for (let i = 0; i < 400; ++i) {
    const n = 1 + Math.floor(random() * 12);
    let s = "";
    for (let k = 0; k < n; ++k) s += pick(fragments) + (random() < 0.4 ? " " : "");
    generated.push(s);
  }
  const long = [
    prose,
    prose.replace(/ /g, "\n"),
    (prose + "\n\n").repeat(3),
    "a".repeat(5000),
    "ab".repeat(2000),
    "Supercalifragilisticexpialidocious".repeat(40),
    " ".repeat(3000) + "x",
    "\n".repeat(500) + "end",
    "\t \t".repeat(700),
    "9".repeat(1000),
    "日本語".repeat(500),
    "😀".repeat(400),
    "word ".repeat(1000),
    "x".repeat(100) + " " + "y".repeat(100),
    ".".repeat(2000),
    longText(random, pick),
  ];
  return [...handWritten, ...generated, ...long];
}

export const tokenizerNames = ["llama2", "llama3", "qwen3", "gemma3"];
