// The simulator's pages load ES modules only, from the simulator's own static folder, and what
// they share (formatting, Nairobi time, the phone rule) is written once, in sim-format.js.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

const ROOT = new URL("../../../simulator/", import.meta.url);
const JS = new URL("static/js/", ROOT);
const PAGES = ["phone.html", "phone_picker.html", "simulator.html", "sim_base.html"];
const SHARED = "sim-format.js";

const read = (url) => readFileSync(url, "utf8");

function scriptTags(template) {
  return [...read(new URL(`templates/${template}`, ROOT)).matchAll(/<script\b([^>]*)>/g)].map((m) => m[1]);
}

/** Every module reached from the pages' scripts: name -> source. */
function pageModules() {
  const modules = new Map();
  const queue = PAGES.flatMap(scriptTags).map((attrs) => /src="\/simulator\/static\/js\/([\w-]+\.js)"/.exec(attrs)[1]);
  while (queue.length) {
    const name = queue.shift();
    if (modules.has(name)) continue;
    const source = read(new URL(name, JS));
    modules.set(name, source);
    for (const match of source.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+"([^"]+)"/gm)) {
      assert.match(match[1], /^\.\/[\w-]+\.js$/, `${name} imports ${match[1]}: only this folder's modules`);
      queue.push(match[1].slice(2));
    }
  }
  return modules;
}

// What phone.js and simulator.js once each kept a copy of: [pattern, how many times sim-format.js has it].
const SHARED_ONLY = {
  "the phone pattern": [/\(\?:\\\+254\|254\|0\)/g, 1],
  "number formatters": [/new Intl\.NumberFormat\(/g, 2], // with cents, and whole shillings
  "date formatters": [/Intl\.DateTimeFormat\(/g, 2], // in Nairobi time, or the fallback
  "the time zone": [/Africa\/Nairobi/g, 1],
};

describe("the simulator's pages", () => {
  test("every script tag is a module from /simulator/static/js/", () => {
    const tags = PAGES.flatMap(scriptTags);
    assert.ok(tags.length >= 3);
    for (const attrs of tags) {
      assert.match(attrs, /\btype="module"/, `<script${attrs}>`);
      assert.match(attrs, /\bsrc="\/simulator\/static\/js\/[\w-]+\.js"/, `<script${attrs}>`);
    }
  });

  test("every module they load is an ES module, without the old script style", () => {
    const modules = pageModules();
    assert.deepEqual([...modules.keys()].sort(), ["phone.js", "prompt-feed.js", "sim-format.js", "simulator.js"]);
    for (const [name, source] of modules) {
      assert.match(source, /^\s*(?:import|export)\s/m, `${name} is a module`);
      assert.doesNotMatch(source, /["']use strict["']/, `${name}: modules are strict already`);
      assert.doesNotMatch(source, /^\(\(\) => \{|^\(function/m, `${name}: no wrapper function`);
      assert.doesNotMatch(source, /window\.followPrompts/, `${name}: no globals between scripts`);
    }
  });

  for (const [what, [pattern, count]] of Object.entries(SHARED_ONLY)) {
    test(`${what}: in ${SHARED} only`, () => {
      const found = [];
      for (const [name, source] of pageModules()) {
        for (const _ of source.matchAll(pattern)) found.push(name);
      }
      assert.deepEqual(found, Array(count).fill(SHARED));
    });
  }

  test("the shared module loads in Node, where there is no window or document", async () => {
    assert.equal(typeof globalThis.document, "undefined");
    await import(new URL(SHARED, JS));
  });
});
