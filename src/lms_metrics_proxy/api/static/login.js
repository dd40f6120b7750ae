/*
 * The "token needed" page of the dashboard (STATS_TOKEN is set).
 *
 * The dashboard keeps the token in sessionStorage and removes it from the
 * address, so a reload arrives here without it: send the stored token back
 * once. If this page was reached *with* a token, that token was refused, so
 * forget it (no loop) and let the form ask again.
 */
"use strict";
(function () {
  const TOKEN_KEY = "lms-metrics-proxy.token";
  const url = new URL(window.location.href);
  if (url.searchParams.has("token")) {
    window.sessionStorage.removeItem(TOKEN_KEY);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    return;
  }
  const stored = window.sessionStorage.getItem(TOKEN_KEY);
  if (stored) {
    url.searchParams.set("token", stored);
    window.location.replace(url.toString());
  }
})();
