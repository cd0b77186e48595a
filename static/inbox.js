'use strict';

// SupportZen agent inbox: one page, no framework, no build step. It talks only to
// /api/agent on this origin, follows /events with long-polls, and builds every node with
// createElement + textContent, so no customer or agent text can ever become markup.

// ---------------------------------------------------------------- settings and state

const API_ROOT = '/api/agent';
const TOKEN_KEY = 'supportzen.agentToken';
const SOUND_KEY = 'supportzen.sound';
const BASE_TITLE = 'Inbox · SupportZen';
const UNAUTHORIZED_TEXT = 'That token was not accepted: it is invalid or has been revoked.';
const OFFLINE_TEXT = 'Offline: cannot reach the server.';
const PAGE_SIZE = 50;
const FEED_WAIT = 25;                    // seconds the server may hold a feed long-poll
const BACKOFF = [1, 2, 4, 8, 15, 30];    // seconds between feed retries after failures
const REFRESH_INTERVAL_MS = 1000;        // counts + list refresh at most this often under traffic
const FEED_PACE_MS = 300;                // pause after a batch of events while the feed is busy...
const FEED_BUSY = { events: 3, withinMs: 1000 };  // ...that is, this many events of others this fast
const CALL_TIMEOUT_MS = 30000;
const MAX_REPLY = 10000;                 // the API's limit on a message
const TABS = { mine: 'me', unassigned: 'none', all: 'any' };  // tab -> assignee filter
// Characters a genuine address never carries unescaped: such a URL gets no thumbnail.
const SUSPICIOUS_URL = /[\s"'<>\\^`{|}]/;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  session: 0,          // bumped on sign-in and sign-out, so late answers are dropped
  revealed: false,     // the app shows once the token has worked (or the server is down)
  focusOnReveal: false,
  me: null,
  agents: null,
  replies: null,
  repliesAt: 0,
  filter: { tab: 'all', status: 'open', sort: 'recent' },
  list: newList(),
  feed: newFeed(),
  open: null,          // the chat on screen: see openChat()
  drafts: new Map(),   // chatId -> draft, so a half-typed reply survives switching chats
  customerStale: false,
  suggest: { items: [], active: -1 },
  refreshTimer: 0,
  refreshedAt: 0,      // when the last counts + list refresh began (see scheduleRefresh)
};

function newList() {
  return { gen: 0, chats: new Map(), rows: new Map(), nextBefore: null, target: PAGE_SIZE };
}

function newFeed() {
  return { cursor: null, controller: null, failures: 0, offline: false, notice: false, expired: false, wake: null,
    busyTimes: [] };
}

// ---------------------------------------------------------------- DOM helpers

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// Writing only on change keeps screen readers and text selections quiet during refreshes.
function setText(node, text) {
  const value = text === undefined || text === null ? '' : String(text);
  if (node.textContent !== value) node.textContent = value;
}

function show(node, visible) {
  node.hidden = !visible;
}

function showMessage(node, text) {
  setText(node, text || '');
  show(node, Boolean(text));
}

// Puts `nodes` into `parent` in this order, moving only what is out of place, so unchanged
// rows keep their identity (focus, hover, selection) across refreshes.
function reconcileChildren(parent, nodes) {
  const keep = new Set(nodes);
  for (const child of Array.from(parent.children)) if (!keep.has(child)) child.remove();
  nodes.forEach((node, index) => {
    const current = parent.children[index];
    if (current !== node) parent.insertBefore(node, current || null);
  });
}

// ---------------------------------------------------------------- formatting

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const yearDayFormat = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

function formatDay(ms) {
  const thisYear = new Date(ms).getFullYear() === new Date().getFullYear();
  return (thisYear ? dayFormat : yearDayFormat).format(ms);
}

function relativeTime(iso) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return '';
  const seconds = Math.max(0, (Date.now() - then) / 1000);
  if (seconds < 60) return 'just now';
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return formatDay(then);
}

// Transcript stamps: the clock for today, the day and the clock before that.
function messageStamp(ms) {
  const today = new Date().toDateString() === new Date(ms).toDateString();
  return today ? clockFormat.format(ms) : `${formatDay(ms)}, ${clockFormat.format(ms)}`;
}

// Fills a <time>; relative ones are kept fresh by tickRelativeTimes().
function fillTime(node, iso, relative) {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) { setText(node, ''); return; }
  if (node.dateTime !== iso) node.dateTime = iso;
  node.title = fullFormat.format(ms);
  if (relative) node.dataset.relative = '1';
  setText(node, relative ? relativeTime(iso) : messageStamp(ms));
}

function tickRelativeTimes() {
  for (const node of document.querySelectorAll('time[data-relative]')) setText(node, relativeTime(node.dateTime));
}

function agentLabel(agent) {
  return agent ? agent.display_name || agent.name : 'Agent';
}

function customerLabel(customer) {
  if (!customer || !customer.email) return 'Customer';
  return customer.name ? `${customer.name} (${customer.email})` : customer.email;
}

function planLabel(planName, planId) {
  if (planName) return planName;
  return planId === null || planId === undefined ? '' : `Plan ${planId}`;
}

// The plan comes with the chat from the customer's own app: nothing checks it.
function planClaim(plan) {
  return plan ? `${plan} (as the client app reports it: not verified)` : '';
}

// ---------------------------------------------------------------- look-alike addresses

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
function addressWarning(address) {
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

const shownAddresses = new WeakMap();  // node -> the address it shows

// Fills `node` with the address as text, each character beyond ASCII in its own marked span
// (an invisible one written as its code point).
function fillAddress(node, address) {
  const value = address || '';
  if (shownAddresses.get(node) === value) return;
  shownAddresses.set(node, value);
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

function addressWarningNode() {
  const node = el('span', 'address-warning');
  node.setAttribute('role', 'note');
  node.hidden = true;
  return node;
}

// Shows (or hides) the warning for `address` in a node made by addressWarningNode().
function fillAddressWarning(node, address) {
  const warning = addressWarning(address);
  setText(node, warning ? warning.label : '');
  if (node.title !== (warning ? warning.detail : '')) node.title = warning ? warning.detail : '';
  if (warning) node.setAttribute('aria-label', warning.detail);
  else node.removeAttribute('aria-label');
  show(node, Boolean(warning));
  return warning;
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(code, status, message, extra = {}) {
    super(message || code);
    this.code = code;
    this.status = status;
    this.fields = extra.fields || null;
    this.retryAfter = extra.retryAfter || 0;
    this.network = code === 'network' || code === 'timeout' || [502, 503, 504].includes(status);
    // Already dealt with elsewhere: sign-out, a cancelled call, an answer for an old session.
    this.quiet = code === 'stale' || code === 'aborted' || status === 401;
  }
}

// Every call goes through here: it adds the token, unwraps the envelope, turns a 401 into
// sign-out and a network failure (or 502/503/504) into the offline notice.
async function api(path, options = {}) {
  const session = state.session;
  const headers = { Accept: 'application/json', Authorization: `Bearer ${state.token}` };
  const controller = new AbortController();
  const outer = options.signal;
  if (outer) outer.addEventListener('abort', () => controller.abort(), { once: true });
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; controller.abort(); }, options.timeoutMs || CALL_TIMEOUT_MS);
  const init = { method: options.method || 'GET', headers, cache: 'no-store', signal: controller.signal };
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify({ data: options.body });
  }
  if (options.key) headers['Idempotency-Key'] = options.key;

  let response;
  let payload = null;
  try {
    response = await fetch(API_ROOT + path, init);
    payload = await response.json().catch(() => null);
  } catch (err) {
    if (session !== state.session) throw new ApiError('stale', 0, 'Signed out.');
    if (outer && outer.aborted && !timedOut) throw new ApiError('aborted', 0, 'Cancelled.');
    if (!options.feed) noteNetworkTrouble();
    throw new ApiError(timedOut ? 'timeout' : 'network', 0, 'Cannot reach the server.');
  } finally {
    clearTimeout(timer);
  }
  if (session !== state.session) throw new ApiError('stale', 0, 'Signed out.');
  if (response.ok && payload && payload.status === 'success') {
    if (state.feed.offline && !options.feed) wakeFeed();
    return payload.data || {};
  }
  const error = (payload && payload.error) || {};
  const retryAfter = Number(response.headers.get('Retry-After')) || 0;
  const failure = new ApiError(error.code || `http_${response.status}`, response.status,
    (payload && payload.message) || `The server answered ${response.status}.`,
    { fields: error.fields, retryAfter: Math.min(Math.max(retryAfter, 0), 300) });
  if (response.status === 401) signOut(UNAUTHORIZED_TEXT);
  else if (failure.network && !options.feed) noteNetworkTrouble();
  throw failure;
}

// Background work reports here; the offline notice and sign-out speak for themselves.
function report(err, target) {
  if (err instanceof ApiError && (err.quiet || err.network)) return;
  if (target) showMessage(target, err instanceof ApiError ? err.message : 'Something went wrong: reload the page.');
}

// Runs `task` one at a time; calls made meanwhile collapse into one more run afterwards.
function serial(task, targetId) {
  let busy = false;
  let again = false;
  return async function run() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        try { await task(); } catch (err) { report(err, targetId && $(targetId)); }
      } while (again);
    } finally {
      busy = false;
    }
  };
}

// ---------------------------------------------------------------- sign-in and sign-out

// A link like /inbox#token=... signs in once; the token then leaves the address bar.
function takeTokenFromAddress() {
  if (!location.hash.startsWith('#token=')) return null;
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  history.replaceState(history.state, '', location.pathname + location.search);
  return token ? token.trim() : null;
}

function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (err) { /* storage refused: the token lives in memory only */ }
}

function storedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch (err) { return null; }
}

function showSignin(message) {
  state.revealed = false;
  setText($('signin-submit'), 'Sign in');
  show($('app'), false);
  show($('connection'), false);
  show($('signin'), true);
  showMessage($('signin-error'), message);
  $('token-input').focus();
}

function onSigninSubmit(event) {
  event.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) {
    showMessage($('signin-error'), 'Paste your agent token first.');
    return;
  }
  $('token-input').value = '';
  startSession(token, true);
}

// The app stays hidden until the token has worked once, so a bad token never flashes an
// empty inbox; the server being unreachable reveals it too, with the offline notice.
function startSession(token, fromForm) {
  // A header can only carry printable ASCII: anything else is no token of ours, and fetch
  // would throw on it as if the server were unreachable.
  if (state.feed.controller) state.feed.controller.abort();  // the previous session's poll
  if (!/^[\x21-\x7e]{1,256}$/.test(token)) {
    state.token = null;
    state.session += 1;
    storeToken(null);
    showSignin(UNAUTHORIZED_TEXT);
    return;
  }
  state.token = token;
  state.session += 1;
  storeToken(token);
  resetInbox();
  state.focusOnReveal = fromForm;
  if (fromForm) setText($('signin-submit'), 'Signing in…');
  else show($('signin'), false);
  runFeed(state.session);
}

function revealApp() {
  if (state.revealed || !state.token) return;
  state.revealed = true;
  show($('signin'), false);
  show($('app'), true);
  if (state.focusOnReveal) document.querySelector('[role="tab"][aria-selected="true"]').focus();
}

// Forgets the token and everything shown with it; `message` says why, when there is a why.
function signOut(message) {
  if (!state.token) return;
  state.token = null;
  state.session += 1;
  storeToken(null);
  if (state.feed.controller) state.feed.controller.abort();
  wakeFeed();
  resetInbox();
  showSignin(message);
}

function resetInbox() {
  clearTimeout(state.refreshTimer);
  Object.assign(state, { me: null, agents: null, replies: null, list: newList(), feed: newFeed(),
    refreshTimer: 0, refreshedAt: 0 });
  state.drafts.clear();
  $('chat-list').replaceChildren();
  show($('list-empty'), false);
  show($('load-more'), false);
  show($('connection'), false);
  setText($('me'), '');
  closeChatView(false);
  renderCounts(null);
}

// ---------------------------------------------------------------- live feed and offline

// Follows /events while this session lasts: the cursor first, then the lists, then
// long-polls; failures back off and show the offline notice; 410 starts over.
async function runFeed(session) {
  const feed = state.feed;
  while (session === state.session) {
    feed.controller = new AbortController();
    const signal = feed.controller.signal;
    try {
      if (feed.cursor === null) {
        const start = await api('/events', { signal, feed: true });
        feed.cursor = Number(start.next_after) || 0;
        markOnline();
        await reloadEverything();
        revealApp();
        continue;
      }
      // After a failure, ask without waiting, so a recovery shows at once.
      const recovering = feed.offline || feed.failures > 0;
      const wait = recovering ? 0 : FEED_WAIT;
      const page = await api(`/events?after=${feed.cursor}&limit=100&wait=${wait}`,
        { signal, feed: true, timeoutMs: (wait + 20) * 1000 });
      markOnline();
      if (Number.isInteger(page.next_after)) feed.cursor = page.next_after;
      const events = page.events || [];
      if (events.length) handleEvents(events);
      if (recovering) reloadEverything();
      if (!events.length && page.retry_after) await sleep(page.retry_after * 1000);
      else if (events.length && !page.has_more && feedIsBusy(feed, events)) await sleep(FEED_PACE_MS);
    } catch (err) {
      if (session !== state.session || err.code === 'stale' || err.status === 401) return;
      if (err.code === 'cursor_expired' || err.status === 410) {
        feed.cursor = null;
        feed.expired = true;
      } else {
        await backOff(err, session);
      }
    }
  }
}

// A busy inbox would otherwise poll once per event. While others' events keep coming, a
// short pause after each batch lets the next ones gather into one; a quiet feed (or one
// echoing only this agent's own actions) is left waiting at once, so the first event after
// a lull shows without delay.
function feedIsBusy(feed, events) {
  const now = Date.now();
  for (const event of events) if (!causedByMe(event)) feed.busyTimes.push(now);
  while (feed.busyTimes.length && now - feed.busyTimes[0] >= FEED_BUSY.withinMs) feed.busyTimes.shift();
  feed.busyTimes.splice(0, Math.max(0, feed.busyTimes.length - FEED_BUSY.events));
  return feed.busyTimes.length >= FEED_BUSY.events;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Waits 1, 2, 4 ... 30 s (or the server's Retry-After), counting down in #connection;
// wakeFeed() cuts the wait short when another call shows the server is back.
function backOff(err, session) {
  const feed = state.feed;
  const offline = err instanceof ApiError && (err.network || err.code === 'aborted');
  // (Only while unreachable may another call's success cut the wait short: a feed that
  // answers 500 must not be asked again each time some other call works.)
  feed.offline = offline;
  let left = err.status === 429 && err.retryAfter ? err.retryAfter : BACKOFF[Math.min(feed.failures, BACKOFF.length - 1)];
  feed.failures += 1;
  const reason = offline ? OFFLINE_TEXT : `Live updates paused: the server answered ${err.status || 'oddly'}.`;
  return new Promise((resolve) => {
    const render = () => renderConnection(reason, left > 0 ? `Retrying in ${left} s…` : 'Retrying now…');
    const finish = () => {
      clearInterval(timer);
      if (feed.wake === finish) feed.wake = null;
      resolve();
    };
    const timer = setInterval(() => {
      left -= 1;
      if (session === state.session) render();
      if (left <= 0 || session !== state.session) finish();
    }, 1000);
    feed.wake = finish;
    render();
  });
}

// The main sentence is announced once (role="status"); the ticking countdown is hidden
// from screen readers so they are not interrupted every second.
function renderConnection(reason, retry) {
  const box = $('connection');
  if (!box.firstChild) {
    const tick = el('span', 'connection-retry');
    tick.setAttribute('aria-hidden', 'true');
    box.append(el('span', 'connection-text'), ' ', tick);
  }
  setText(box.querySelector('.connection-text'), reason);
  setText(box.querySelector('.connection-retry'), retry);
  box.classList.toggle('is-offline', reason === OFFLINE_TEXT);
  state.feed.notice = true;
  show(box, true);
  revealApp();
}

// A call could not reach the server: say so, and let the feed's backoff find when it's back.
function noteNetworkTrouble() {
  const feed = state.feed;
  if (!state.token) return;
  if (!feed.offline) {
    feed.offline = true;
    renderConnection(OFFLINE_TEXT, 'Retrying…');
  }
  if (feed.controller) feed.controller.abort();
}

function markOnline() {
  const feed = state.feed;
  feed.failures = 0;
  feed.offline = false;
  if (feed.notice) {
    feed.notice = false;
    show($('connection'), false);
  }
}

function wakeFeed() {
  if (state.feed.wake) state.feed.wake();
}

// Each event becomes the least work that shows it: one throttled refresh of the counts and
// list for the whole batch, and for the open chat only the part the event says changed,
// fetched after the chat's own cursors (the event says *that* it changed; the fetch makes
// sure nothing in between is missed).
function handleEvents(events) {
  const open = state.open;
  let listChanged = false;
  let customerMessages = 0;
  for (const event of events) {
    const data = event.data || {};
    const chat = data.chat || {};
    const changes = changesList(event);
    listChanged = listChanged || changes;
    if (open && chat.chatId === open.id) noteOpenChatEvent(open, event);
    else if (open && changes && chat.customer && chat.customer.email === open.customerEmail) state.customerStale = true;
    if (event.type === 'message.created' && data.message && data.message.sender === 'user') {
      if (customerMessages < 3) notifyDesktop(chat, data.message);
      customerMessages += 1;
    }
  }
  if (customerMessages && document.hidden) beep();
  if (listChanged) scheduleRefresh();
  if (open && open === state.open && hasNeeds(open)) syncOpenChat();
}

// Notes and the customer's read mark change no count and no row (neither touches the
// chat's activity time); an agent's read mark changes the unread badges, the rest the rows.
function changesList(event) {
  if (event.type === 'note.created') return false;
  if (event.type === 'chat.read') return !(event.data && event.data.by && event.data.by.type === 'customer');
  return true;
}

function byMe(data) {
  const by = data.by || {};
  return by.type === 'agent' && Boolean(state.me) && by.name === state.me.name;
}

// The signed-in agent's own reply, note, read mark or action, coming back as an event.
function causedByMe(event) {
  const data = event.data || {};
  const agent = (data.message && data.message.agent) || (data.note && data.note.agent) || null;
  if (agent) return Boolean(state.me) && agent.name === state.me.name;
  return byMe(data);
}

// What an event on the open chat asks it to fetch; nothing when the page already has it
// (its own sends, notes, read marks and actions come back as events too).
function noteOpenChatEvent(open, event) {
  const data = event.data || {};
  const chat = open.chat || {};
  switch (event.type) {
    case 'message.created':
      if (data.message) wantMessagesUpTo(open, Number(data.message.seq) || Infinity);
      break;
    case 'note.created':
      if (!data.note || !open.notes.some((note) => note.noteId === data.note.noteId)) open.need.notes = true;
      break;
    case 'chat.read':
      // Nothing on screen shows read marks; an agent's (ours or another's) only means a
      // /read up to there would move nothing.
      if (data.by && data.by.type === 'agent') open.readSeq = Math.max(open.readSeq, Number(data.read_seq) || 0);
      break;
    case 'chat.closed':
    case 'chat.reopened':
    case 'chat.assigned': {
      // A detail fetch on its way may have been answered before this change: fetch again.
      if (open.detailBusy) {
        open.need.detail = true;
        break;
      }
      // Our own action answers with the new state itself (and may still be on its way).
      if (byMe(data) && open.busy) break;
      const assignee = data.assignee ? data.assignee.name : null;
      const current = chat.assignee ? chat.assignee.name : null;
      const same = event.type === 'chat.assigned' ? assignee === current : (data.chat || {}).status === chat.status;
      if (!same) open.need.detail = true;
      break;
    }
    default:
      wantEverything(open);
  }
}

// The first start, a 410 and a recovery come here: counts, list and the open chat, all of it.
function reloadEverything() {
  state.customerStale = true;
  const jobs = [loadBasics(), refreshNow()];
  if (state.open) {
    // (No reset on a 410: messages are kept by seq and notes by id, so fetching after the
    // cursors the chat has is complete, and the agent keeps their place in it.)
    wantEverything(state.open);
    jobs.push(syncOpenChat());
  }
  state.feed.expired = false;
  return Promise.allSettled(jobs);
}

// Who is signed in, the agents to assign to, the saved replies: each loaded until it works.
async function loadBasics() {
  const jobs = [];
  if (!state.me) {
    jobs.push(api('/me').then((me) => {
      state.me = me;
      setText($('me'), `Signed in as ${agentLabel(me)}`);
    }));
  }
  if (!state.agents) jobs.push(api('/agents').then((data) => { state.agents = data.agents || []; }));
  if (!state.replies) jobs.push(loadReplies());
  for (const result of await Promise.allSettled(jobs)) if (result.status === 'rejected') report(result.reason);
  if (state.open) renderChatHeader(state.open);
}

// The saved replies come in pages bounded in bytes: follow next_after until has_more is false.
async function loadReplies() {
  const replies = [];
  let after = null;
  for (;;) {
    const data = await api(after === null ? '/replies' : `/replies?after=${enc(after)}`);
    const page = data.replies || [];
    replies.push(...page);
    if (!data.has_more || !page.length) break;
    after = data.next_after;
  }
  state.replies = replies.sort((a, b) => a.shortcut.localeCompare(b.shortcut));
  state.repliesAt = Date.now();
}

// ---------------------------------------------------------------- counts and tabs

async function refreshCounts() {
  renderCounts(await api('/chats/counts'));
}

function renderCounts(counts) {
  const unread = (counts && counts.unread) || {};
  for (const tab of Object.keys(TABS)) {
    const button = $(`tab-${tab}`);
    const count = (counts && Number(counts[tab])) || 0;
    const unreadCount = Number(unread[tab]) || 0;
    setText(button.querySelector('.count'), count);
    setText(button.querySelector('.unread'), unreadCount);
    show(button.querySelector('.unread'), unreadCount > 0);
    const label = button.querySelector('.tab-label').textContent;
    button.setAttribute('aria-label', `${label}: ${count} open, ${unreadCount} unread`);
  }
  const total = Number(unread.all) || 0;
  document.title = total > 0 ? `(${total}) ${BASE_TITLE}` : BASE_TITLE;
}

function selectTab(tab) {
  if (state.filter.tab === tab) return;
  state.filter.tab = tab;
  for (const name of Object.keys(TABS)) $(`tab-${name}`).setAttribute('aria-selected', String(name === tab));
  $('list-panel').setAttribute('aria-labelledby', `tab-${tab}`);
  restartList();
}

// Arrow keys, Home and End move between tabs, as in any tablist.
function onTabKeydown(event) {
  const names = Object.keys(TABS);
  const tab = event.target.closest('[role="tab"]');
  const index = tab ? names.indexOf(tab.dataset.tab) : -1;
  const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: names.length - 1 };
  if (index < 0 || !(event.key in moves)) return;
  event.preventDefault();
  const next = names[(moves[event.key] + names.length) % names.length];
  $(`tab-${next}`).focus();
  selectTab(next);
}

// ---------------------------------------------------------------- the chat list

// A leading-edge throttle: the first change after a quiet second refreshes at once, so new
// chats and messages show within a second; changes after that wait until a second has passed
// since the last refresh began, and all of them become that one refresh.
function scheduleRefresh() {
  if (state.refreshTimer) return;  // a refresh is due already: it will show this change too
  const wait = Math.max(0, state.refreshedAt + REFRESH_INTERVAL_MS - Date.now());
  state.refreshTimer = setTimeout(refreshNow, wait);
}

const refreshNow = serial(async () => {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = 0;
  state.refreshedAt = Date.now();
  const jobs = [refreshCounts(), refreshList()];
  if (state.customerStale && state.open) {
    state.customerStale = false;
    jobs.push(loadCustomer(state.open).catch((err) => report(err)));
  }
  for (const result of await Promise.allSettled(jobs)) {
    if (result.status === 'rejected') report(result.reason, $('list-error'));
  }
});

function listQuery(limit, before) {
  const { tab, status, sort } = state.filter;
  const params = new URLSearchParams({ status, assignee: TABS[tab], sort, limit: String(Math.max(1, Math.min(100, limit))) });
  if (before) params.set('before', before);
  return `/chats?${params}`;
}

// Reloads as many rows as are on screen, so pages added by "Load more" survive a refresh.
async function refreshList() {
  const list = state.list;
  const { gen, target } = list;
  const chats = [];
  let before = null;
  let page;
  do {
    page = await api(listQuery(target - chats.length, before));
    if (gen !== list.gen || list !== state.list) {
      // Overtaken ("Load more", another tab): what this refresh was for is fetched again.
      if (list === state.list) scheduleRefresh();
      return;
    }
    chats.push(...(page.chats || []));
    before = page.next_before || null;
  } while (page.has_more && before && chats.length < target);
  renderList(chats, page.has_more ? before : null);
  showMessage($('list-error'), '');
}

async function loadMore() {
  const list = state.list;
  const button = $('load-more');
  if (!list.nextBefore || button.getAttribute('aria-busy') === 'true') return;
  const gen = list.gen;
  button.setAttribute('aria-busy', 'true');  // not `disabled`: that would drop keyboard focus
  try {
    const page = await api(listQuery(PAGE_SIZE, list.nextBefore));
    if (gen !== list.gen || list !== state.list) return;
    list.gen += 1;  // a refresh started before this must not shrink the list again
    const chats = Array.from(list.chats.values()).concat(page.chats || []);
    list.target = chats.length;
    renderList(chats, page.has_more ? page.next_before : null);
    const first = page.chats && page.chats[0];
    if (button.hidden && first && list.rows.has(first.chatId)) list.rows.get(first.chatId).querySelector('button').focus();
  } catch (err) {
    report(err, $('list-error'));
  } finally {
    button.removeAttribute('aria-busy');
  }
}

// Another tab or filter: other rows, from the top.
function restartList() {
  state.list.gen += 1;
  state.list.target = PAGE_SIZE;
  state.list.nextBefore = null;  // the old filter's cursor means nothing to the new one
  show($('load-more'), false);
  $('chat-list').scrollTop = 0;
  $('chat-list').setAttribute('aria-busy', 'true');
  refreshNow();
}

// Updates the list in place, keyed by chatId: rows are reused and moved only when out of
// order; the scroll position and the focused row are put back afterwards.
function renderList(chats, nextBefore) {
  const list = state.list;
  const ul = $('chat-list');
  const scrollTop = ul.scrollTop;
  const focused = document.activeElement && document.activeElement.closest('.chat-row');
  const byId = new Map();
  for (const chat of chats) if (chat && chat.chatId && !byId.has(chat.chatId)) byId.set(chat.chatId, chat);
  const rows = Array.from(byId.values(), (chat) => {
    const row = list.rows.get(chat.chatId) || buildRow(chat.chatId);
    list.rows.set(chat.chatId, row);
    updateRow(row, chat);
    return row;
  });
  for (const chatId of Array.from(list.rows.keys())) if (!byId.has(chatId)) list.rows.delete(chatId);
  list.chats = byId;
  list.nextBefore = nextBefore || null;

  reconcileChildren(ul, rows);
  ul.scrollTop = scrollTop;
  if (focused && document.activeElement === document.body) {
    const again = list.rows.get(focused.dataset.chatId);
    (again ? again.querySelector('button') : ul).focus({ preventScroll: true });
  }
  ul.removeAttribute('aria-busy');
  show($('list-empty'), rows.length === 0);
  show($('load-more'), Boolean(list.nextBefore));
  markSelectedRow();
}

function buildRow(chatId) {
  const row = el('li', 'chat-row');
  row.dataset.chatId = chatId;
  const button = el('button', 'row-button');
  button.type = 'button';
  const line = (className, ...children) => {
    const span = el('span', `row-line ${className}`);
    span.append(...children.map((name) => el(name === 'time' ? 'time' : 'span', name)));
    return span;
  };
  button.append(line('row-top', 'email', 'time'), addressWarningNode(), line('row-who', 'name', 'plan'),
    el('span', 'preview'), line('row-bottom', 'assignee', 'badge'));
  row.append(button);
  return row;
}

function updateRow(row, chat) {
  const customer = chat.customer || {};
  const last = chat.last_message || {};
  const unread = Number(chat.unread) || 0;
  const part = (name) => row.querySelector(`.${name}`);
  fillAddress(part('email'), customer.email);
  fillAddressWarning(part('address-warning'), customer.email);
  setText(part('name'), customer.name);
  const plan = planLabel(chat.name, chat.plan_id);
  setText(part('plan'), plan);
  part('plan').title = planClaim(plan);
  setText(part('preview'), last.preview);
  fillTime(part('time'), last.created_at || chat.updated_at, true);
  setText(part('badge'), unread);
  part('badge').title = `${unread} unread`;
  show(part('badge'), unread > 0);
  setText(part('assignee'), chat.assignee ? agentLabel(chat.assignee) : 'Unassigned');
  row.classList.toggle('is-closed', chat.status === 'closed');
  row.classList.toggle('is-unread', unread > 0);
}

function markSelectedRow() {
  const openId = state.open ? state.open.id : null;
  for (const [chatId, row] of state.list.rows) {
    row.classList.toggle('is-selected', chatId === openId);
    const button = row.querySelector('button');
    if (chatId === openId) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
  }
}

// ---------------------------------------------------------------- the open chat

function openChat(chatId) {
  if (!chatId || (state.open && state.open.id === chatId)) return;
  delete $('assign-other').dataset.picking;  // a choice made for the previous chat
  const others = state.open ? state.open.otherChats : [];
  const summary = state.list.chats.get(chatId) || others.find((chat) => chat.chatId === chatId) || null;
  state.open = {
    id: chatId,
    chat: summary,
    customerEmail: summary && summary.customer ? summary.customer.email : null,
    customer: null,
    customerLoaded: false,
    otherChats: [],
    lastSeq: 0,
    lastCustomerSeq: 0,    // the newest customer message: only those make a chat unread
    readSeq: 0,
    notesAfter: 0,
    need: noNeeds(),       // what the next syncOpenChat() fetches: see wantEverything()
    detailBusy: false,     // a GET of the chat's detail is on its way
    messages: new Map(),   // seq -> message
    notes: [],             // oldest first, as the API sends them
    nodes: new Map(),      // transcript key -> element, so re-rendering moves nothing
    loaded: false,
    scrollToEnd: true,
    busy: false,
  };
  $('transcript').replaceChildren();
  // The history that loads now is not news: screen readers announce only what comes after.
  $('transcript').setAttribute('aria-live', 'off');
  showMessage($('chat-error'), '');
  show($('no-chat'), false);
  show($('chat'), true);
  // On a phone the list is hidden (display: none), which forgets its scroll position.
  if (!document.body.classList.contains('viewing-chat')) state.listScroll = $('chat-list').scrollTop;
  document.body.classList.add('viewing-chat');
  const hadFocus = document.activeElement;
  renderChatHeader(state.open);
  renderCustomer(state.open);
  renderDraft();
  hideSuggestions();
  markSelectedRow();
  // On a phone the chat replaces the list; from the customer panel, the button that had
  // focus has just been replaced: either way focus goes to the chat's title.
  if (window.matchMedia('(max-width: 700px)').matches || !document.contains(hadFocus)) {
    $('chat-title').focus();
  }
  wantEverything(state.open);
  syncOpenChat();
  if (state.open.customerEmail) refreshCustomer(state.open);
}

// The phone layout's "Back" (and sign-out). The chat's draft stays in state.drafts.
function closeChatView(restoreFocus = true) {
  const closedId = state.open ? state.open.id : null;
  state.open = null;
  document.body.classList.remove('viewing-chat');
  show($('chat'), false);
  show($('no-chat'), true);
  $('transcript').replaceChildren();
  renderCustomer(null);
  hideSuggestions();
  markSelectedRow();
  if (state.listScroll !== undefined) $('chat-list').scrollTop = state.listScroll;
  if (restoreFocus) {
    const row = closedId && state.list.rows.get(closedId);
    (row ? row.querySelector('button') : $('chat-list')).focus({ preventScroll: true });
  }
}

function resetTranscript(open) {
  Object.assign(open, { lastSeq: 0, lastCustomerSeq: 0, notesAfter: 0, notes: [], scrollToEnd: true });
  open.messages.clear();
  open.nodes.clear();
  $('transcript').replaceChildren();
}

// The open chat's wants: its detail (header), its messages up to a seq an event or a send
// named, its notes. Opening and catching up want everything; an event only its own part.
function noNeeds() {
  return { detail: false, messagesUpTo: 0, notes: false };
}

function wantEverything(open) {
  Object.assign(open.need, { detail: true, messagesUpTo: Infinity, notes: true });
}

function wantMessagesUpTo(open, seq) {
  open.need.messagesUpTo = Math.max(open.need.messagesUpTo, seq);
}

function hasNeeds(open) {
  const need = open.need;
  return need.detail || need.notes || need.messagesUpTo > open.lastSeq;
}

// A fetch that failed is wanted again, on the next sync.
function restoreNeeds(open, need) {
  if (need.detail) open.need.detail = true;
  if (need.notes) open.need.notes = true;
  wantMessagesUpTo(open, need.messagesUpTo);
}

// Fetches what the open chat wants, after its own cursors, so nothing is missed even when
// events were (an outage catches up through wantEverything()).
const syncOpenChat = serial(async () => {
  const open = state.open;
  if (!open) return;
  if (!hasNeeds(open)) {
    if (open.loaded && open.scrollToEnd) renderTranscript(open);  // (our own send, fetched already)
    return;
  }
  const need = open.need;
  open.need = noNeeds();
  if (need.detail) {
    open.detailBusy = true;
    try {
      applyChatDetail(open, await api(`/chats/${enc(open.id)}`));
    } catch (err) {
      if (err.code !== 'chat_not_found') {
        restoreNeeds(open, need);
        throw err;
      }
      if (open === state.open) showMessage($('chat-error'), 'This chat was not found.');
      return;
    } finally {
      open.detailBusy = false;
    }
  }
  if (open !== state.open) return;
  // Show whatever arrived even if one of the two fetches failed; report the failure after.
  const results = await Promise.allSettled([
    need.messagesUpTo > open.lastSeq ? fetchNewMessages(open) : null,
    need.notes ? fetchNewNotes(open) : null,
  ]);
  if (open !== state.open) return;
  if (results[0].status === 'fulfilled') open.loaded = true;  // (else it is not empty: unknown)
  if (open.loaded) {
    renderTranscript(open);
    setTimeout(() => { if (open === state.open) $('transcript').setAttribute('aria-live', 'polite'); }, 0);
  }
  markOpenChatRead();
  const failed = results.find((result) => result.status === 'rejected');
  if (failed) {
    restoreNeeds(open, need);
    retrySyncLater(open, failed.reason);
    throw failed.reason;
  }
  if (open.syncFailed) {
    open.syncFailed = false;
    showMessage($('chat-error'), '');
  }
}, 'chat-error');

// A chat that could not be fetched is fetched again by itself (after the server's
// Retry-After, or a few seconds), not only when some unrelated event comes.
function retrySyncLater(open, err) {
  open.syncFailed = true;
  if (open.retryTimer || (err instanceof ApiError && err.code === 'stale')) return;
  const seconds = (err instanceof ApiError && err.retryAfter) || 3;
  open.retryTimer = setTimeout(() => {
    open.retryTimer = null;
    if (open === state.open) syncOpenChat();
  }, seconds * 1000);
}

function applyChatDetail(open, detail) {
  if (open !== state.open) return;
  const knewEmail = open.customerEmail;
  open.chat = detail;
  open.readSeq = Math.max(open.readSeq, Number(detail.agent_read_seq) || 0);
  if (detail.customer) open.customerEmail = detail.customer.email;
  renderChatHeader(open);
  if (!knewEmail && open.customerEmail) refreshCustomer(open);
  else renderCustomer(open);
}

async function fetchNewMessages(open) {
  for (;;) {
    const page = await api(`/chats/${enc(open.id)}/messages?after=${open.lastSeq}&limit=100`);
    if (open !== state.open) return;
    const messages = page.messages || [];
    for (const message of messages) {
      open.messages.set(message.seq, message);
      if (message.sender === 'user') open.lastCustomerSeq = Math.max(open.lastCustomerSeq, message.seq);
    }
    open.lastSeq = Math.max(open.lastSeq, Number(page.next_after) || 0, ...messages.map((m) => m.seq));
    if (page.status && open.chat && page.status !== open.chat.status) {
      open.chat = { ...open.chat, status: page.status };
      renderChatHeader(open);
    }
    if (!page.has_more || !messages.length) return;
  }
}

async function fetchNewNotes(open) {
  for (;;) {
    const page = await api(`/chats/${enc(open.id)}/notes?after=${open.notesAfter}&limit=100`);
    if (open !== state.open) return;
    const notes = page.notes || [];
    for (const note of notes) if (!open.notes.some((known) => known.noteId === note.noteId)) open.notes.push(note);
    open.notesAfter = Math.max(open.notesAfter, Number(page.next_after) || 0);
    if (!page.has_more || !notes.length) return;
  }
}

// Opening a chat, or a customer message arriving while it is on screen, moves the
// agents' read mark to the last seq, so the badge and the counts drop. Only customer
// messages count as unread, so the mark is posted only when one lies beyond it (never for
// our own replies, never when it would not move). The counts follow from its chat.read event.
async function markOpenChatRead() {
  const open = state.open;
  if (!open || !open.loaded || document.visibilityState !== 'visible' || open.lastCustomerSeq <= open.readSeq) return;
  const seq = open.lastSeq;
  const previous = open.readSeq;
  open.readSeq = seq;
  try {
    const answer = await api(`/chats/${enc(open.id)}/read`, { method: 'POST', body: { seq } });
    open.readSeq = Math.max(open.readSeq, Number(answer.read_seq) || 0);
    const chat = state.list.chats.get(open.id);
    if (chat) updateRow(state.list.rows.get(open.id), { ...chat, unread: 0 });
  } catch (err) {
    if (open.readSeq === seq) open.readSeq = previous;
    report(err);
  }
}

function renderChatHeader(open) {
  const chat = open.chat || {};
  const customer = chat.customer || { email: open.customerEmail, name: null };
  const title = $('chat-title');
  const email = customer.email || 'Loading…';
  const warning = addressWarning(customer.email);
  const parts = [customer.name, email, warning && warning.label].filter(Boolean);
  if (title.textContent !== parts.join(' ')) {
    const address = el('span', 'title-email');
    fillAddress(address, email);
    const shown = [address];
    if (customer.name) {
      const name = el('span', 'title-name', customer.name);
      name.title = customer.name;  // a very long name is cut to two lines (whole in the panel)
      shown.unshift(name, ' ');
    }
    if (warning) {
      const badge = addressWarningNode();
      fillAddressWarning(badge, customer.email);
      shown.push(' ', badge);
    }
    title.replaceChildren(...shown);
  }
  const plan = planLabel(chat.name, chat.plan_id);
  setText($('chat-plan'), plan);
  $('chat-plan').title = planClaim(plan);  // one line here, ending in "…" when long (whole in the panel)
  const status = chat.status || '';
  setText($('chat-status'), status);
  $('chat-status').dataset.status = status;
  setText($('chat-assignee'), chat.assignee ? agentLabel(chat.assignee) : 'Unassigned');
  const mine = Boolean(chat.assignee && state.me && chat.assignee.name === state.me.name);
  show($('assign-me'), Boolean(state.me) && !mine);
  show($('unassign'), Boolean(chat.assignee));
  show($('close-chat'), status !== 'closed');
  show($('reopen-chat'), status === 'closed');
  show($('closed-hint'), status === 'closed');
  renderAssignSelect(chat.assignee || null);
}

// The select shows who has the chat; the Assign button beside it gives the chat to whoever
// is picked. (Assigning on `change` would assign while a keyboard user arrows through the
// names: Chromium fires `change` on each arrow of a closed select.)
function renderAssignSelect(assignee) {
  const select = $('assign-other');
  const options = [['', 'Nobody (unassigned)']];
  for (const agent of state.agents || []) options.push([agent.name, agentLabel(agent)]);
  if (assignee && !options.some(([name]) => name === assignee.name)) options.push([assignee.name, agentLabel(assignee)]);
  const signature = JSON.stringify(options);
  if (select.dataset.signature !== signature) {
    select.replaceChildren(...options.map(([name, label]) => {
      const option = el('option', null, label);
      option.value = name;
      return option;
    }));
    select.dataset.signature = signature;
  }
  // A choice the agent is making is left alone until the Assign button (or another chat).
  if (!select.dataset.picking) select.value = assignee ? assignee.name : '';
}

// Assign, close and reopen. The pressed button may hide itself (Close becomes Reopen), so
// keyboard focus moves to the first visible of `focusNext`.
async function runChatAction(path, body, focusNext) {
  const open = state.open;
  if (!open || open.busy) return;
  const pressed = document.activeElement;
  open.busy = true;
  $('chat').setAttribute('aria-busy', 'true');
  showMessage($('chat-error'), '');
  try {
    const data = await api(`/chats/${enc(open.id)}/${path}`, { method: 'POST', body });
    if (open !== state.open) return;
    const changes = 'assignee' in data ? { assignee: data.assignee } : {};
    if (data.status) changes.status = data.status;
    open.chat = { ...open.chat, ...changes };  // (the list follows from the action's event)
  } catch (err) {
    if (open === state.open && !err.quiet) showMessage($('chat-error'), err.network ? `${OFFLINE_TEXT} Try again when it is back.` : err.message);
  } finally {
    open.busy = false;
    $('chat').removeAttribute('aria-busy');
  }
  if (open !== state.open) return;
  renderChatHeader(open);
  if (pressed && pressed.hidden) {
    const target = focusNext.map($).find((node) => !node.hidden);
    if (target) target.focus();
  }
}

function assignTo(name) {
  runChatAction('assign', { agent: name }, name ? ['unassign', 'assign-other'] : ['assign-me', 'assign-other']);
}

// ---------------------------------------------------------------- transcript

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

function renderTranscript(open) {
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

// ---------------------------------------------------------------- customer panel

function refreshCustomer(open) {
  loadCustomer(open).catch((err) => report(err));
}

async function loadCustomer(open) {
  if (!open.customerEmail) return;
  let data = {};
  try {
    data = await api(`/customers/${enc(open.customerEmail)}?limit=${PAGE_SIZE}`);
  } catch (err) {
    if (err.status !== 404) throw err;
  }
  if (open !== state.open) return;
  Object.assign(open, { customer: data.customer || null, otherChats: data.chats || [], customerLoaded: true });
  renderCustomer(open);
}

function renderCustomer(open) {
  show($('customer-placeholder'), !open);
  show($('customer-details'), Boolean(open));
  if (!open) {
    $('customer-chats').replaceChildren();
    return;
  }
  const chat = open.chat || {};
  const customer = open.customer || {};
  const fromChat = chat.customer || {};
  const email = customer.email || fromChat.email || open.customerEmail;
  fillAddress($('customer-address'), email);
  const warning = fillAddressWarning($('customer-address-warning'), email);
  showMessage($('customer-address-characters'), warning ? `Not ASCII: ${warning.characters}` : '');
  setText($('customer-name'), customer.name || fromChat.name || 'Not given');
  setText($('customer-plan'), planLabel(customer.plan_name || chat.name, customer.plan_id ?? chat.plan_id) || 'Not given');
  const created = Number(customer.account_created_at ?? chat.account_created_at);
  setText($('customer-created'), created > 0 ? formatDay(created * 1000) : 'Unknown');
  const firstSeen = Date.parse(customer.first_seen || chat.created_at);
  setText($('customer-first-seen'), Number.isNaN(firstSeen) ? 'Unknown' : fullFormat.format(firstSeen));
  renderCustomerChats(open);
}

// The customer's other chats, each a button that opens it.
function renderCustomerChats(open) {
  const focusedId = document.activeElement && document.activeElement.classList.contains('customer-chat')
    ? document.activeElement.dataset.chatId : null;
  const items = open.otherChats.filter((chat) => chat.chatId !== open.id).map((chat) => {
    const button = el('button', 'customer-chat');
    button.type = 'button';
    button.dataset.chatId = chat.chatId;
    const status = el('span', 'status-pill', chat.status);
    status.dataset.status = chat.status;
    const time = el('time', 'time');
    const last = chat.last_message || {};
    fillTime(time, last.created_at || chat.updated_at, true);
    button.append(status, time, el('span', 'preview', last.preview));
    const item = el('li');
    item.append(button);
    return item;
  });
  $('customer-chats').replaceChildren(...items);
  const again = focusedId && items.map((item) => item.firstChild).find((button) => button.dataset.chatId === focusedId);
  if (again) again.focus();
  show($('customer-chats-empty'), open.customerLoaded && items.length === 0);
}

// ---------------------------------------------------------------- replying

// The API counts characters (code points), as Python does; String.length counts UTF-16
// units, two for an emoji.
function charCount(text) {
  if (text.length <= MAX_REPLY) return text.length;  // no more code points than units: quick
  return Array.from(text).length;
}

function tooLong(text) {
  return charCount(text) > MAX_REPLY;
}

function tooLongText(text) {
  return `Too long: at most ${MAX_REPLY.toLocaleString()} characters (this is ${charCount(text).toLocaleString()}).`;
}

function draftFor(chatId) {
  if (!state.drafts.has(chatId)) state.drafts.set(chatId, { text: '', note: false, pending: null, error: '', sending: false });
  return state.drafts.get(chatId);
}

// Shows the open chat's draft: its text, note mode, error and retry button.
function renderDraft() {
  if (!state.open) return;
  const draft = draftFor(state.open.id);
  const input = $('reply-input');
  if (input.value !== draft.text) input.value = draft.text;
  input.readOnly = draft.sending;  // the text being sent is the text that gets cleared
  input.placeholder = draft.note ? 'Write an internal note (only agents see it)…' : 'Write a reply…';
  $('note-toggle').checked = draft.note;
  $('note-toggle').disabled = draft.sending;  // the kind of message in flight cannot change
  $('reply-form').classList.toggle('is-note', draft.note);
  setText($('send-button'), draft.note ? 'Add note' : 'Send');
  $('send-button').setAttribute('aria-disabled', String(draft.sending));
  showMessage($('reply-error'), draft.error);
  input.setAttribute('aria-invalid', String(tooLong(draft.text)));
  show($('retry-send'), Boolean(draft.error && draft.pending && !draft.sending));
}

// Every edit of the draft comes here. Editing after a failure drops the old
// Idempotency-Key (and the error): the new text is a new message.
function editDraft(changes) {
  if (!state.open) return;
  const draft = Object.assign(draftFor(state.open.id), changes);
  const keyStale = draft.pending && (draft.pending.text !== draft.text || draft.pending.note !== draft.note);
  if (keyStale || (draft.error && !draft.pending)) Object.assign(draft, { pending: null, error: '' });
  // Nothing cuts a long text (a pasted one would lose its end unseen): it says so at once.
  if (tooLong(draft.text)) draft.error = tooLongText(draft.text);
  renderDraft();
}

function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // Pages served over plain http (not localhost) have no randomUUID: build a v4 UUID.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// Sends the open chat's draft as a reply or a note. One key per message: a retry of the
// same text reuses it, so the server answers the first answer instead of storing a twin.
async function sendDraft() {
  const open = state.open;
  if (!open) return;
  const draft = draftFor(open.id);
  if (draft.sending) return;
  const text = draft.text;
  if (!text.trim() || tooLong(text)) {
    draft.error = text.trim() ? tooLongText(text) : 'Write something before sending.';
    renderDraft();
    return;
  }
  if (!draft.pending || draft.pending.text !== text || draft.pending.note !== draft.note) {
    draft.pending = { key: newIdempotencyKey(), text, note: draft.note };
  }
  const { key, note } = draft.pending;
  Object.assign(draft, { sending: true, error: '' });
  renderDraft();
  try {
    const answer = await api(`/chats/${enc(open.id)}/${note ? 'notes' : 'messages'}`, { method: 'POST', body: { message: text }, key });
    Object.assign(draft, { pending: null, text: '' });
    open.scrollToEnd = true;
    // Fetch just what was sent (its event may have asked already); the list follows from
    // that event too.
    if (note) open.need.notes = open.need.notes || !open.notes.some((known) => known.noteId === answer.noteId);
    else wantMessagesUpTo(open, Number(answer.seq) || Infinity);
    // (By id: reopening the chat meanwhile made a new `state.open` for it.)
    if (state.open && state.open.id === open.id) syncOpenChat();
  } catch (err) {
    if (err.code !== 'stale') draft.error = sendErrorText(err, note);
  } finally {
    draft.sending = false;
    if (state.open && state.open.id === open.id) renderDraft();
  }
}

function sendErrorText(err, note) {
  const what = note ? 'Note not saved' : 'Not sent';
  if (err.network) return `${what}: cannot reach the server. Your text is kept; retry when it is back.`;
  if (err.code === 'chat_closed') return `${what}: this chat is closed. Reopen it to reply, or tick “Note”.`;
  if (err.status === 429) return `${what}: too many requests. Retry in ${err.retryAfter || 'a few'} s.`;
  if (err.code === 'chat_not_found') return `${what}: this chat no longer exists.`;
  if (err.status >= 500) return `${what}: the server had a problem (${err.status}). Retry in a moment.`;
  const firstField = err.fields ? Object.values(err.fields).flat()[0] : null;
  return `${what}: ${firstField || err.message}`;
}

// Enter sends, Shift+Enter adds a line; while saved replies are listed, the keys pick one.
function onReplyKeydown(event) {
  if (event.isComposing) return;
  const { items, active } = state.suggest;
  if (!$('reply-suggestions').hidden && items.length) {
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      state.suggest.active = (active + (event.key === 'ArrowDown' ? 1 : -1) + items.length) % items.length;
      renderSuggestions();
      return;
    }
    if ((event.key === 'Enter' || event.key === 'Tab') && !event.shiftKey) {
      event.preventDefault();
      insertSavedReply(items[active]);
      return;
    }
    if (event.key === 'Escape') {
      event.preventDefault();
      hideSuggestions();
      return;
    }
  }
  if (event.key === 'Enter' && !event.shiftKey && !event.altKey) {
    event.preventDefault();
    // The whole box being exactly "/shortcut" inserts that reply rather than sending it.
    const exact = (state.replies || []).find((reply) => `/${reply.shortcut}` === $('reply-input').value);
    if (exact) insertSavedReply(exact);
    else $('reply-form').requestSubmit();
  }
}

// ---------------------------------------------------------------- saved replies

// Lists saved replies while the caret is in a "/word" at the very start of the box.
function updateSuggestions() {
  const input = $('reply-input');
  const match = /^\/(\S*)/.exec(input.value);
  // (Not while a send is under way: the box is read-only, and its text is being sent.)
  if (!match || !state.replies || input.readOnly || input.selectionStart > match[0].length) {
    hideSuggestions();
    return;
  }
  // Others may have saved new replies: a fresh "/" reloads them if the list is old.
  if (input.value === '/' && Date.now() - state.repliesAt > 60000) loadReplies().then(updateSuggestions, report);
  const word = match[1];
  const ranked = state.replies.map((reply) => [suggestionRank(reply.shortcut, word), reply]).filter(([rank]) => rank >= 0);
  ranked.sort((a, b) => a[0] - b[0]);  // stable: alphabetical within a rank
  const items = ranked.slice(0, 8).map(([, reply]) => reply);
  if (!items.length) {
    hideSuggestions();
    return;
  }
  state.suggest = { items, active: 0 };
  renderSuggestions();
}

// Shortcuts are case-sensitive on the server ("Hi" and "hi" are two replies), so the one
// typed exactly comes first and Enter picks it; then the same letters in another case, then
// longer shortcuts starting with the word (same case first). -1: not a suggestion.
function suggestionRank(shortcut, word) {
  if (shortcut === word) return 0;
  const lower = shortcut.toLowerCase();
  const lowerWord = word.toLowerCase();
  if (lower === lowerWord) return 1;
  if (shortcut.startsWith(word)) return 2;
  return lower.startsWith(lowerWord) ? 3 : -1;
}

function renderSuggestions() {
  const box = $('reply-suggestions');
  const { items, active } = state.suggest;
  box.replaceChildren(...items.map((reply, index) => {
    const option = el('li', 'suggestion');
    option.id = `suggestion-${index}`;
    option.setAttribute('role', 'option');
    option.setAttribute('aria-selected', String(index === active));
    option.dataset.index = String(index);
    option.append(el('span', 'shortcut', `/${reply.shortcut}`), el('span', 'suggestion-text', reply.text));
    return option;
  }));
  show(box, true);
  $('reply-input').setAttribute('aria-activedescendant', `suggestion-${active}`);
  if (box.children[active]) box.children[active].scrollIntoView({ block: 'nearest' });
}

function hideSuggestions() {
  state.suggest = { items: [], active: -1 };
  show($('reply-suggestions'), false);
  $('reply-suggestions').replaceChildren();
  $('reply-input').removeAttribute('aria-activedescendant');
}

// Puts the saved text in place of "/word", keeping whatever followed it.
function insertSavedReply(reply) {
  const input = $('reply-input');
  if (input.readOnly) return;
  const match = /^\/\S*/.exec(input.value);
  input.value = reply.text + input.value.slice(match ? match[0].length : 0);
  input.setSelectionRange(reply.text.length, reply.text.length);
  hideSuggestions();
  editDraft({ text: input.value });
  input.focus();
}

function onSuggestionPointer(event) {
  const option = event.target.closest('[role="option"]');
  if (!option) return;
  event.preventDefault();  // keep focus, and the caret, in the reply box
  insertSavedReply(state.suggest.items[Number(option.dataset.index)]);
}

// ---------------------------------------------------------------- noticing: desktop and sound

function renderNotifyToggle() {
  const permission = 'Notification' in window ? Notification.permission : 'unsupported';
  const labels = { granted: 'Notifications on', denied: 'Notifications blocked', unsupported: 'Notifications unavailable' };
  const button = $('notify-toggle');
  setText(button, labels[permission] || 'Enable notifications');
  button.setAttribute('aria-disabled', String(permission !== 'default'));
  button.title = permission === 'denied' ? 'Allow notifications for this site in the browser settings.' : '';
}

async function onNotifyToggle() {
  if (!('Notification' in window) || Notification.permission !== 'default') return;
  try { await Notification.requestPermission(); } catch (err) { /* an old browser */ }
  renderNotifyToggle();
}

// Only while the tab is hidden: a visible inbox already shows the message.
function notifyDesktop(chat, message) {
  if (!document.hidden || !('Notification' in window) || Notification.permission !== 'granted') return;
  const text = message.message || (message.image_url ? 'Sent an image' : '');
  try {
    const email = chat.customer && chat.customer.email;
    const warning = addressWarning(email);
    const notification = new Notification(warning ? `${email} (${warning.label})` : email || 'Customer',
      { body: text.slice(0, 160), tag: chat.chatId });
    notification.addEventListener('click', () => {
      window.focus();
      openChat(chat.chatId);
      notification.close();
    });
  } catch (err) { /* some platforms only allow notifications from a service worker */ }
}

let audioContext = null;

// Browsers start audio only after a user gesture: ticking the box is that gesture.
function onSoundToggle() {
  const on = $('sound-toggle').checked;
  try { localStorage.setItem(SOUND_KEY, on ? 'on' : 'off'); } catch (err) { /* not kept */ }
  if (on) audio();
}

function audio() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) return null;
  audioContext = audioContext || new Context();
  if (audioContext.state === 'suspended') audioContext.resume().catch(() => {});
  return audioContext;
}

function beep() {
  if (!$('sound-toggle').checked) return;
  try {
    const context = audio();
    if (!context) return;
    const start = context.currentTime;
    const tone = context.createOscillator();
    const gain = context.createGain();
    tone.frequency.value = 880;
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(0.2, start + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.25);
    tone.connect(gain).connect(context.destination);
    tone.start(start);
    tone.stop(start + 0.3);
  } catch (err) { /* no sound is better than a broken page */ }
}

// ---------------------------------------------------------------- start

function wireEvents() {
  $('signin-form').addEventListener('submit', onSigninSubmit);
  $('signout').addEventListener('click', () => signOut(''));
  for (const tab of Object.keys(TABS)) $(`tab-${tab}`).addEventListener('click', () => selectTab(tab));
  document.querySelector('[role="tablist"]').addEventListener('keydown', onTabKeydown);
  for (const name of ['status', 'sort']) {
    $(`${name}-filter`).addEventListener('change', (event) => {
      state.filter[name] = event.target.value;
      restartList();
    });
  }
  $('chat-list').addEventListener('click', (event) => {
    const row = event.target.closest('.chat-row');
    if (row) openChat(row.dataset.chatId);
  });
  $('load-more').addEventListener('click', loadMore);

  $('back-to-list').addEventListener('click', () => closeChatView());
  // (Without /me loaded the page cannot say who "me" is: it does nothing, never unassigns.)
  $('assign-me').addEventListener('click', () => { if (state.me) assignTo(state.me.name); });
  $('unassign').addEventListener('click', () => assignTo(null));
  $('assign-other').addEventListener('change', () => { $('assign-other').dataset.picking = '1'; });
  $('assign-other-go').addEventListener('click', () => {
    delete $('assign-other').dataset.picking;
    assignTo($('assign-other').value || null);
  });
  $('close-chat').addEventListener('click', () => runChatAction('close', undefined, ['reopen-chat']));
  $('reopen-chat').addEventListener('click', () => runChatAction('reopen', undefined, ['close-chat']));

  const input = $('reply-input');
  $('reply-form').addEventListener('submit', (event) => {
    event.preventDefault();
    hideSuggestions();
    sendDraft();
  });
  input.addEventListener('input', () => {
    editDraft({ text: input.value });
    updateSuggestions();
  });
  input.addEventListener('keydown', onReplyKeydown);
  input.addEventListener('click', updateSuggestions);
  input.addEventListener('blur', () => setTimeout(() => {
    if (document.activeElement !== input) hideSuggestions();
  }, 0));
  $('reply-suggestions').addEventListener('mousedown', onSuggestionPointer);
  $('note-toggle').addEventListener('change', (event) => editDraft({ note: event.target.checked }));
  $('retry-send').addEventListener('click', () => {
    input.focus();
    sendDraft();
  });
  $('customer-chats').addEventListener('click', (event) => {
    const button = event.target.closest('.customer-chat');
    if (button) openChat(button.dataset.chatId);
  });

  $('notify-toggle').addEventListener('click', onNotifyToggle);
  $('sound-toggle').addEventListener('change', onSoundToggle);
  document.addEventListener('visibilitychange', markOpenChatRead);
  window.addEventListener('online', wakeFeed);
  window.addEventListener('offline', () => noteNetworkTrouble());
}

function init() {
  wireEvents();
  try { $('sound-toggle').checked = localStorage.getItem(SOUND_KEY) === 'on'; } catch (err) { /* off */ }
  renderNotifyToggle();
  setInterval(tickRelativeTimes, 30000);
  const token = takeTokenFromAddress() || storedToken();
  if (token) startSession(token, false);
  else showSignin('');
  // A sign-in link opened in a tab already on /inbox changes only the fragment: no reload.
  window.addEventListener('hashchange', () => {
    const linked = takeTokenFromAddress();
    if (linked && linked !== state.token) startSession(linked, false);
  });
}

init();
