// The activity page's live log: Server-Sent Events from the console's own
// endpoint. EventSource reconnects by itself and sends Last-Event-ID, so the
// log resumes where it stopped, with no line lost or repeated.
"use strict";
(function () {
  const log = document.getElementById("log");
  if (!log || !log.dataset.events) {
    return;
  }
  const state = document.getElementById("state");
  const source = new EventSource(log.dataset.events);
  const append = (text) => {
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(document.createTextNode(text));
    if (atEnd) {
      log.scrollTop = log.scrollHeight;
    }
  };
  source.onmessage = (event) => {
    const entry = JSON.parse(event.data);
    append(entry.text || "");
  };
  source.addEventListener("done", (event) => {
    const entry = JSON.parse(event.data);
    append(entry.text || "");
    if (state) {
      state.textContent = entry.state === "cancelled"
        ? "cancelled"
        : (entry.failed ? "failure" : (entry.state || "complete"));
      state.className = "status s-" + state.textContent;
    }
    log.dataset.done = "true";
    source.close();
  });
  source.addEventListener("error", (event) => {
    // An `error` event from the server has data; a dropped connection has
    // none and EventSource retries by itself.
    if (event.data) {
      const problem = JSON.parse(event.data);
      append("\n" + ((problem.error && problem.error.message) || "the log stopped") + "\n");
      source.close();
    }
  });
})();
