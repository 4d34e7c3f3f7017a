// What every page shares: the signed-in caller, upload limits, the status line.
import { ApiError } from './api.js';

/** What every page may ask: who is signed in, what the role may do, upload limits. */
export const session = {
  me: null,
  settings: { max_import_bytes: 0, import_extensions: [] },
  /** Whether the role may `action` on `kind` (a record kind's path, `audit` or `inbox`). */
  can(kind, action) {
    const actions = (this.me && this.me.can && this.me.can[kind]) || [];
    return actions.includes(action) || actions.includes('*');
  },
};

/** A short message for everyone, screen readers included. */
export function say(message, kind = 'info') {
  const status = document.getElementById('status');
  status.textContent = message || '';
  status.dataset.kind = kind;
}

/** The problem detail of a failed call, or the error's message. */
export function problemText(error) {
  if (error instanceof ApiError) return error.message;
  return (error && error.message) || String(error);
}

