// Noticing a customer while the inbox is not looked at: a desktop notification (once
// allowed) and a short tone (once ticked), both only while the tab is hidden.

import { addressWarning } from './inbox-addresses.js';
import { $, setText } from './inbox-dom.js';
import { openChat } from './inbox-open-chat.js';
import { state } from './inbox-state.js';

const SOUND_KEY = 'supportzen.sound';

// The button says what the browser allows; only while it is undecided does a click ask.
export function renderNotifyToggle() {
  const permission = 'Notification' in window ? Notification.permission : 'unsupported';
  const labels = { granted: 'Notifications on', denied: 'Notifications blocked', unsupported: 'Notifications unavailable' };
  const button = $('notify-toggle');
  setText(button, labels[permission] || 'Enable notifications');
  button.setAttribute('aria-disabled', String(permission !== 'default'));
  button.title = permission === 'denied' ? 'Allow notifications for this site in the browser settings.' : '';
}

export async function onNotifyToggle() {
  if (!('Notification' in window) || Notification.permission !== 'default') return;
  try { await Notification.requestPermission(); } catch (err) { /* an old browser */ }
  renderNotifyToggle();
}

// Only while the tab is hidden: a visible inbox already shows the message.
export function notifyDesktop(chat, message) {
  if (!document.hidden || !('Notification' in window) || Notification.permission !== 'granted') return;
  const text = message.message || (message.image_url ? 'Sent an image' : '');
  try {
    const email = chat.customer && chat.customer.email;
    const warning = addressWarning(email);
    const notification = new Notification(warning ? `${email} (${warning.label})` : email || 'Customer',
      { body: text.slice(0, 160), tag: chat.chatId });
    notification.addEventListener('click', () => {
      window.focus();
      openChat(chat.chatId);
      notification.close();
    });
  } catch (err) { /* some platforms only allow notifications from a service worker */ }
}

// The choice is the browser's to keep (localStorage), not the account's.
export function restoreSoundChoice() {
  try { $('sound-toggle').checked = localStorage.getItem(SOUND_KEY) === 'on'; } catch (err) { /* off */ }
}

// Browsers start audio only after a user gesture: ticking the box is that gesture.
export function onSoundToggle() {
  const on = $('sound-toggle').checked;
  try { localStorage.setItem(SOUND_KEY, on ? 'on' : 'off'); } catch (err) { /* not kept */ }
  if (on) audio();
}

// One audio context for the page, woken again when the browser has suspended it.
function audio() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) return null;
  state.audioContext = state.audioContext || new Context();
  if (state.audioContext.state === 'suspended') state.audioContext.resume().catch(() => {});
  return state.audioContext;
}

export function beep() {
  if (!$('sound-toggle').checked) return;
  try {
    const context = audio();
    if (!context) return;
    const start = context.currentTime;
    const tone = context.createOscillator();
    const gain = context.createGain();
    tone.frequency.value = 880;
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(0.2, start + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.25);
    tone.connect(gain).connect(context.destination);
    tone.start(start);
    tone.stop(start + 0.3);
  } catch (err) { /* no sound is better than a broken page */ }
}
