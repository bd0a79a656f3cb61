//! Server-sent events read from a streaming response, with an idle timeout between chunks.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::LlmError;

/// One event: its `event:` name (Anthropic names them; OpenAI does not) and its data.
#[derive(Debug)]
pub(crate) struct Event {
    pub name: Option<String>,
    pub data: String,
}

type Chunks = Pin<Box<dyn Stream<Item = Result<Vec<u8>, reqwest::Error>> + Send>>;

pub(crate) struct Events {
    chunks: Chunks,
    buf: Vec<u8>,
    idle: Duration,
    ended: bool,
    /// Bytes read so far, and the most a response may have.
    read: usize,
    most: usize,
}

impl Events {
    pub fn new(resp: reqwest::Response, idle: Duration, most: usize) -> Events {
        Events {
            chunks: Box::pin(resp.bytes_stream().map(|r| r.map(|b| b.to_vec()))),
            buf: Vec::new(),
            idle,
            ended: false,
            read: 0,
            most,
        }
    }

    /// The next event; `None` when the stream ends.
    pub async fn next(&mut self) -> Result<Option<Event>, LlmError> {
        loop {
            if let Some(event) = self.take_event() {
                if event.data.is_empty() && event.name.is_none() {
                    continue;
                }
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout(self.idle, self.chunks.next()).await {
                Err(_) => return Err(LlmError::Timeout(self.idle)),
                Ok(None) => {
                    // A last event without its blank line still counts.
                    self.ended = true;
                    if !self.buf.iter().all(u8::is_ascii_whitespace) {
                        self.buf.extend_from_slice(b"\n\n");
                    }
                }
                Ok(Some(Err(e))) => return Err(LlmError::Network(e.to_string())),
                Ok(Some(Ok(chunk))) => {
                    self.read += chunk.len();
                    if self.read > self.most {
                        return Err(LlmError::Protocol(format!(
                            "the answer is larger than {} bytes",
                            self.most
                        )));
                    }
                    self.buf.extend(chunk.into_iter().filter(|b| *b != b'\r'))
                }
            }
        }
    }

    /// Cuts one complete event (up to a blank line) off the buffer.
    fn take_event(&mut self) -> Option<Event> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = self.buf.drain(..end + 2).collect();
        let text = String::from_utf8_lossy(&block[..end]);
        let mut event = Event {
            name: None,
            data: String::new(),
        };
        for line in text.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.name = Some(value.to_string()),
                "data" => {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                }
                _ => {}
            }
        }
        Some(event)
    }
}
