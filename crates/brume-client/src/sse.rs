//! A server-sent events (`text/event-stream`) parser, as the WHATWG HTML
//! spec defines it: lines end in LF, CRLF or CR (even split across
//! chunks), `data` lines of one event are joined with `\n`, lines starting
//! with `:` are comments (keep-alives), an event is dispatched at a blank
//! line, and an event without data is not dispatched at all.

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last event id seen on the stream so far (`id:`), if any.
    pub id: Option<String>,
    /// A `retry:` reconnection delay in milliseconds, if one was sent.
    pub retry_ms: Option<u64>,
}

/// Incremental parser: feed it chunks as they arrive, collect the events.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, incomplete line.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF at the start of the next one
    /// belongs to the same line break.
    skip_lf: bool,
    /// Whether the byte-order mark check has been done.
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    last_id: Option<String>,
    retry_ms: Option<u64>,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds one chunk; returns the events it completed.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.started && !chunk.is_empty() {
            // A UTF-8 BOM may start the stream; it can be split too, but
            // only a first chunk shorter than 3 bytes could split it.
            let bom = b"\xEF\xBB\xBF";
            let have = self.line.len() + chunk.len();
            if have < bom.len() && bom.starts_with(&[&self.line[..], chunk].concat()) {
                self.line.extend_from_slice(chunk);
                return out;
            }
            self.started = true;
            let joined = [&self.line[..], chunk].concat();
            if let Some(rest) = joined.strip_prefix(bom) {
                self.line.clear();
                return self.feed(rest);
            }
        }
        if self.skip_lf {
            self.skip_lf = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&chunk[..pos]);
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut out);
            if chunk[pos] == b'\r' {
                match chunk.get(pos + 1) {
                    Some(b'\n') => chunk = &chunk[pos + 2..],
                    Some(_) => chunk = &chunk[pos + 1..],
                    None => {
                        self.skip_lf = true;
                        chunk = &[];
                    }
                }
            } else {
                chunk = &chunk[pos + 1..];
            }
        }
        self.line.extend_from_slice(chunk);
        out
    }

    /// The id of the last `id:` line seen (for `Last-Event-ID`).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // comment / keep-alive
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {} // unknown fields are ignored
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take().filter(|e| !e.is_empty());
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
            retry_ms: self.retry_ms,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            out.extend(p.feed(chunk));
        }
        out
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn events_survive_any_chunk_boundary() {
        let input = "event: queued\nid: 0\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: running\r\nid: 1\r\ndata: {\"b\":2}\r\n\r\nid: 2\rdata: x\r\rdata:y\n\n";
        let whole = parse_in_pieces(input.as_bytes(), input.len());
        assert_eq!(data(&whole), ["{\"a\":1}", "{\"b\":2}", "x", "y"]);
        assert_eq!(whole[0].event.as_deref(), Some("queued"));
        assert_eq!(whole[1].event.as_deref(), Some("running"));
        assert_eq!(whole[2].event, None);
        assert_eq!(whole[2].id.as_deref(), Some("2"));
        for piece in 1..input.len() {
            assert_eq!(parse_in_pieces(input.as_bytes(), piece), whole, "{piece}");
        }
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let ev = parse_in_pieces(b"data: one\ndata:two\ndata\ndata:  three\n\n", 1000);
        assert_eq!(data(&ev), ["one\ntwo\n\n three"]);
    }

    #[test]
    fn comments_and_events_without_data_are_not_dispatched() {
        let ev = parse_in_pieces(
            b": hello\n\n:\n\nevent: ping\n\nretry: 1500\nfoo: bar\ndata: z\n\n",
            3,
        );
        assert_eq!(data(&ev), ["z"]);
        // The `event: ping` without data did not leak into the next event.
        assert_eq!(ev[0].event, None);
        assert_eq!(ev[0].retry_ms, Some(1500));
    }

    #[test]
    fn incomplete_trailing_event_is_held_back() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: partial\n").is_empty());
        assert_eq!(data(&p.feed(b"\n")), ["partial"]);
    }

    #[test]
    fn a_leading_bom_is_skipped_even_when_split() {
        let input = b"\xEF\xBB\xBFdata: a\n\n";
        for piece in 1..input.len() {
            assert_eq!(data(&parse_in_pieces(input, piece)), ["a"], "{piece}");
        }
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_break() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: a\r").is_empty());
        // If the LF were a second line break, this would dispatch now.
        assert!(p.feed(b"\n").is_empty());
        assert_eq!(data(&p.feed(b"\r\n")), ["a"]);
    }
}
