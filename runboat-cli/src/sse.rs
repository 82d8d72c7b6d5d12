//! An incremental parser of server-sent events (the `text/event-stream`
//! format of the WHATWG HTML standard), fed with bytes as they arrive.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, `message` when absent.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// Parser state: bytes of an incomplete line, fields of the event being
/// read.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next one
    /// belongs to the same line ending.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds `bytes`, returning the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut events),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut events);
                }
                _ => self.line.push(b),
            }
        }
        events
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&line);
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                events.push(SseEvent {
                    event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                    data,
                    id: self.id.clone(),
                });
            }
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return; // A comment (keep-alive).
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_messages_named_events_and_comments() {
        let mut p = SseParser::new();
        let input = b": keep-alive\n\ndata: {\"a\":1}\n\nevent: resync\ndata: x\ndata:y\n\n";
        let events = p.feed(input);
        assert_eq!(
            events,
            vec![
                SseEvent { event: "message".into(), data: "{\"a\":1}".into(), id: None },
                SseEvent { event: "resync".into(), data: "x\ny".into(), id: None },
            ]
        );
    }

    #[test]
    fn handles_crlf_split_across_chunks() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: a\r").is_empty());
        assert!(p.feed(b"\n\r").len() == 1);
        assert!(p.feed(b"\ndata: b\r\n\r\n").len() == 1);
    }

    #[test]
    fn incomplete_event_is_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: half").is_empty());
        assert_eq!(p.feed(b"\n\n")[0].data, "half");
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_the_events(
            datas in proptest::collection::vec("[ -~]{0,30}", 0..6),
            cut in proptest::collection::vec(0usize..200, 0..8),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut text = String::new();
            for d in &datas {
                text.push_str(&format!(":c{nl}data: {d}{nl}{nl}"));
            }
            let bytes = text.as_bytes();
            let mut whole = SseParser::new();
            let expected = whole.feed(bytes);
            let mut points: Vec<usize> = cut.into_iter().map(|c| c.min(bytes.len())).collect();
            points.sort_unstable();
            let mut chunked = SseParser::new();
            let mut got = Vec::new();
            let mut start = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                got.extend(chunked.feed(&bytes[start..p]));
                start = p;
            }
            prop_assert_eq!(&got, &expected);
            let data: Vec<String> = expected.iter().map(|e| e.data.clone()).collect();
            // A `data:` line whose value begins with a space loses one space.
            let want: Vec<String> = datas.clone();
            prop_assert_eq!(data, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut p = SseParser::new();
            let _ = p.feed(&bytes);
        }
    }
}
