// The dashboard: a hash router over the views, the sign-in form, and the alert line.
import { ApiError, api, token } from './api.js';
import { byId, h, replace } from './dom.js';
import { buildersView, buildsView, buildView, statusView } from './views.js';

const main = byId('main');
const alertLine = byId('alert');
const nav = byId('nav');

function showAlert(message) {
  alertLine.textContent = message;
  alertLine.hidden = !message;
}

/** What every view does with an error: a rejected token sends the user back to sign in. */
function fail(err) {
  if (err?.name === 'AbortError') return;
  if (err instanceof ApiError && err.status === 401) {
    token.clear();
    route(`Signed out: ${err.message}`);
    return;
  }
  showAlert(errorText(err));
}

function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}

function loginView(root, message) {
  nav.hidden = true;
  const input = h('input', {
    type: 'password',
    name: 'token',
    id: 'token',
    autocomplete: 'off',
    required: true,
    placeholder: 'API token',
  });
  const error = h('p', { class: 'error', id: 'login-error', role: 'alert' }, message ?? '');
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    { class: 'login', id: 'login' },
    h('h1', {}, 'Sign in'),
    h('label', { for: 'token' }, "API token of your project, or the operator's token"),
    input,
    submit,
    error,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    error.textContent = '';
    const value = input.value.trim();
    try {
      // Checked before it is kept: a wrong token is an error here, not on the next page.
      const role = await roleOf(value);
      token.set(value, role);
      // A new hash routes by itself (hashchange); the same one needs a nudge.
      if (role === 'operator' && location.hash !== '#/status') location.hash = '#/status';
      else if (location.hash.startsWith('#/')) route();
      else location.hash = '#/builds';
    } catch (err) {
      error.textContent =
        err instanceof ApiError && err.status === 401 ? `Not signed in: ${err.message}` : errorText(err);
    } finally {
      submit.disabled = false;
    }
  });
  replace(root, form);
  input.focus();
  return () => {};
}

/** A project's token reads its builds; else the operator's reads the operator's stats; else the project's refusal. */
async function roleOf(value) {
  try {
    await api('/v1/builds?limit=1', {}, value);
    return 'project';
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) throw err;
    try {
      await api('/v1/admin/stats?hours=1', {}, value);
      return 'operator';
    } catch {
      throw err;
    }
  }
}

let cleanup = () => {};

/**
 * Shows the view the location's hash names (`#/builds?status=failed`, `#/builds/<id>`, `#/builders`,
 * `#/status`); the operator has the status page only.
 */
function route(message) {
  cleanup();
  showAlert('');
  if (!token.get()) {
    cleanup = loginView(main, message);
    return;
  }
  nav.hidden = false;
  const operator = token.role() === 'operator';
  // Builds and builders are a project's; the operator has the status of all of them.
  for (const link of nav.querySelectorAll('[data-project-only]')) link.toggleAttribute('hidden', operator);
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(query ?? '');
  const ctx = { fail, showAlert };
  if (operator) {
    cleanup = statusView(main, ctx, { operator });
    return;
  }
  const build = /^\/builds\/([0-9A-Za-z]{1,64})$/.exec(path ?? '');
  if (build) cleanup = buildView(main, build[1], ctx);
  else if (path === '/builders') cleanup = buildersView(main, ctx);
  else if (path === '/status') cleanup = statusView(main, ctx);
  else cleanup = buildsView(main, params, ctx);
}

byId('sign-out').addEventListener('click', () => {
  token.clear();
  route('Signed out.');
});
window.addEventListener('hashchange', () => route());
route();
