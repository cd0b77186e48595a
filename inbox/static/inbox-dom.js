// Building and updating the page's nodes, and writing times and names into them. Every
// node is made with createElement and filled with textContent, so no customer or agent
// text can ever become markup.

export const $ = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// Writing only on change keeps screen readers and text selections quiet during refreshes.
export function setText(node, text) {
  const value = text === undefined || text === null ? '' : String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function show(node, visible) {
  node.hidden = !visible;
}

export function showMessage(node, text) {
  setText(node, text || '');
  show(node, Boolean(text));
}

// Puts `nodes` into `parent` in this order, moving only what is out of place, so unchanged
// rows keep their identity (focus, hover, selection) across refreshes.
export function reconcileChildren(parent, nodes) {
  const keep = new Set(nodes);
  for (const child of Array.from(parent.children)) if (!keep.has(child)) child.remove();
  nodes.forEach((node, index) => {
    const current = parent.children[index];
    if (current !== node) parent.insertBefore(node, current || null);
  });
}

// Times: in the agent's own locale and time zone, relative in the list ("5 min ago").

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const yearDayFormat = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
export const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export function formatDay(ms) {
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
export function fillTime(node, iso, relative) {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) { setText(node, ''); return; }
  if (node.dateTime !== iso) node.dateTime = iso;
  node.title = fullFormat.format(ms);
  if (relative) node.dataset.relative = '1';
  setText(node, relative ? relativeTime(iso) : messageStamp(ms));
}

export function tickRelativeTimes() {
  for (const node of document.querySelectorAll('time[data-relative]')) setText(node, relativeTime(node.dateTime));
}

// Names, as the page writes them.

export function agentLabel(agent) {
  return agent ? agent.display_name || agent.name : 'Agent';
}

export function customerLabel(customer) {
  if (!customer || !customer.email) return 'Customer';
  return customer.name ? `${customer.name} (${customer.email})` : customer.email;
}

export function planLabel(planName, planId) {
  if (planName) return planName;
  return planId === null || planId === undefined ? '' : `Plan ${planId}`;
}

// The plan comes with the chat from the customer's own app: nothing checks it.
export function planClaim(plan) {
  return plan ? `${plan} (as the client app reports it: not verified)` : '';
}

// Shows the plan in `node` marked, visibly and for screen readers, as the client app's word:
// "app says: Premium Plan" (the marker first, so that an ellipsis never cuts it off).
export function fillPlanClaim(node, plan) {
  setText(node, plan ? `app says: ${plan}` : '');
  const claim = planClaim(plan);
  if (node.title !== claim) node.title = claim;
  if (claim) node.setAttribute('aria-label', claim);
  else node.removeAttribute('aria-label');
}
