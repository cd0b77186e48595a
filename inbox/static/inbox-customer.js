// The customer panel beside the open chat: who the customer is (their address marked when
// it only looks like another's), what their client app claims, and their other chats.

import { api, enc, report } from './inbox-api.js';
import { fillAddress, fillAddressWarning } from './inbox-addresses.js';
import { $, el, fillTime, formatDay, fullFormat, planLabel, setText, show, showMessage } from './inbox-dom.js';
import { PAGE_SIZE, state } from './inbox-state.js';

// In the background: a failure shows nowhere (the offline notice speaks for itself).
export function refreshCustomer(open) {
  loadCustomer(open).catch((err) => report(err));
}

// A customer the server does not know (404) shows what the chat says of them.
export async function loadCustomer(open) {
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

export function renderCustomer(open) {
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
