// tollgate console: live updates and small conveniences. No framework, no
// build step; the pages work without it (they just do not update by themselves).
"use strict";

(function () {
  // Arriving from another site, a SameSite=Strict cookie is not sent; one
  // reload from this page is same-site and carries it.
  var signedOut = document.getElementById("signed-out");
  if (signedOut && signedOut.dataset.renavigate === "1") {
    var u = new URL(window.location.href);
    u.searchParams.set("again", "1");
    window.location.replace(u.toString());
    return;
  }

  // Freeze asks first.
  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    if (f && f.dataset && f.dataset.confirm && !window.confirm(f.dataset.confirm)) {
      ev.preventDefault();
    }
  });

  // Live updates: the server sends "change" on every change of the ledger
  // (from any tollgate process); the page fetches its live part again.
  var live = document.body.dataset.live;
  if (!live || !window.EventSource) {
    return;
  }
  var target = document.getElementById(live.indexOf("/live") > 0 ? "decision" : "requests");
  var state = document.getElementById("live-state");
  var busy = false, again = false;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(live, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        // Don't replace a form someone is typing into.
        var typing = target && target.contains(document.activeElement) && document.activeElement.tagName === "TEXTAREA" && document.activeElement.value !== "";
        if (html !== null && target && !typing) { target.innerHTML = html; }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  var es = new EventSource("/console/events");
  es.addEventListener("open", function () { if (state) { state.textContent = "live"; state.className = "live-state on"; } });
  es.addEventListener("error", function () { if (state) { state.textContent = "reconnecting…"; state.className = "live-state"; } });
  es.addEventListener("change", refresh);
  es.addEventListener("signedout", function () { es.close(); window.location.reload(); });
})();
