// The console: sign-in, navigation and the hash router. Pages live in pages.js and
// import.js; every one renders with text nodes only (dom.js).
import { get, post, whenUnauthorized } from './api.js';
import { h, replace } from './dom.js';
import { importPage } from './import.js';
import { inboxPage, recordPage, reviewPage, searchPage } from './pages.js';
import { problemText, say, session } from './state.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const signOutButton = document.getElementById('sign-out');

const RETURN_KEY = 'lg.return';

function signInPage(note) {
  nav.hidden = true;
  signOutButton.hidden = true;
  who.textContent = '';
  const message = h('p', { id: 'sign-in-error', class: 'error', role: 'alert' });
  const email = h('input', { id: 'email', name: 'email', type: 'email', autocomplete: 'username', required: true });
  const password = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password' });
  const token = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off' });
  const form = h('form', { class: 'card sign-in', 'aria-labelledby': 'sign-in-title', novalidate: true },
    h('h1', { id: 'sign-in-title' }, 'Sign in'),
    note ? h('p', { class: 'note' }, note) : null,
    h('label', { for: 'email' }, 'Email'), email,
    h('label', { for: 'password' }, 'Password'), password,
    h('details', {}, h('summary', {}, 'Sign in with a token instead'),
      h('label', { for: 'token' }, 'API token'), token),
    message,
    h('button', { type: 'submit', id: 'sign-in' }, 'Sign in'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    message.textContent = '';
    const body = token.value.trim()
      ? { token: token.value.trim() }
      : { email: email.value.trim(), password: password.value };
    try {
      await post('/console/session', body);
      await loadMe();
      const back = sessionStorage.getItem(RETURN_KEY);
      sessionStorage.removeItem(RETURN_KEY);
      go(back && back !== '#/sign-in' ? back : '#/search');
    } catch (error) {
      message.textContent = error.status === 401
        ? 'Wrong email or password (or an unknown token).'
        : problemText(error);
      password.value = '';
      (token.value ? token : password).focus();
    }
  });
  replace(main, form);
  email.focus();
}

async function loadMe() {
  session.me = await get('/v1/auth/me');
  who.textContent = `${session.me.actor} (${session.me.role})`;
  nav.hidden = false;
  signOutButton.hidden = false;
  for (const link of nav.querySelectorAll('a[data-needs]')) {
    const [kind, action] = link.dataset.needs.split(':');
    link.hidden = !session.can(kind, action);
  }
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

let expired = false;
whenUnauthorized(() => {
  // The session ended (expired or revoked): remember where we were, sign in again, come
  // back there. Work on the server (an import) goes on meanwhile.
  if (expired) return;
  expired = true;
  if (location.hash && location.hash !== '#/sign-in') sessionStorage.setItem(RETURN_KEY, location.hash);
  session.me = null;
  signInPage('Your session has ended. Sign in again to continue where you were.');
  setTimeout(() => { expired = false; }, 0);
});

signOutButton.addEventListener('click', async () => {
  try {
    await post('/console/sign-out');
  } catch (error) {
    say(problemText(error), 'error');
  }
  session.me = null;
  sessionStorage.clear();
  location.hash = '#/sign-in';
});

const PAGES = {
  search: searchPage,
  record: recordPage,
  import: importPage,
  review: reviewPage,
  inbox: inboxPage,
};

/** Pages get a fresh main element; a page's timers stop when `alive()` turns false. */
let generation = 0;

async function route() {
  const hash = location.hash || '#/search';
  const [path, query = ''] = hash.slice(1).split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const name = parts[0] || 'search';
  generation += 1;
  const mine = generation;
  say('');
  if (name === 'sign-in') {
    signInPage();
    return;
  }
  if (!session.me) {
    try {
      await loadMe();
    } catch (error) {
      if (error.status !== 401) say(problemText(error), 'error');
      if (location.hash && location.hash !== '#/sign-in') sessionStorage.setItem(RETURN_KEY, location.hash);
      signInPage();
      return;
    }
  }
  for (const link of nav.querySelectorAll('a')) {
    if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const page = PAGES[name];
  main.replaceChildren();
  if (!page) {
    replace(main, h('h1', {}, 'Not found'), h('p', {}, 'There is no such page.'));
    return;
  }
  try {
    await page(main, {
      args: parts.slice(1),
      params: new URLSearchParams(query),
      alive: () => generation === mine,
      go,
    });
    // When the page and all its API calls are done (examples/console_bench.rs reads it).
    performance.mark(`lg:rendered:${name}`);
  } catch (error) {
    if (error.status === 401) return;
    replace(main, h('h1', {}, 'Something went wrong'), h('p', { class: 'error', role: 'alert' }, problemText(error)));
  }
}

async function start() {
  try {
    session.settings = await get('/console/settings.json');
  } catch (error) {
    say(problemText(error), 'error');
  }
  window.addEventListener('hashchange', route);
  await route();
}

start();
