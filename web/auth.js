// Shared by every page: fetch with the API token when the server asks for one (401).
// The token is asked for once and kept in this browser's localStorage.
"use strict";

const TOKEN_KEY = "talkingAvatarToken";

function apiToken() {
  return window.localStorage.getItem(TOKEN_KEY) || "";
}

function withToken(options) {
  const token = apiToken();
  if (!token) return options;
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${token}`);
  return { ...options, headers };
}

// fetch() that retries once with a token typed by the user when the server answers 401.
async function apiFetch(url, options = {}) {
  let response = await fetch(url, withToken(options));
  if (response.status === 401) {
    const token = window.prompt(window.i18n ? window.i18n.t("token.prompt") : "This server needs an API token:");
    if (token) {
      window.localStorage.setItem(TOKEN_KEY, token.trim());
      response = await fetch(url, withToken(options));
    }
  }
  return response;
}

// For URLs a header cannot be attached to (EventSource, viewer links).
function urlWithToken(url) {
  const token = apiToken();
  if (!token) return url;
  const u = new URL(url, window.location.href);
  u.searchParams.set("token", token);
  return u.toString();
}
