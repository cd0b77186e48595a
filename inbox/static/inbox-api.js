// The API client: every call to /api/agent goes through api(), which adds the token,
// unwraps the envelope and turns trouble into what the page shows (the offline notice, or
// sign-out). Also here: that notice, and the moment the app first shows.

import { $, el, setText, show, showMessage } from './inbox-dom.js';
import { OFFLINE_TEXT, state } from './inbox-state.js';

const API_ROOT = '/api/agent';
const CALL_TIMEOUT_MS = 30000;

// A 401 signs the agent out, but sign-out resets every part of the page, all of which call
// the API: so the client only announces it on `document`, and the entry module (inbox.js)
// listens and signs out, synchronously, before the failed call's caller hears of it.
export const UNAUTHORIZED_EVENT = 'supportzen:unauthorized';

export const enc = encodeURIComponent;  // for ids and addresses in a path or query

export class ApiError extends Error {
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
export async function api(path, options = {}) {
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
  if (response.status === 401) document.dispatchEvent(new Event(UNAUTHORIZED_EVENT));
  else if (failure.network && !options.feed) noteNetworkTrouble();
  throw failure;
}

// Background work reports here; the offline notice and sign-out speak for themselves.
export function report(err, target) {
  if (err instanceof ApiError && (err.quiet || err.network)) return;
  if (target) showMessage(target, err instanceof ApiError ? err.message : 'Something went wrong: reload the page.');
}

// Runs `task` one at a time; calls made meanwhile collapse into one more run afterwards.
export function serial(task, targetId) {
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

// ---------------------------------------------------------------- reveal and offline notice

// The app stays hidden until the token has worked once (startSession() in inbox-session.js), so a
// bad token never flashes an empty inbox; the server being unreachable reveals it too.
export function revealApp() {
  if (state.revealed || !state.token) return;
  state.revealed = true;
  show($('signin'), false);
  show($('app'), true);
  if (state.focusOnReveal) document.querySelector('[role="tab"][aria-selected="true"]').focus();
}

// The main sentence is announced once (role="status"); the ticking countdown is hidden
// from screen readers so they are not interrupted every second.
export function renderConnection(reason, retry) {
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
export function noteNetworkTrouble() {
  const feed = state.feed;
  if (!state.token) return;
  if (!feed.offline) {
    feed.offline = true;
    renderConnection(OFFLINE_TEXT, 'Retrying…');
  }
  if (feed.controller) feed.controller.abort();
}

// The feed got an answer: failures are forgotten and the notice goes.
export function markOnline() {
  const feed = state.feed;
  feed.failures = 0;
  feed.offline = false;
  if (feed.notice) {
    feed.notice = false;
    show($('connection'), false);
  }
}

// A call succeeded (or the browser is back online): a feed waiting out its backoff asks again now.
export function wakeFeed() {
  if (state.feed.wake) state.feed.wake();
}
