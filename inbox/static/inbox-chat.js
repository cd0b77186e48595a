// The open chat kept up to date: what it still needs to fetch, the fetches themselves
// (after its own cursors, so nothing is missed), its read mark, and its header with the
// actions there (assign, close, reopen). Opening a chat is in inbox-open-chat.js.

import { ApiError, api, enc, report, serial } from './inbox-api.js';
import { addressWarning, addressWarningNode, fillAddress, fillAddressWarning } from './inbox-addresses.js';
import { refreshCustomer, renderCustomer } from './inbox-customer.js';
import { $, agentLabel, el, fillPlanClaim, planLabel, setText, show, showMessage } from './inbox-dom.js';
import { updateRow } from './inbox-list.js';
import { OFFLINE_TEXT, state } from './inbox-state.js';
import { renderTranscript } from './inbox-transcript.js';

// ---------------------------------------------------------------- needs and syncing

// The open chat's wants: its detail (header), its messages up to a seq an event or a send
// named, its notes. Opening and catching up want everything; an event only its own part.
export function noNeeds() {
  return { detail: false, messagesUpTo: 0, notes: false };
}

export function wantEverything(open) {
  Object.assign(open.need, { detail: true, messagesUpTo: Infinity, notes: true });
}

export function wantMessagesUpTo(open, seq) {
  open.need.messagesUpTo = Math.max(open.need.messagesUpTo, seq);
}

export function hasNeeds(open) {
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
export const syncOpenChat = serial(async () => {
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
export async function markOpenChatRead() {
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

// ---------------------------------------------------------------- header and actions

// Who the chat is with, its plan, status and assignee, and the actions that fit them.
export function renderChatHeader(open) {
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
  fillPlanClaim($('chat-plan'), plan);  // one line here, ending in "…" when long (whole in the panel)
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
export async function runChatAction(path, body, focusNext) {
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

// To the agent `name`, or to nobody (null); the lists name who takes focus if the pressed button hides.
export function assignTo(name) {
  runChatAction('assign', { agent: name }, name ? ['unassign', 'assign-other'] : ['assign-me', 'assign-other']);
}
