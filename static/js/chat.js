// The chat page: the composer's keys, answers streamed over server-sent events, the source
// panel, chips that fill the composer, copy, the capability notice and the phone sidebar.
// htmx swaps fragments in and out, so listeners are delegated from document and new content is
// picked up through htmx.onLoad.
(function () {
  "use strict";

  const STAGES = {
    retrieving: "Searching your documents…",
    searching: "Looking for more in your documents…",
    thinking: "Writing…",
    checking: "Checking the answer…",
  };
  const NOTICE_KEY = "groundwork.notice-hidden";

  const streams = new Map(); // message id -> EventSource
  const streamed = new Map(); // message id -> the text shown so far (kept when stopped)

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (error) {
      return "";
    }
  }

  function post(url, data) {
    return fetch(url, {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken(), "HX-Request": "true" },
      body: new URLSearchParams(data),
      credentials: "same-origin",
    });
  }

  function messagesBox() {
    return document.getElementById("messages");
  }

  function nearBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  }

  function scrollToBottom(force) {
    const box = messagesBox();
    if (box && (force || nearBottom(box))) box.scrollTop = box.scrollHeight;
  }

  function composerInput() {
    return document.querySelector("[data-composer] textarea");
  }

  // --- streaming ---------------------------------------------------------------------------

  function replaceMessage(article, html) {
    if (!article.isConnected) return;
    const follow = nearBottom(messagesBox());
    htmx.swap(article, html, { swapStyle: "outerHTML" });
    if (follow) scrollToBottom(true);
  }

  function refreshMessage(article) {
    const url = article.dataset.messageUrl;
    if (url && article.isConnected) htmx.ajax("GET", url, { target: article, swap: "outerHTML" });
  }

  function startStream(article) {
    const id = article.dataset.message;
    if (!article.dataset.streamUrl || streams.has(id)) return;
    const stage = article.querySelector("[data-stage]");
    const text = article.querySelector("[data-stream-text]");
    const evidenceSlot = article.querySelector("[data-evidence-slot]");
    const source = new EventSource(article.dataset.streamUrl);
    streams.set(id, source);
    streamed.set(id, "");
    let finished = false;

    function finish(html) {
      finished = true;
      source.close();
      streams.delete(id);
      replaceMessage(article, html);
    }

    source.addEventListener("stage", (event) => {
      if (stage) stage.textContent = STAGES[event.data] || event.data;
    });
    // What the documents say, before the model has written a word: rendered by the server.
    source.addEventListener("evidence", (event) => {
      if (!evidenceSlot) return;
      const follow = nearBottom(messagesBox());
      htmx.swap(evidenceSlot, event.data, { swapStyle: "innerHTML" });
      if (follow) scrollToBottom(true);
    });
    source.addEventListener("delta", (event) => {
      const piece = JSON.parse(event.data);
      streamed.set(id, streamed.get(id) + piece);
      if (text) {
        const follow = nearBottom(messagesBox());
        text.textContent += piece; // plain text while streaming; the final fragment is rendered
        if (follow) scrollToBottom(true);
      }
    });
    source.addEventListener("done", (event) => finish(event.data));
    source.addEventListener("failed", (event) => finish(event.data));
    source.addEventListener("error", () => {
      if (finished) return;
      // The connection broke (or was refused): stop the browser from reconnecting on its own
      // and show the message as the server has it now, with a retry if it did not finish.
      finished = true;
      source.close();
      streams.delete(id);
      refreshMessage(article);
    });
  }

  function stopStream(article) {
    const id = article.dataset.message;
    const source = streams.get(id);
    if (source) {
      source.close();
      streams.delete(id);
    }
  }

  // A stopped message whose partial text the server has not stored yet shows what was seen.
  function fillStopped(root) {
    root.querySelectorAll("[data-partial-fill]").forEach((bubble) => {
      const article = bubble.closest("[data-message]");
      const text = article ? streamed.get(article.dataset.message) : "";
      if (text) bubble.textContent = text;
    });
  }

  // --- the source panel --------------------------------------------------------------------

  let lastCitation = null;

  function sourcePanel() {
    return document.getElementById("source-panel");
  }

  function openSource(link) {
    const panel = sourcePanel();
    if (!panel) return false;
    lastCitation = link;
    panel.hidden = false;
    panel.innerHTML = '<p class="muted">Opening the source…</p>';
    document.body.classList.add("source-open");
    htmx.ajax("GET", link.getAttribute("href"), { target: panel, swap: "innerHTML" });
    return true;
  }

  function closeSource() {
    const panel = sourcePanel();
    if (!panel || panel.hidden) return;
    panel.hidden = true;
    panel.innerHTML = "";
    document.body.classList.remove("source-open");
    if (lastCitation && lastCitation.isConnected) lastCitation.focus();
  }

  document.addEventListener("htmx:responseError", (event) => {
    const panel = sourcePanel();
    if (!panel || event.detail.target !== panel) return;
    panel.innerHTML =
      '<div class="source"><header class="source-head"><h2>Source not available</h2>' +
      '<button type="button" class="small" data-close-source aria-label="Close the source">✕</button></header>' +
      '<p class="muted">This source is not available to you: it may have been removed, or it is in a collection ' +
      "you cannot read.</p></div>";
  });

  // --- the composer ------------------------------------------------------------------------

  function fillComposer(text) {
    const input = composerInput();
    if (!input) return;
    input.value = text;
    input.focus();
    input.setSelectionRange(text.length, text.length);
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function grow(input) {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 240) + "px";
  }

  document.addEventListener("keydown", (event) => {
    const input = event.target;
    if (event.key === "Escape") closeSource();
    if (!(input instanceof HTMLTextAreaElement) || !input.closest("[data-composer]")) return;
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    const form = input.form;
    const button = form.querySelector("button[type=submit]");
    if (button && button.disabled) return;
    form.requestSubmit();
  });

  document.addEventListener("input", (event) => {
    if (event.target instanceof HTMLTextAreaElement && event.target.closest("[data-composer]")) grow(event.target);
  });

  // --- copy --------------------------------------------------------------------------------

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    // Plain http on a LAN has no clipboard API: fall back to a selection.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function flash(button, label) {
    const before = button.dataset.label || button.textContent;
    button.dataset.label = before;
    button.textContent = label;
    setTimeout(() => {
      button.textContent = before;
    }, 1800);
  }

  // --- the notice --------------------------------------------------------------------------

  function setNotice(hidden) {
    const notice = document.querySelector("[data-notice]");
    const show = document.querySelector('[data-notice-toggle="show"]');
    if (notice) notice.hidden = hidden;
    if (show) show.hidden = !hidden;
    try {
      if (hidden) localStorage.setItem(NOTICE_KEY, "1");
      else localStorage.removeItem(NOTICE_KEY);
    } catch (error) {
      // Storage can be disabled; the session flag still keeps the choice.
    }
  }

  function restoreNotice() {
    const notice = document.querySelector("[data-notice]");
    let remembered = false;
    try {
      remembered = localStorage.getItem(NOTICE_KEY) === "1";
    } catch (error) {
      remembered = false;
    }
    if (notice && !notice.hidden && remembered) {
      setNotice(true);
      // A new session (after logging in again): tell the server too, so the next page comes hidden.
      const form = document.querySelector('[data-notice-toggle="hide"]');
      if (form) post(form.getAttribute("action"), { hidden: "on" });
    }
  }

  // --- clicks ------------------------------------------------------------------------------

  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;

    const cite = target.closest("a.cite");
    if (cite && !event.ctrlKey && !event.metaKey && !event.shiftKey && event.button === 0) {
      if (openSource(cite)) event.preventDefault();
      return;
    }
    if (target.closest("[data-close-source]")) {
      event.preventDefault();
      closeSource();
      return;
    }
    const chip = target.closest("[data-fill]");
    if (chip) {
      fillComposer(chip.dataset.fill); // fills only: the person edits and sends it themselves
      return;
    }
    const useRewrite = target.closest("[data-fill-from]");
    if (useRewrite) {
      const input = document.querySelector(useRewrite.dataset.fillFrom);
      if (input) fillComposer(input.value);
      return;
    }
    const copy = target.closest("[data-copy]");
    if (copy) {
      const source = document.querySelector(copy.dataset.copy);
      if (source) {
        copyText(source.innerText.trim()).then(
          () => flash(copy, "Copied"),
          () => flash(copy, "Copy failed"),
        );
      }
      return;
    }
    const toggle = target.closest("[data-sidebar-toggle]");
    if (toggle) {
      const sidebar = document.getElementById(toggle.getAttribute("aria-controls"));
      const open = !sidebar.classList.contains("open");
      sidebar.classList.toggle("open", open);
      toggle.setAttribute("aria-expanded", String(open));
    }
  });

  // Opening the thumbs-down or flag popover puts the cursor in its first field.
  document.addEventListener(
    "toggle",
    (event) => {
      const details = event.target;
      if (!(details instanceof HTMLDetailsElement) || !details.open || !details.matches(".popover-wrap")) return;
      const field = details.querySelector("textarea, select");
      if (field) field.focus();
    },
    true,
  );

  document.addEventListener("htmx:beforeRequest", (event) => {
    const elt = event.detail.elt;
    if (!(elt instanceof Element)) return;
    if (elt.matches("[data-stop]")) {
      const article = elt.closest("[data-message]");
      if (article) stopStream(article);
    } else if (elt.matches("[data-notice-toggle]")) {
      setNotice(elt.dataset.noticeToggle === "hide");
    }
  });

  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target && event.detail.target.id === "messages") scrollToBottom(true);
    const panel = sourcePanel();
    if (panel && event.detail.target === panel) {
      const mark = panel.querySelector("mark");
      if (mark) mark.scrollIntoView({ block: "center" });
      panel.focus({ preventScroll: true });
    }
  });

  htmx.onLoad((root) => {
    if (!(root instanceof Element)) return;
    if (root.matches("[data-composer]")) {
      // The composer is replaced after each question: keep the cursor in it.
      const input = root.querySelector("textarea");
      if (input) input.focus();
    }
    const articles = root.matches("[data-stream-url]") ? [root] : [];
    articles.push(...root.querySelectorAll("[data-stream-url]"));
    articles.forEach(startStream);
    fillStopped(root);
  });

  function init() {
    restoreNotice();
    scrollToBottom(true);
    const input = composerInput();
    if (input) grow(input);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
