// Opening a chat (from the list, the customer panel or a desktop notification) and
// closing its view: what the open chat holds, and the panes and focus that follow it.

import { noNeeds, renderChatHeader, syncOpenChat, wantEverything } from './inbox-chat.js';
import { refreshCustomer, renderCustomer } from './inbox-customer.js';
import { $, show, showMessage } from './inbox-dom.js';
import { markSelectedRow } from './inbox-list.js';
import { hideSuggestions, renderDraft } from './inbox-reply.js';
import { state } from './inbox-state.js';

// Puts the chat on screen at once with what the list knows of it, then fetches the rest.
export function openChat(chatId) {
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
export function closeChatView(restoreFocus = true) {
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
