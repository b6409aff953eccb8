// The REST client: the bearer token from the session, JSON errors as ApiError, the event stream
// (EventSource, with ?access_token= since it cannot send headers), and files with progress.

const TOKEN_KEY = "cadpipe.token";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

let onUnauthorized = () => {};

/** Called with the server's message whenever the API answers 401. */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  if (session.token) h.Authorization = `Bearer ${session.token}`;
  return h;
}

async function failure(response) {
  let body = null;
  let message = `${response.status} ${response.statusText}`;
  try {
    body = await response.json();
    if (body && body.message) message = body.message;
  } catch {
    // not JSON: keep the status line
  }
  const error = new ApiError(response.status, message, body);
  if (response.status === 401) onUnauthorized(message);
  return error;
}

export async function request(method, path, body, extraHeaders) {
  let response;
  try {
    response = await fetch(`/api${path}`, {
      method,
      headers: headers(body === undefined ? extraHeaders : { "Content-Type": "application/json", ...extraHeaders }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, `the gateway did not answer (${error.message})`, null);
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

export const get = (path) => request("GET", path);
export const post = (path, body, extraHeaders) => request("POST", path, body, extraHeaders);

export const p = (project) => `/projects/${encodeURIComponent(project)}`;

/** The bytes of one output file, through the gateway; onProgress(loaded, total). */
export async function fetchFile(project, format, version, onProgress) {
  const response = await fetch(`/api${p(project)}/files/${format}?version=${version}`, { headers: headers() });
  if (!response.ok) throw await failure(response);
  const total = Number(response.headers.get("Content-Length") || 0);
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    if (onProgress) onProgress(loaded, total);
  }
  const bytes = new Uint8Array(loaded);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes.buffer;
}

/** The project's event stream: onStatus(ProjectStatus) for each event; returns close(). */
export function watch(project, onStatus, onTrouble) {
  const url = `/api${p(project)}/events?access_token=${encodeURIComponent(session.token || "")}`;
  const source = new EventSource(url);
  source.onmessage = (event) => {
    try {
      onStatus(JSON.parse(event.data));
    } catch (error) {
      console.warn("unreadable event", error);
    }
  };
  source.addEventListener("error", (event) => {
    if (event.data) {
      // an `event: error` frame from the gateway: the backend failed
      onTrouble(JSON.parse(event.data).message || "the event stream failed");
      return;
    }
    // closed or refused: the browser reconnects by itself; tell the page to check the token
    onTrouble(null);
  });
  return () => source.close();
}
