// Look-alike addresses: how the page shows a customer's address so that one which only
// looks like another customer's cannot pass for it.

import { el, setText, show } from './inbox-dom.js';
import { state } from './inbox-state.js';

// Customers are told apart by their exact address, so "\u0430lice@example.com" (a Cyrillic
// "\u0430") is another customer than "alice@example.com" though it looks the same. Every address
// beyond plain ASCII is marked: its other characters are set apart, and a warning names the
// scripts when they mix. Letters of scripts not listed here count as "another script".
const SCRIPTS = [
  ['Latin', /\p{Script=Latin}/u], ['Cyrillic', /\p{Script=Cyrillic}/u], ['Greek', /\p{Script=Greek}/u],
  ['Armenian', /\p{Script=Armenian}/u], ['Georgian', /\p{Script=Georgian}/u],
  ['Cherokee', /\p{Script=Cherokee}/u], ['Hebrew', /\p{Script=Hebrew}/u], ['Arabic', /\p{Script=Arabic}/u],
  ['Devanagari', /\p{Script=Devanagari}/u], ['Thai', /\p{Script=Thai}/u], ['Han', /\p{Script=Han}/u],
  ['Hiragana', /\p{Script=Hiragana}/u], ['Katakana', /\p{Script=Katakana}/u], ['Hangul', /\p{Script=Hangul}/u],
];
const NO_SCRIPT = /[\p{Script=Common}\p{Script=Inherited}]/u;  // digits, punctuation, marks
const PLAIN_ASCII = /^[\x20-\x7e]*$/;
const INVISIBLE = /[\p{C}\p{Z}]/u;  // shown as its code point, never as itself

function scriptOf(char) {
  if (NO_SCRIPT.test(char)) return null;
  const found = SCRIPTS.find(([, pattern]) => pattern.test(char));
  return found ? found[0] : 'another script';
}

function codePoint(char) {
  return `U+${char.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
}

function describeChar(char) {
  return `${codePoint(char)} ${scriptOf(char) || 'not a letter'}`;
}

// What the page says about an address beyond plain ASCII ({label, detail}), or null.
export function addressWarning(address) {
  if (!address || PLAIN_ASCII.test(address)) return null;
  const scripts = new Set();
  const others = new Set();
  for (const char of address) {
    const script = scriptOf(char);
    if (script) scripts.add(script);
    if (!PLAIN_ASCII.test(char)) others.add(char);
  }
  const rank = (name) => {
    const index = SCRIPTS.findIndex(([known]) => known === name);
    return index < 0 ? SCRIPTS.length : index;
  };
  const names = Array.from(scripts).sort((a, b) => rank(a) - rank(b));  // Latin first
  const mixed = names.length > 1;
  const chars = Array.from(others).slice(0, 8);  // (an address in another script: its first few)
  const more = others.size > chars.length ? `, and ${others.size - chars.length} more` : '';
  const quoted = (char) => (INVISIBLE.test(char) ? describeChar(char) : `\u201c${char}\u201d ${describeChar(char)}`);
  const what = mixed ? `this address mixes ${names.slice(0, -1).join(', ')} and ${names[names.length - 1]} letters`
    : 'this address is not plain ASCII';
  return {
    label: mixed ? `mixed scripts: ${names.join(' + ')}` : 'not plain ASCII',
    characters: chars.map(describeChar).join(', ') + more,
    detail: `Warning: ${what} (${chars.map(quoted).join(', ')}${more}). It may look like another customer's address, but it is a different customer.`,
  };
}

// Fills `node` with the address as text, each character beyond ASCII in its own marked span
// (an invisible one written as its code point). A node already showing it is left alone.
export function fillAddress(node, address) {
  const value = address || '';
  if (state.shownAddresses.get(node) === value) return;
  state.shownAddresses.set(node, value);
  const parts = [];
  let ascii = '';
  for (const char of value) {
    if (PLAIN_ASCII.test(char)) {
      ascii += char;
      continue;
    }
    if (ascii) parts.push(ascii);
    ascii = '';
    const mark = el('span', 'non-ascii', INVISIBLE.test(char) ? `[${codePoint(char)}]` : char);
    mark.title = describeChar(char);
    parts.push(mark);
  }
  if (ascii) parts.push(ascii);
  node.replaceChildren(...parts);
}

export function addressWarningNode() {
  const node = el('span', 'address-warning');
  node.setAttribute('role', 'note');
  node.hidden = true;
  return node;
}

// Shows (or hides) the warning for `address` in a node made by addressWarningNode().
export function fillAddressWarning(node, address) {
  const warning = addressWarning(address);
  setText(node, warning ? warning.label : '');
  if (node.title !== (warning ? warning.detail : '')) node.title = warning ? warning.detail : '';
  if (warning) node.setAttribute('aria-label', warning.detail);
  else node.removeAttribute('aria-label');
  show(node, Boolean(warning));
  return warning;
}
