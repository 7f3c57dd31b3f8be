// The documents page: drag and drop onto the dropzone, and the upload's own byte progress.
// htmx swaps the upload panel after every upload, so every listener is delegated from document.
(function () {
  "use strict";

  function dropzoneOf(target) {
    return target instanceof Element ? target.closest("[data-dropzone]") : null;
  }

  function hasFiles(event) {
    return Boolean(event.dataTransfer) && Array.from(event.dataTransfer.types || []).includes("Files");
  }

  function showChosen(zone) {
    const input = zone.querySelector("input[type=file]");
    const out = zone.querySelector("[data-chosen]");
    if (!input || !out) return;
    const names = Array.from(input.files || []).map((file) => file.name);
    out.textContent = names.length ? names.length + " chosen: " + names.join(", ") : "";
  }

  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    // Outside the dropzone too: a file dropped elsewhere would make the browser open it and leave the page.
    event.preventDefault();
    const zone = dropzoneOf(event.target);
    if (zone) {
      zone.classList.add("over");
      event.dataTransfer.dropEffect = "copy";
    } else {
      event.dataTransfer.dropEffect = "none";
    }
  });

  document.addEventListener("dragleave", (event) => {
    const zone = dropzoneOf(event.target);
    if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("over");
  });

  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    const zone = dropzoneOf(event.target);
    if (!zone) return;
    zone.classList.remove("over");
    const input = zone.querySelector("input[type=file]");
    if (!input) return;
    // Add to what was already chosen rather than replace it, so several drops make one batch.
    const merged = new DataTransfer();
    for (const file of Array.from(input.files || [])) merged.items.add(file);
    for (const file of Array.from(event.dataTransfer.files)) merged.items.add(file);
    input.files = merged.files;
    showChosen(zone);
  });

  document.addEventListener("change", (event) => {
    const zone = dropzoneOf(event.target);
    if (zone && event.target.matches("input[type=file]")) showChosen(zone);
  });

  function uploadForm(event) {
    return event.target instanceof Element && event.target.matches("[data-upload-form]") ? event.target : null;
  }

  document.addEventListener("htmx:beforeRequest", (event) => {
    const form = uploadForm(event);
    if (!form) return;
    form.dataset.sent = "";
    const bar = form.querySelector("[data-upload-progress]");
    bar.value = 0;
    bar.hidden = false;
    form.querySelector("[data-upload-status]").textContent = "Uploading…";
    form.querySelector("[data-upload-button]").disabled = true;
  });

  // htmx reports the request body going out and then the response coming back under the same
  // event name; the first time everything is sent, the rest is the server storing the files.
  document.addEventListener("htmx:xhr:progress", (event) => {
    const form = uploadForm(event);
    if (!form || form.dataset.sent || !event.detail.lengthComputable || !event.detail.total) return;
    const percent = Math.round((100 * event.detail.loaded) / event.detail.total);
    form.querySelector("[data-upload-progress]").value = percent;
    const status = form.querySelector("[data-upload-status]");
    if (event.detail.loaded >= event.detail.total) {
      form.dataset.sent = "1";
      status.textContent = "Uploaded; storing the files…";
    } else {
      status.textContent = "Uploading… " + percent + "%";
    }
  });

  // The server answers a refused upload (413, 400) with the panel and its message: show it.
  document.addEventListener("htmx:beforeSwap", (event) => {
    if (!uploadForm(event)) return;
    if ([400, 413].includes(event.detail.xhr.status)) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("htmx:afterRequest", (event) => {
    const form = uploadForm(event);
    if (!form || !form.isConnected || event.detail.successful) return;
    // Still on the page, so nothing was swapped in: the request failed on the way.
    form.querySelector("[data-upload-button]").disabled = false;
    form.querySelector("[data-upload-progress]").hidden = true;
    form.querySelector("[data-upload-status]").textContent =
      "The upload did not reach the server (" + (event.detail.xhr.status || "network error") + "). Try again.";
  });
})();
