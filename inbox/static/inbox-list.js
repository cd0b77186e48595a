// The list pane: the tabs with their counts, and the list of chats, both refreshed from
// the API (throttled while events pour in) and updated in place, so rows keep their focus.

import { api, report, serial } from './inbox-api.js';
import { addressWarningNode, fillAddress, fillAddressWarning } from './inbox-addresses.js';
import { loadCustomer } from './inbox-customer.js';
import { $, agentLabel, el, fillPlanClaim, fillTime, planLabel, reconcileChildren, setText, show, showMessage }
  from './inbox-dom.js';
import { PAGE_SIZE, TABS, state } from './inbox-state.js';

const BASE_TITLE = 'Inbox · SupportZen';
const REFRESH_INTERVAL_MS = 1000;  // counts + list refresh at most this often under traffic

// ---------------------------------------------------------------- counts and tabs

async function refreshCounts() {
  renderCounts(await api('/chats/counts'));
}

export function renderCounts(counts) {
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

export function selectTab(tab) {
  if (state.filter.tab === tab) return;
  state.filter.tab = tab;
  for (const name of Object.keys(TABS)) $(`tab-${name}`).setAttribute('aria-selected', String(name === tab));
  $('list-panel').setAttribute('aria-labelledby', `tab-${tab}`);
  restartList();
}

// Arrow keys, Home and End move between tabs, as in any tablist.
export function onTabKeydown(event) {
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
export function scheduleRefresh() {
  if (state.refreshTimer) return;  // a refresh is due already: it will show this change too
  const wait = Math.max(0, state.refreshedAt + REFRESH_INTERVAL_MS - Date.now());
  state.refreshTimer = setTimeout(refreshNow, wait);
}

export const refreshNow = serial(async () => {
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

export async function loadMore() {
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
export function restartList() {
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

export function updateRow(row, chat) {
  const customer = chat.customer || {};
  const last = chat.last_message || {};
  const unread = Number(chat.unread) || 0;
  const part = (name) => row.querySelector(`.${name}`);
  fillAddress(part('email'), customer.email);
  fillAddressWarning(part('address-warning'), customer.email);
  setText(part('name'), customer.name);
  const plan = planLabel(chat.name, chat.plan_id);
  fillPlanClaim(part('plan'), plan);
  setText(part('preview'), last.preview);
  fillTime(part('time'), last.created_at || chat.updated_at, true);
  setText(part('badge'), unread);
  part('badge').title = `${unread} unread`;
  show(part('badge'), unread > 0);
  setText(part('assignee'), chat.assignee ? agentLabel(chat.assignee) : 'Unassigned');
  row.classList.toggle('is-closed', chat.status === 'closed');
  row.classList.toggle('is-unread', unread > 0);
}

export function markSelectedRow() {
  const openId = state.open ? state.open.id : null;
  for (const [chatId, row] of state.list.rows) {
    row.classList.toggle('is-selected', chatId === openId);
    const button = row.querySelector('button');
    if (chatId === openId) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
  }
}
