// The transcript of the open chat: its messages and internal notes in order, each built
// once and then only moved, and customers' image links, which load nothing until clicked.

import { fillAddress } from './inbox-addresses.js';
import { $, agentLabel, customerLabel, el, fillTime, reconcileChildren } from './inbox-dom.js';

// Characters a genuine address never carries unescaped: such a URL gets no thumbnail.
const SUSPICIOUS_URL = /[\s"'<>\\^`{|}]/;

// Messages in seq order, each followed by the notes written after it (after_seq), oldest
// first; notes with after_seq 0 come before every message.
function transcriptItems(open) {
  const notesAfter = new Map();
  for (const note of open.notes) {
    const seq = Number(note.after_seq) || 0;
    if (!notesAfter.has(seq)) notesAfter.set(seq, []);
    notesAfter.get(seq).push(note);
  }
  const items = [];
  const takeNotes = (seq) => {
    for (const note of notesAfter.get(seq) || []) items.push([`n:${note.noteId}`, () => noteNode(note)]);
    notesAfter.delete(seq);
  };
  takeNotes(0);
  for (const message of Array.from(open.messages.values()).sort((a, b) => a.seq - b.seq)) {
    items.push([`m:${message.seq}`, () => messageNode(message, open)]);
    takeNotes(message.seq);
  }
  // A note whose message has not arrived yet waits at the end until it does.
  for (const seq of Array.from(notesAfter.keys()).sort((a, b) => a - b)) takeNotes(seq);
  return items;
}

// Scrolls to the end on opening, after our own send, and when the agent was near it already.
export function renderTranscript(open) {
  const box = $('transcript');
  const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const nodes = transcriptItems(open).map(([key, build]) => {
    if (!open.nodes.has(key)) open.nodes.set(key, build());
    return open.nodes.get(key);
  });
  reconcileChildren(box, nodes);
  if (!nodes.length) box.append(el('p', 'transcript-empty', 'No messages yet.'));
  if (open.scrollToEnd || nearEnd) box.scrollTop = box.scrollHeight;
  open.scrollToEnd = false;
}

function transcriptEntry(className, labels, createdAt, text) {
  const item = el('div', `msg ${className}`);
  const meta = el('div', 'meta');
  const time = el('time', 'time');
  fillTime(time, createdAt, false);
  meta.append(...labels, time);
  item.append(meta, el('p', 'body', text || ''));
  return item;
}

function messageNode(message, open) {
  const fromAgent = message.sender === 'agent';
  const customer = (open.chat && open.chat.customer) || { email: open.customerEmail };
  const author = fromAgent ? el('span', 'author', agentLabel(message.agent)) : customerAuthor(customer);
  const item = transcriptEntry(fromAgent ? 'msg-agent' : 'msg-user', [author], message.created_at, message.message);
  item.dataset.seq = String(message.seq);
  if (message.image_url) item.append(imageNode(message.image_url));
  return item;
}

// "Name (email)", each part isolated, so bidi controls in a name cannot reorder the email.
function customerAuthor(customer) {
  const author = el('span', 'author');
  if (!customer || !customer.email || !customer.name) {
    const part = el('span', 'author-part');
    fillAddress(part, customerLabel(customer));
    author.append(part);
    return author;
  }
  const address = el('span', 'author-part');
  fillAddress(address, customer.email);
  author.append(el('span', 'author-part', customer.name), ' (', address, ')');
  return author;
}

function noteNode(note) {
  const labels = [el('span', 'note-label', 'Note'), el('span', 'author', agentLabel(note.agent))];
  const item = transcriptEntry('msg-note', labels, note.created_at, note.message);
  item.dataset.noteId = note.noteId;
  return item;
}

// Thumbnails load only from a named host: never an IP literal (dotted IPv4, which is how
// the URL parser writes every IPv4 form, or [IPv6]), so no one probes internal addresses.
function isNamedHost(hostname) {
  return Boolean(hostname) && !hostname.startsWith('[') && !/^[0-9.]+$/.test(hostname);
}

// Bidi controls (ALM, LRM, RLM, LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI) make a
// string display as something else than it is: in an address they are written out visibly.
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function showBidiControls(text) {
  return text.replace(BIDI_CONTROLS, (char) => `[U+${char.charCodeAt(0).toString(16).toUpperCase()}]`);
}

// Left to right, and isolated: nothing inside can reorder the text around it.
function isolatedLtr(node) {
  node.dir = 'ltr';
  node.classList.add('ltr-isolate');
  return node;
}

// An http(s) URL becomes a link (and, when safe, a thumbnail); anything else is text.
function imageNode(raw) {
  const box = el('div', 'attachment');
  let url = null;
  try { url = new URL(raw); } catch (err) { url = null; }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    box.append(isolatedLtr(el('span', 'image-url', showBidiControls(raw))));
    return box;
  }
  // The parsed address, not the raw string: it percent-encodes bidi controls and spaces, and
  // writes the host as the browser will reach it, so the text says where the link goes.
  const link = isolatedLtr(el('a', 'image-link', url.href));
  link.href = url.href;
  link.target = '_blank';
  link.rel = 'noopener noreferrer';
  box.append(link);
  if (url.protocol === 'https:' && isNamedHost(url.hostname) && !SUSPICIOUS_URL.test(raw)) {
    box.append(thumbnailButton(url));
  }
  return box;
}

// Fetching a customer's image tells its host the agent's address and when the chat was read
// (a tracking pixel), so the thumbnail loads only when the agent asks for it, without a referrer.
function thumbnailButton(url) {
  const button = el('button', 'button thumb-load');
  button.type = 'button';
  button.append('Image from ', isolatedLtr(el('span', 'thumb-host', url.hostname)), ' \u2014 click to load');
  button.addEventListener('click', () => {
    const img = el('img', 'thumb');
    img.alt = `Image sent by the customer, from ${url.hostname}`;
    img.referrerPolicy = 'no-referrer';  // (before src: the request is made with it)
    img.tabIndex = -1;  // focus moves here from the button it replaces
    img.src = url.href;
    button.replaceWith(img);
    img.focus();
  }, { once: true });
  return button;
}
