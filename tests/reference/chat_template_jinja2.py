#!/usr/bin/env python3
"""Expected chat-template renders from Python's Jinja2, set up as Hugging Face
transformers sets it up for apply_chat_template: an ImmutableSandboxedEnvironment
with trim_blocks, lstrip_blocks and the loop-controls extension, its own tojson
(json.dumps, no HTML escaping), raise_exception and strftime_now, and the
{% generation %} block. This is the engine slm promises to match byte for byte.

It renders every case chat_template_reference.mjs wrote (the same templates
and contexts, so the two references cover one list) and writes
OUT_DIR/chat_templates_jinja2.json: for each case its name and either
`expected` or `error` (with `raised` when the template raised it itself).

Usage: chat_template_jinja2.py OUT_DIR   (OUT_DIR holds chat_templates.json)
"""
import json
import os
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class RaisedByTemplate(jinja2.exceptions.TemplateError):
    """What raise_exception throws, told apart from Jinja2's own errors."""


def raise_exception(message):
    raise RaisedByTemplate(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


class GenerationBlock(Extension):
    """{% generation %}...{% endgeneration %}: renders its body as it is
    (transformers uses it to mark assistant tokens for training masks)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    if len(sys.argv) != 2:
        print("usage: chat_template_jinja2.py OUT_DIR", file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    with open(os.path.join(out_dir, "chat_templates.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    env = environment()
    results = []
    for case in cases:
        result = {"name": case["name"]}
        try:
            result["expected"] = env.from_string(case["template"]).render(**case["context"])
        except RaisedByTemplate as e:
            result.update(error=str(e), raised=True)
        except Exception as e:  # Jinja2's own errors: slm must fail too, in its own words
            result.update(error=f"{type(e).__name__}: {e}", raised=False)
        results.append(result)
    path = os.path.join(out_dir, "chat_templates_jinja2.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"jinja2_version": jinja2.__version__, "cases": results}, f, ensure_ascii=False, indent=1)
    os.replace(path + ".tmp", path)
    errors = sum(1 for r in results if "error" in r)
    print(f"chat templates (Jinja2 {jinja2.__version__}): {len(results)} renders ({errors} expected errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
