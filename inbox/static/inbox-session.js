// Signing in and out. A session is one token's time on the page: it starts the live feed,
// and its end (sign-out, a revoked token) forgets the token and everything shown with it.

import { wakeFeed } from './inbox-api.js';
import { $, setText, show, showMessage } from './inbox-dom.js';
import { runFeed } from './inbox-feed.js';
import { renderCounts } from './inbox-list.js';
import { closeChatView } from './inbox-open-chat.js';
import { newFeed, newList, state } from './inbox-state.js';

const TOKEN_KEY = 'supportzen.agentToken';
export const UNAUTHORIZED_TEXT = 'That token was not accepted: it is invalid or has been revoked.';

// A link like /inbox#token=... signs in once; the token then leaves the address bar.
export function takeTokenFromAddress() {
  if (!location.hash.startsWith('#token=')) return null;
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  history.replaceState(history.state, '', location.pathname + location.search);
  return token ? token.trim() : null;
}

// Kept for this tab only (sessionStorage): a reload stays signed in, a fresh tab asks again.
function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (err) { /* storage refused: the token lives in memory only */ }
}

export function storedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch (err) { return null; }
}

// The sign-in form, saying why when there is a why (a token that was not accepted).
export function showSignin(message) {
  state.revealed = false;
  setText($('signin-submit'), 'Sign in');
  show($('app'), false);
  show($('connection'), false);
  show($('signin'), true);
  showMessage($('signin-error'), message);
  $('token-input').focus();
}

export function onSigninSubmit(event) {
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
export function startSession(token, fromForm) {
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

// Forgets the token and everything shown with it; `message` says why, when there is a why.
export function signOut(message) {
  if (!state.token) return;
  state.token = null;
  state.session += 1;
  storeToken(null);
  if (state.feed.controller) state.feed.controller.abort();
  wakeFeed();
  resetInbox();
  showSignin(message);
}

// What a session showed goes with it, so the next token never sees the last one's chats.
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
