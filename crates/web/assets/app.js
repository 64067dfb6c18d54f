// The web inbox's only script: refreshes the conversation list and the open conversation
// in the background, and fills in "reply to". It inserts only HTML the server rendered (and
// escaped); customer text never becomes markup here.
"use strict";
(function () {
  function poll(el) {
    var url = el.getAttribute("data-poll");
    var etag = el.getAttribute("data-etag") || "";
    var secs = parseInt(el.getAttribute("data-poll-secs") || "4", 10);
    var busy = false;
    function tick() {
      if (busy || document.hidden) return;
      busy = true;
      var headers = { "x-relay-poll": "1" };
      if (etag) headers["if-none-match"] = etag;
      fetch(url, { headers: headers, credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.status === 401) { window.location.assign("/login"); return null; }
          if (r.status !== 200) return null;
          etag = r.headers.get("etag") || "";
          return r.text();
        })
        .then(function (html) {
          if (html === null || html === undefined) return;
          var atEnd = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
          el.innerHTML = html;
          if (el.getAttribute("data-scroll") === "end" && atEnd) el.scrollTop = el.scrollHeight;
          el.dispatchEvent(new CustomEvent("relay:updated"));
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }
    window.setInterval(tick, Math.max(1, secs) * 1000);
    document.addEventListener("visibilitychange", tick);
  }

  function replyTo() {
    var hidden = document.getElementById("reply_to");
    var box = document.getElementById("replying");
    var label = document.getElementById("replying-to");
    var text = document.getElementById("text");
    if (!hidden || !box || !label) return;
    document.addEventListener("click", function (e) {
      var b = e.target.closest ? e.target.closest("[data-reply-to]") : null;
      if (b) {
        var id = b.getAttribute("data-reply-to");
        var msg = document.getElementById("m-" + id);
        var t = msg ? msg.querySelector(".text") : null;
        hidden.value = id;
        label.textContent = t ? t.textContent.slice(0, 80) : "…";
        box.hidden = false;
        if (text) text.focus();
      }
      if (e.target.id === "reply-cancel") {
        hidden.value = "";
        box.hidden = true;
      }
    });
  }

  function sendOnCtrlEnter() {
    var text = document.getElementById("text");
    if (!text) return;
    text.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && text.form) text.form.requestSubmit();
    });
    // One submit per form: a second click while the first is on its way does nothing.
    text.form.addEventListener("submit", function () {
      var send = document.getElementById("send");
      if (send) window.setTimeout(function () { send.disabled = true; }, 0);
    });
  }

  // While someone writes the answer, the customer sees "typing…" (a read receipt with the
  // typing indicator; at most every 20 s, the server sends it only inside the window).
  function typingIndicator() {
    var text = document.getElementById("text");
    var url = text ? text.getAttribute("data-typing") : null;
    if (!url || !text.form || !text.form.elements.csrf) return;
    var last = 0;
    text.addEventListener("input", function () {
      var now = Date.now();
      if (now - last < 20000 || text.value.trim() === "") return;
      last = now;
      var body = new URLSearchParams();
      body.set("csrf", text.form.elements.csrf.value);
      fetch(url, { method: "POST", body: body, credentials: "same-origin", cache: "no-store" })
        .catch(function () {});
    });
  }

  // Copy buttons (E-Rezept tokens): the text is an attribute the server rendered.
  function copyButtons() {
    document.addEventListener("click", function (e) {
      var b = e.target.closest ? e.target.closest("[data-copy]") : null;
      if (!b || !navigator.clipboard) return;
      navigator.clipboard.writeText(b.getAttribute("data-copy")).then(function () {
        b.classList.add("copied");
      }, function () {});
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    var msgs = document.getElementById("messages");
    if (msgs) msgs.scrollTop = msgs.scrollHeight;
    replyTo();
    sendOnCtrlEnter();
    typingIndicator();
    copyButtons();
  });
})();
