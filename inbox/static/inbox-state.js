// The settings several modules share, and the page's one mutable state. Everything that
// changes while the page runs lives in `state` (and nowhere else), so that sign-out can
// forget it in one place (resetInbox() in inbox-session.js) and a reader can see all of it at once.

export const PAGE_SIZE = 50;
export const TABS = { mine: 'me', unassigned: 'none', all: 'any' };  // tab -> assignee filter
export const OFFLINE_TEXT = 'Offline: cannot reach the server.';

export const state = {
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
  open: null,          // the chat on screen: see openChat() in inbox-open-chat.js
  drafts: new Map(),   // chatId -> draft, so a half-typed reply survives switching chats
  customerStale: false,
  suggest: { items: [], active: -1 },
  refreshTimer: 0,
  refreshedAt: 0,      // when the last counts + list refresh began (see scheduleRefresh)
  listScroll: undefined,  // the list's scroll position while a phone shows a chat instead
  audioContext: null,  // made on the first sound (see audio() in inbox-notify.js)
  // node -> the address it shows, so fillAddress() rebuilds a node only when that changes
  // (a WeakMap: rows and titles that leave the page take their entry with them).
  shownAddresses: new WeakMap(),
};

export function newList() {
  return { gen: 0, chats: new Map(), rows: new Map(), nextBefore: null, target: PAGE_SIZE };
}

export function newFeed() {
  return { cursor: null, controller: null, failures: 0, offline: false, notice: false, expired: false, wake: null,
    busyTimes: [] };
}
