// The pay and confirmation pages' scripts: ES modules only, and what they share written once
// (in web/static/js/format.js). Reads the templates and follows the imports from their scripts.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

const ROOT = new URL("../../", import.meta.url);
const JS = new URL("web/static/js/", ROOT);
const PAGES = ["web/templates/pay.html", "web/templates/confirmation.html"];
const SHARED = "format.js";

const read = (url) => readFileSync(url, "utf8");

// A page's script: src="{{ static_url('js/x.js') }}" (the versioned URL of web/static/js/x.js).
const SCRIPT_SRC = /\bsrc="\{\{ static_url\('js\/([\w-]+\.js)'\) \}\}"/;

function pageScripts(template) {
  return [...read(new URL(template, ROOT)).matchAll(/<script\b([^>]*)>/g)]
    .map((match) => match[1])
    .filter((attrs) => /\bsrc=/.test(attrs));
}

/** Every module reached from the pages' scripts: name → source. */
function pageModules() {
  const modules = new Map();
  const queue = PAGES.flatMap(pageScripts).map((attrs) => SCRIPT_SRC.exec(attrs)[1]);
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

// What was once copied between files, and must now live in the shared module only:
// [pattern, how many times format.js has it].
const SHARED_ONLY = {
  "the phone pattern": [/\(\?:\\\+254\|254\|0\)/g, 1],
  "the separators pattern": [/\/\[\\s-\]\/g/g, 1],
  "number formatters": [/new Intl\.NumberFormat\(/g, 1], // whole shillings
  "date formatters": [/Intl\.DateTimeFormat\(/g, 2], // in Nairobi time, or the fallback
  "the time zone": [/Africa\/Nairobi/g, 1],
  "formatKes": [/function formatKes\b/g, 1],
  "normalisePhone": [/function normalisePhone\b/g, 1],
  "the invalid phone message": [/"Invalid phone number format"/g, 1],
};

describe("the pages' scripts", () => {
  test("every script tag of the pay and confirmation pages is a module from this site, at its versioned URL", () => {
    for (const template of PAGES) {
      const scripts = pageScripts(template);
      assert.ok(scripts.length > 0, template);
      for (const attrs of scripts) {
        assert.match(attrs, /\btype="module"/, `${template}: <script${attrs}>`);
        assert.match(attrs, SCRIPT_SRC, `${template}: <script${attrs}>`);
      }
    }
  });

  test("every module they load is an ES module, without the old script style", () => {
    const modules = pageModules();
    assert.deepEqual([...modules.keys()].sort(),
                     ["cart.js", "checkout-page.js", "confirmation-page.js", "format.js", "payment.js"]);
    for (const [name, source] of modules) {
      assert.match(source, /^\s*(?:import|export)\s/m, `${name} is a module`);
      assert.doesNotMatch(source, /["']use strict["']/, `${name}: modules are strict already`);
      assert.doesNotMatch(source, /^\(\(\) => \{|^\(function/m, `${name}: no wrapper function`);
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

  test("the modules with logic load in Node, where there is no window or document", async () => {
    assert.equal(typeof globalThis.window, "undefined");
    assert.equal(typeof globalThis.document, "undefined");
    for (const name of ["format.js", "payment.js", "cart.js"]) {
      await import(new URL(name, JS));
    }
  });
});
