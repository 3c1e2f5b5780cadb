// An incremental Server-Sent Events decoder, as the HTML standard's "event stream
// interpretation" describes it (https://html.spec.whatwg.org/multipage/server-sent-events.html):
//
//     : keep-alive                 a comment: ignored (counted, so a UI can show the wait)
//     data: {"text":"Hel"}         one or more data lines; several are joined with "\n"
//                                  a blank line dispatches the event (type "message")
//     event: done                  names the next event
//     data: {...}
//
// Lines end at CRLF, LF or CR, wherever the network split them (a CR at the end of one read
// and the LF at the start of the next are one line end). Feed it text from a TextDecoder used
// with {stream: true}, which keeps a UTF-8 character split across reads whole. An event that
// the stream never finished with a blank line is dropped, as the standard says.
"use strict";

class SSEDecoder {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.comments = 0;
    this.pendingCR = false;
  }

  /** Decode the next piece of text; returns the events it completed, [{type, data}]. */
  feed(text) {
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.pendingCR = false;
    const input = this.buffer + text;
    const events = [];
    const lineEnd = /\r\n|\r|\n/g;
    let start = 0;
    for (let match; (match = lineEnd.exec(input)) !== null; ) {
      this.line(input.slice(start, match.index), events);
      start = match.index + match[0].length;
      // A CR ending the input may be the first half of a CRLF whose LF comes next time.
      if (match[0] === "\r" && start === input.length) this.pendingCR = true;
    }
    this.buffer = input.slice(start);
    return events;
  }

  line(line, events) {
    if (line === "") {
      if (this.data.length) events.push({ type: this.type || "message", data: this.data.join("\n") });
      this.data = [];
      this.type = "";
      return;
    }
    if (line.startsWith(":")) {
      this.comments += 1;
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    // "id" and "retry" matter only to EventSource's reconnection, which a POST does not do.
  }
}
