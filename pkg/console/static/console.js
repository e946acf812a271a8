// dicomgw console: the only script. It refreshes the page it is on (the
// overview, the associations) every data-refresh seconds, by fetching the
// same URL and replacing <main>; everything else works without it. A
// session that expired sends the login page: then the whole page goes
// there.
(function () {
  "use strict";
  var every = parseInt(document.body.getAttribute("data-refresh"), 10);
  if (!every || every < 1) {
    return;
  }
  function refresh() {
    // Marked as a refresh: it does not keep the session alive (a forgotten
    // tab ends its session after the idle timeout).
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store", redirect: "follow", headers: { "X-Console-Refresh": "1" } })
      .then(function (resp) {
        if (!resp.ok || resp.redirected) {
          window.location.reload();
          return null;
        }
        return resp.text();
      })
      .then(function (text) {
        if (text === null) {
          return;
        }
        var doc = new DOMParser().parseFromString(text, "text/html");
        var next = doc.getElementById("main");
        var cur = document.getElementById("main");
        if (!next || !cur || next.getAttribute("data-page") !== cur.getAttribute("data-page")) {
          window.location.reload();
          return;
        }
        cur.replaceWith(next);
        document.dispatchEvent(new CustomEvent("console:refreshed"));
      })
      .catch(function () { /* the gateway is restarting: try again next time */ })
      .finally(function () { window.setTimeout(refresh, every * 1000); });
  }
  window.setTimeout(refresh, every * 1000);
})();
