//! What the server and a sandbox child say to each other: frames of a little-endian `u32`
//! length followed by that many bytes of JSON, one request answered by one reply.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{CompileError, Verdict};

/// The child's first line on stdout: the parent skips anything before it (a test harness
/// prints its own lines first) and knows the executable speaks this protocol.
pub(crate) const MAGIC: &[u8] = b"kcp-policy-sandbox/1\n";

/// Largest frame either side accepts: a policy is at most a few hundred KiB.
pub(crate) const MAX_FRAME: usize = 16 << 20;

/// A policy of a decision, as the parent sends it: the content only when the child may not
/// have this version yet.
#[derive(Serialize)]
pub(crate) struct PolicyRef<'a> {
    pub id: &'a str,
    pub version: i64,
    pub content: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) enum Request<'a> {
    Compile {
        content: &'a str,
    },
    Evaluate {
        policies: &'a [PolicyRef<'a>],
        input: &'a serde_json::Value,
        limit_us: u64,
    },
}

/// [`PolicyRef`] as the child reads it.
#[derive(Deserialize)]
pub(crate) struct ChildPolicy {
    pub id: String,
    pub version: i64,
    pub content: Option<String>,
}

/// [`Request`] as the child reads it; the input goes straight into the evaluator's values.
#[derive(Deserialize)]
pub(crate) enum ChildRequest {
    Compile {
        content: String,
    },
    Evaluate {
        policies: Vec<ChildPolicy>,
        input: regorus::Value,
        limit_us: u64,
    },
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Reply {
    Compiled {
        package: String,
    },
    Refused(CompileError),
    /// One per policy of the request, in its order.
    Verdicts(Vec<Result<Verdict, String>>),
    /// A policy was sent without content and the child does not hold that version.
    Missing,
    /// The request could not be read.
    Malformed(String),
}

pub(crate) fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = frame_len(len)?;
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(true)
}

/// Serializes `message` into `buf` as one whole frame (length and body), so it goes out in
/// one write: a reader woken by the length alone would sleep again for the body.
pub(crate) fn encode_frame(buf: &mut Vec<u8>, message: &impl Serialize) -> io::Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *buf, message).map_err(io::Error::other)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

pub(crate) async fn read_frame_async(r: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> io::Result<()> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = frame_len(len)?;
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(())
}

fn frame_len(len: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    Ok(len)
}
