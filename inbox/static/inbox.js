// SupportZen agent inbox: one page, no framework, no build step. It talks only to
// /api/agent on this origin, follows /events with long-polls, and builds every node with
// createElement + textContent, so no customer or agent text can ever become markup.
//
// This entry module only wires the page's controls to the modules that do the work and
// starts it; each module says what it holds, and all that changes lives in inbox-state.js.
// Modules import only from those below them: state, dom and addresses at the bottom, then
// api, transcript, customer, list, chat, reply, open-chat, notify, feed, session.

import { UNAUTHORIZED_EVENT, noteNetworkTrouble, wakeFeed } from './inbox-api.js';
import { assignTo, markOpenChatRead, runChatAction } from './inbox-chat.js';
import { $, tickRelativeTimes } from './inbox-dom.js';
import { loadMore, onTabKeydown, restartList, selectTab } from './inbox-list.js';
import { onNotifyToggle, onSoundToggle, renderNotifyToggle, restoreSoundChoice } from './inbox-notify.js';
import { closeChatView, openChat } from './inbox-open-chat.js';
import { editDraft, hideSuggestions, onReplyKeydown, onSuggestionPointer, sendDraft, updateSuggestions }
  from './inbox-reply.js';
import { UNAUTHORIZED_TEXT, onSigninSubmit, showSignin, signOut, startSession, storedToken, takeTokenFromAddress }
  from './inbox-session.js';
import { TABS, state } from './inbox-state.js';

// Every listener the page has, in the order of the page: sign-in, list, chat, reply box, notices.
function wireEvents() {
  $('signin-form').addEventListener('submit', onSigninSubmit);
  $('signout').addEventListener('click', () => signOut(''));
  // A 401 from any call (see api()): the token is no longer accepted.
  document.addEventListener(UNAUTHORIZED_EVENT, () => signOut(UNAUTHORIZED_TEXT));
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

// Signs in from a link's #token=, else from this tab's stored token, else asks.
function init() {
  wireEvents();
  restoreSoundChoice();
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
