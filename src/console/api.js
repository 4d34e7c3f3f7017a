// The JSON API as the console uses it: the session cookie rides along on its own; every
// state-changing request repeats the session's CSRF token in X-CSRF-Token.

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

let onUnauthorized = () => {};

/** What happens when the session is gone (expired, revoked): the app signs in again. */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

function cookie(name) {
  for (const pair of document.cookie.split(';')) {
    const [key, ...rest] = pair.trim().split('=');
    if (key === name) return rest.join('=');
  }
  return '';
}

export function csrf() {
  return cookie('lg_csrf');
}

/** fetch with the CSRF header on unsafe methods; problem+json answers become ApiError. */
export async function request(method, path, { json, form, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf();
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: 'same-origin', signal });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, { detail: `The server could not be reached (${error.message}).` });
  }
  const type = response.headers.get('content-type') || '';
  const data = type.includes('json') ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const problem = data || { detail: `HTTP ${response.status} ${response.statusText}` };
    if (response.status === 401 && path !== '/console/session') onUnauthorized();
    throw new ApiError(response.status, problem);
  }
  return data;
}

export const get = (path, opts) => request('GET', path, opts);
export const post = (path, json, opts = {}) => request('POST', path, { ...opts, json });
