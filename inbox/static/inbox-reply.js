// The reply box: each chat's draft (kept while the agent looks at other chats), sending it
// as a reply or an internal note exactly once, and the saved replies that "/" brings up.

import { api, enc, report } from './inbox-api.js';
import { syncOpenChat, wantMessagesUpTo } from './inbox-chat.js';
import { $, el, setText, show, showMessage } from './inbox-dom.js';
import { state } from './inbox-state.js';

const MAX_REPLY = 10000;  // the API's limit on a message

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
export function renderDraft() {
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
export function editDraft(changes) {
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
export async function sendDraft() {
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
export function onReplyKeydown(event) {
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

// The saved replies come in pages bounded in bytes: follow next_after until has_more is false.
export async function loadReplies() {
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

// Lists saved replies while the caret is in a "/word" at the very start of the box.
export function updateSuggestions() {
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

export function hideSuggestions() {
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

export function onSuggestionPointer(event) {
  const option = event.target.closest('[role="option"]');
  if (!option) return;
  event.preventDefault();  // keep focus, and the caret, in the reply box
  insertSavedReply(state.suggest.items[Number(option.dataset.index)]);
}
