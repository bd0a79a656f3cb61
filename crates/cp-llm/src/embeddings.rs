//! The OpenAI-compatible embeddings format: `{model, input: [..]}` answered by
//! `{data: [{index, embedding: [..]}], usage: {prompt_tokens}}`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Embeddings, LlmError, ModelConfig, openai};

/// Most dimensions a vector may have: the largest models give 4,096.
const MAX_DIMENSIONS: usize = 16_384;

pub(crate) fn request(config: &ModelConfig, inputs: &[String]) -> (String, Value, Vec<(&'static str, String)>) {
    let body = json!({"model": config.model, "input": inputs, "encoding_format": "float"});
    (openai::endpoint(config, "embeddings"), body, openai::bearer(config))
}

/// The whole body of a success answer, at most `most` bytes, each chunk within `idle`.
pub(crate) async fn body(mut resp: reqwest::Response, idle: Duration, most: usize) -> Result<Vec<u8>, LlmError> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(idle, resp.chunk()).await {
            Err(_) => return Err(LlmError::Timeout(idle)),
            Ok(Err(e)) => return Err(LlmError::Network(e.to_string())),
            Ok(Ok(None)) => return Ok(out),
            Ok(Ok(Some(chunk))) => {
                if out.len() + chunk.len() > most {
                    return Err(LlmError::Protocol(format!("the answer is larger than {most} bytes")));
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Datum>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Datum {
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
}

/// The vectors of `body` in the inputs' order: one per input, all of one size, finite.
pub(crate) fn read(body: &[u8], inputs: usize) -> Result<Embeddings, LlmError> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| LlmError::Protocol(format!("the embeddings answer does not parse: {e}")))?;
    if answer.data.len() != inputs {
        return Err(LlmError::Protocol(format!(
            "{} embeddings for {inputs} inputs",
            answer.data.len()
        )));
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for (i, d) in answer.data.into_iter().enumerate() {
        let at = d.index.unwrap_or(i);
        let slot = vectors
            .get_mut(at)
            .ok_or_else(|| LlmError::Protocol(format!("embedding index {at} is out of range")))?;
        if slot.replace(d.embedding).is_some() {
            return Err(LlmError::Protocol(format!("two embeddings for input {at}")));
        }
    }
    let vectors: Vec<Vec<f32>> = vectors.into_iter().flatten().collect();
    let dims = vectors.first().map_or(0, Vec::len);
    if vectors.len() != inputs || dims == 0 || dims > MAX_DIMENSIONS {
        return Err(LlmError::Protocol(format!(
            "embeddings must have 1 to {MAX_DIMENSIONS} dimensions, one per input"
        )));
    }
    if vectors
        .iter()
        .any(|v| v.len() != dims || v.iter().any(|x| !x.is_finite()))
    {
        return Err(LlmError::Protocol(
            "embeddings of different sizes, or not finite".into(),
        ));
    }
    Ok(Embeddings {
        vectors,
        prompt_tokens: answer.usage.map_or(0, |u| u.prompt_tokens),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_in_input_order_and_bad_answers_are_refused() {
        let body = br#"{"data":[{"index":1,"embedding":[0.0,1.0]},{"index":0,"embedding":[1.0,0.0]}],"usage":{"prompt_tokens":7}}"#;
        let e = read(body, 2).unwrap();
        assert_eq!(e.vectors, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(e.prompt_tokens, 7);
        for bad in [
            &br#"{"data":[{"index":0,"embedding":[1.0]}]}"#[..],
            br#"{"data":[{"index":0,"embedding":[1.0]},{"index":0,"embedding":[1.0]}]}"#,
            br#"{"data":[{"index":0,"embedding":[1.0]},{"index":5,"embedding":[1.0]}]}"#,
            br#"{"data":[{"index":0,"embedding":[1.0]},{"index":1,"embedding":[1.0,2.0]}]}"#,
            br#"{"data":[{"index":0,"embedding":[]},{"index":1,"embedding":[]}]}"#,
            br#"{"data":"x"}"#,
        ] {
            assert!(
                matches!(read(bad, 2), Err(LlmError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
