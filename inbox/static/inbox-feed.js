// The live feed: /events followed with long-polls while the session lasts, backing off
// (with the offline notice) when the server cannot be reached, and each batch of events
// turned into the least work that shows it.

import { ApiError, api, markOnline, renderConnection, report, revealApp } from './inbox-api.js';
import { hasNeeds, renderChatHeader, syncOpenChat, wantEverything, wantMessagesUpTo } from './inbox-chat.js';
import { $, agentLabel, setText } from './inbox-dom.js';
import { refreshNow, scheduleRefresh } from './inbox-list.js';
import { beep, notifyDesktop } from './inbox-notify.js';
import { loadReplies } from './inbox-reply.js';
import { OFFLINE_TEXT, state } from './inbox-state.js';

const FEED_WAIT = 25;                    // seconds the server may hold a feed long-poll
const BACKOFF = [1, 2, 4, 8, 15, 30];    // seconds between feed retries after failures
const FEED_PACE_MS = 300;                // pause after a batch of events while the feed is busy...
const FEED_BUSY = { events: 3, withinMs: 1000 };  // ...that is, this many events of others this fast

// Follows /events while this session lasts: the cursor first, then the lists, then
// long-polls; failures back off and show the offline notice; 410 starts over.
export async function runFeed(session) {
  const feed = state.feed;
  while (session === state.session) {
    feed.controller = new AbortController();
    const signal = feed.controller.signal;
    try {
      if (feed.cursor === null) {
        const start = await api('/events', { signal, feed: true });
        feed.cursor = Number(start.next_after) || 0;
        markOnline();
        await reloadEverything();
        revealApp();
        continue;
      }
      // After a failure, ask without waiting, so a recovery shows at once.
      const recovering = feed.offline || feed.failures > 0;
      const wait = recovering ? 0 : FEED_WAIT;
      const page = await api(`/events?after=${feed.cursor}&limit=100&wait=${wait}`,
        { signal, feed: true, timeoutMs: (wait + 20) * 1000 });
      markOnline();
      if (Number.isInteger(page.next_after)) feed.cursor = page.next_after;
      const events = page.events || [];
      if (events.length) handleEvents(events);
      if (recovering) reloadEverything();
      if (!events.length && page.retry_after) await sleep(page.retry_after * 1000);
      else if (events.length && !page.has_more && feedIsBusy(feed, events)) await sleep(FEED_PACE_MS);
    } catch (err) {
      if (session !== state.session || err.code === 'stale' || err.status === 401) return;
      if (err.code === 'cursor_expired' || err.status === 410) {
        feed.cursor = null;
        feed.expired = true;
      } else {
        await backOff(err, session);
      }
    }
  }
}

// A busy inbox would otherwise poll once per event. While others' events keep coming, a
// short pause after each batch lets the next ones gather into one; a quiet feed (or one
// echoing only this agent's own actions) is left waiting at once, so the first event after
// a lull shows without delay.
function feedIsBusy(feed, events) {
  const now = Date.now();
  for (const event of events) if (!causedByMe(event)) feed.busyTimes.push(now);
  while (feed.busyTimes.length && now - feed.busyTimes[0] >= FEED_BUSY.withinMs) feed.busyTimes.shift();
  feed.busyTimes.splice(0, Math.max(0, feed.busyTimes.length - FEED_BUSY.events));
  return feed.busyTimes.length >= FEED_BUSY.events;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Waits 1, 2, 4 ... 30 s (or the server's Retry-After), counting down in #connection;
// wakeFeed() cuts the wait short when another call shows the server is back.
function backOff(err, session) {
  const feed = state.feed;
  const offline = err instanceof ApiError && (err.network || err.code === 'aborted');
  // (Only while unreachable may another call's success cut the wait short: a feed that
  // answers 500 must not be asked again each time some other call works.)
  feed.offline = offline;
  let left = err.status === 429 && err.retryAfter ? err.retryAfter : BACKOFF[Math.min(feed.failures, BACKOFF.length - 1)];
  feed.failures += 1;
  const reason = offline ? OFFLINE_TEXT : `Live updates paused: the server answered ${err.status || 'oddly'}.`;
  return new Promise((resolve) => {
    const render = () => renderConnection(reason, left > 0 ? `Retrying in ${left} s…` : 'Retrying now…');
    const finish = () => {
      clearInterval(timer);
      if (feed.wake === finish) feed.wake = null;
      resolve();
    };
    const timer = setInterval(() => {
      left -= 1;
      if (session === state.session) render();
      if (left <= 0 || session !== state.session) finish();
    }, 1000);
    feed.wake = finish;
    render();
  });
}

// Each event becomes the least work that shows it: one throttled refresh of the counts and
// list for the whole batch, and for the open chat only the part the event says changed,
// fetched after the chat's own cursors (the event says *that* it changed; the fetch makes
// sure nothing in between is missed).
function handleEvents(events) {
  const open = state.open;
  let listChanged = false;
  let customerMessages = 0;
  for (const event of events) {
    const data = event.data || {};
    const chat = data.chat || {};
    const changes = changesList(event);
    listChanged = listChanged || changes;
    if (open && chat.chatId === open.id) noteOpenChatEvent(open, event);
    else if (open && changes && chat.customer && chat.customer.email === open.customerEmail) state.customerStale = true;
    if (event.type === 'message.created' && data.message && data.message.sender === 'user') {
      if (customerMessages < 3) notifyDesktop(chat, data.message);
      customerMessages += 1;
    }
  }
  if (customerMessages && document.hidden) beep();
  if (listChanged) scheduleRefresh();
  if (open && open === state.open && hasNeeds(open)) syncOpenChat();
}

// Notes and the customer's read mark change no count and no row (neither touches the
// chat's activity time); an agent's read mark changes the unread badges, the rest the rows.
function changesList(event) {
  if (event.type === 'note.created') return false;
  if (event.type === 'chat.read') return !(event.data && event.data.by && event.data.by.type === 'customer');
  return true;
}

function byMe(data) {
  const by = data.by || {};
  return by.type === 'agent' && Boolean(state.me) && by.name === state.me.name;
}

// The signed-in agent's own reply, note, read mark or action, coming back as an event.
function causedByMe(event) {
  const data = event.data || {};
  const agent = (data.message && data.message.agent) || (data.note && data.note.agent) || null;
  if (agent) return Boolean(state.me) && agent.name === state.me.name;
  return byMe(data);
}

// What an event on the open chat asks it to fetch; nothing when the page already has it
// (its own sends, notes, read marks and actions come back as events too).
function noteOpenChatEvent(open, event) {
  const data = event.data || {};
  const chat = open.chat || {};
  switch (event.type) {
    case 'message.created':
      if (data.message) wantMessagesUpTo(open, Number(data.message.seq) || Infinity);
      break;
    case 'note.created':
      if (!data.note || !open.notes.some((note) => note.noteId === data.note.noteId)) open.need.notes = true;
      break;
    case 'chat.read':
      // Nothing on screen shows read marks; an agent's (ours or another's) only means a
      // /read up to there would move nothing.
      if (data.by && data.by.type === 'agent') open.readSeq = Math.max(open.readSeq, Number(data.read_seq) || 0);
      break;
    case 'chat.closed':
    case 'chat.reopened':
    case 'chat.assigned': {
      // A detail fetch on its way may have been answered before this change: fetch again.
      if (open.detailBusy) {
        open.need.detail = true;
        break;
      }
      // Our own action answers with the new state itself (and may still be on its way).
      if (byMe(data) && open.busy) break;
      const assignee = data.assignee ? data.assignee.name : null;
      const current = chat.assignee ? chat.assignee.name : null;
      const same = event.type === 'chat.assigned' ? assignee === current : (data.chat || {}).status === chat.status;
      if (!same) open.need.detail = true;
      break;
    }
    default:
      wantEverything(open);
  }
}

// The first start, a 410 and a recovery come here: counts, list and the open chat, all of it.
function reloadEverything() {
  state.customerStale = true;
  const jobs = [loadBasics(), refreshNow()];
  if (state.open) {
    // (No reset on a 410: messages are kept by seq and notes by id, so fetching after the
    // cursors the chat has is complete, and the agent keeps their place in it.)
    wantEverything(state.open);
    jobs.push(syncOpenChat());
  }
  state.feed.expired = false;
  return Promise.allSettled(jobs);
}

// Who is signed in, the agents to assign to, the saved replies: each loaded until it works.
async function loadBasics() {
  const jobs = [];
  if (!state.me) {
    jobs.push(api('/me').then((me) => {
      state.me = me;
      setText($('me'), `Signed in as ${agentLabel(me)}`);
    }));
  }
  if (!state.agents) jobs.push(api('/agents').then((data) => { state.agents = data.agents || []; }));
  if (!state.replies) jobs.push(loadReplies());
  for (const result of await Promise.allSettled(jobs)) if (result.status === 'rejected') report(result.reason);
  if (state.open) renderChatHeader(state.open);
}
